/**
 * Hook points, declared once: where a model calls a program the client installed, what the
 * program is passed and what it must return (its calling convention), and whether the
 * point's sites are indexed layers or named modules. The runtime's twin is
 * python-runtime/liaison_runtime/hooks.py; docs/protocol.md ("Hook points") documents each
 * convention. `Model` takes its hook-point names, site counts and messages from here, so
 * adding a point is one entry in {@link HOOK_POINTS} (and its twin in the runtime).
 */

/** How a site of a point is named: layer indices, or module names. */
export type HookSites = 'layers' | 'modules';

export interface HookPoint {
  /** The name `model_hook(model, name, program, opts)` takes. */
  readonly name: string;
  /** What the program is passed, in order, with shapes. */
  readonly inputs: readonly string[];
  /** What the program must return, in order, with shapes. */
  readonly outputs: readonly string[];
  /** Where in the model it is called. */
  readonly fires: string;
  readonly sites: HookSites;
  /** For layer points: what a site is, in messages ('attention', 'MoE'). */
  readonly what: string;
  /** The keys model_hook's opts may hold at this point. */
  readonly options: readonly string[];
}

export const HOOK_POINTS = {
  kv: {
    name: 'kv',
    inputs: ['keys (B, H, C, D)', 'values (B, H, C, D)', 'attn (B, H, R, C)', 'pos (B, H, C) i64', '*state (B, H, C)'],
    outputs: ['scores (B, H, C)', '*state (B, H, C)'],
    fires: 'per attention layer: once after the prompt (prefill: C = T0, R = min(T0, history)), then while a cached decoding (generate, kv_eval) runs only when its scores are needed, with the attention rows of every step since its last fire (R >= 1, oldest first; C = the slots in use): when a row holds `budget` tokens and must drop its `evict` lowest-scoring before the next is written (each (batch, head) its own), or when its row buffer is full: min(evict, 64) rows (64 with budget null), fewer (at least 4) where more would pass 1/8 of the bytes of the cache; a state updated exactly over R rows equals firing at every step',
    sites: 'layers', what: 'attention', options: ['budget', 'state', 'layers', 'evict', 'history', 'positions', 'bits', 'group'],
  },
  router: {
    name: 'router',
    inputs: ['x (N, D)', "*params (the layer's router parameters, in the spec's order)"],
    outputs: [
      "form 'weights': [weights (N, E), aux (), zloss (), probs (N, E) or (0,)]",
      "form 'indices': [indices (E, C) i64, gates (E, C), aux (), zloss (), probs (N, E) or (0,)]",
      "form 'slots': [dispatch (N, E, S), combine (N, E, S), aux (), zloss (), probs (N, E) or (0,)]",
    ],
    fires: 'every forward of an MoE layer, on its N = B*T tokens, with the experts then run batched as the form says (token choice, expert choice, Soft MoE slots)',
    sites: 'layers', what: 'MoE', options: ['layers', 'form'],
  },
  weight: {
    name: 'weight',
    inputs: ['weight (the stored weight, its own shape)'],
    outputs: ['weight (the weight the forward uses, the same shape and dtype)'],
    fires: 'every forward of each chosen nn.Linear / nn.Conv1d/2d/3d, before it runs',
    sites: 'modules', what: 'nn.Linear or nn.Conv*d', options: ['modules'],
  },
  output: {
    name: 'output',
    inputs: ["x (the module's input, as its forward got it)", "y (the module's output)"],
    outputs: ["y' (what the model gets instead of y: y's shape and dtype)"],
    fires: 'after every forward of each chosen nn.Linear / nn.Conv1d/2d/3d (autograd runs through it); y is computed with the weight a weight hook on the same module gives',
    sites: 'modules', what: 'nn.Linear or nn.Conv*d', options: ['modules'],
  },
} as const satisfies Record<string, HookPoint>;

export type HookPointName = keyof typeof HOOK_POINTS;
/** The points whose sites are indexed layers (counted in a model's `hookPoints`). */
export type LayerPointName = { [K in HookPointName]: (typeof HOOK_POINTS)[K]['sites'] extends 'layers' ? K : never }[HookPointName];
/** The points whose sites are named modules (listed in a model's `hookModules`). */
export type ModulePointName = Exclude<HookPointName, LayerPointName>;

export const LAYER_POINTS = (Object.keys(HOOK_POINTS) as HookPointName[]).filter((k) => HOOK_POINTS[k].sites === 'layers') as LayerPointName[];
export const MODULE_POINTS = (Object.keys(HOOK_POINTS) as HookPointName[]).filter((k) => HOOK_POINTS[k].sites === 'modules') as ModulePointName[];

/** A model description's `hooks` (layer counts) and `hook_modules` (module names), per point, filled for every declared point. */
export function hookSites(hooks: Partial<Record<string, number>> | undefined, modules: Partial<Record<string, string[]>> | undefined): {
  counts: Record<LayerPointName, number>;
  modules: Record<ModulePointName, readonly string[]>;
} {
  const counts = Object.fromEntries(LAYER_POINTS.map((k) => [k, hooks?.[k] ?? 0])) as Record<LayerPointName, number>;
  const mods = Object.fromEntries(MODULE_POINTS.map((k) => [k, Object.freeze([...(modules?.[k] ?? [])])])) as Record<ModulePointName, readonly string[]>;
  return { counts, modules: mods };
}
