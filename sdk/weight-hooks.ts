/**
 * Weight hooks from TypeScript: a traced program per module computes the weight the
 * module's forward uses from its stored weight and the plugin's own tensors (scores,
 * low-rank factors), which the program captures — so backward reaches them, while the
 * stored weight is never written (a frozen weight stays bit for bit what it was).
 *
 * ```ts
 * const shapeOf = (m: string) => model.params.find((p) => p.name === `${m}.weight`)!.shape;
 * const scores = Object.fromEntries(model.hookModules.weight.map((m) => [m, rt.rand(shapeOf(m))]));
 * weightHook(model, 'layers\\.\\d+', (w, site) => w.mul(straightThroughTopK(rt, scores[site.module], 0.5)));
 * weightHook(model, 'layers\\.0', (w) => w.add(B.matmul(A)));               // W + B·A
 * ```
 *
 * The runtime side is the `weight` hook point (python-runtime/liaison_runtime/hooks.py,
 * models/weights.py); its calling convention is `[weight] -> [weight']` (docs/protocol.md).
 */
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { define, type Program } from './program.js';

/** One module a weight hook is installed on. */
export interface WeightSite {
  /** Its name in the model (`layers.0`, `blocks.1.attn.qkv`). */
  module: string;
  /** Its stored weight's shape. */
  shape: readonly number[];
}

/** What {@link weightHook} needs of a model (a `Model`). */
export interface WeightHookable {
  readonly rt: Runtime;
  readonly params: readonly { name: string; shape: number[] }[];
  readonly hookModules: { readonly weight: readonly string[] };
  setWeightHook(modules: string | readonly string[], program: Program | null): string[];
  /** The modules `modules` picks at a point (Model.selectModules: E_ARG naming what is wrong). */
  selectModules(point: 'weight', modules: string | readonly string[], who: string, words?: { param?: string; site?: string; none?: string }): string[];
}

function sitesOf(model: WeightHookable, modules: string | readonly string[], who: string): WeightSite[] {
  const chosen = model.selectModules('weight', modules, who, { site: "a module with a weight hook point; the model's are", none: " with a weight hook point; the model's are" });
  return chosen.map((module) => {
    const p = model.params.find((x) => x.name === `${module}.weight`);
    if (!p) throw new LiaisonError('E_ARG', `${who}: module '${module}' has no 'weight' parameter`, { param: 'modules' });
    return { module, shape: p.shape };
  });
}

/**
 * Trace `fn(weight, site)` into one program per chosen module (`modules`: a regular
 * expression matched against whole module names, or a list of names) and install each at
 * that module's weight hook point. `fn` returns the weight the forward uses, the stored
 * one's shape; tensors it uses from outside (the plugin's parameters) are captured, so a
 * backward through the model's output gives them gradients when they require one. Returns
 * the programs by module name; {@link removeWeightHook} takes them off (the model frees them).
 */
export function weightHook(model: WeightHookable, modules: string | readonly string[], fn: (weight: Tensor, site: WeightSite) => Tensor, opts: { name?: string } = {}): Record<string, Program> {
  const who = 'weightHook';
  if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `${who}: fn must be a function (weight, site) => weight`, { param: 'fn' });
  const out: Record<string, Program> = {};
  for (const site of sitesOf(model, modules, who)) {
    const program = define(model.rt, { name: `${opts.name ?? 'weight-hook'}:${site.module}`, inputs: { weight: { shape: [...site.shape] } } }, ({ weight }) => {
      const w = fn(weight, site);
      if (w === weight) throw new LiaisonError('E_TRACE', `${who}: fn returned the stored weight itself for '${site.module}'; return the weight the forward should use (remove the hook to use the stored one)`, { param: 'fn' });
      return w;
    });
    model.setWeightHook([site.module], program);
    out[site.module] = program;
  }
  return out;
}

/** Take the weight hooks off the chosen modules: their forwards use the stored weights again. */
export function removeWeightHook(model: WeightHookable, modules: string | readonly string[]): void {
  model.setWeightHook(sitesOf(model, modules, 'removeWeightHook').map((s) => s.module), null);
}

/**
 * Inside a traced function (a weight hook): a 0/1 mask keeping the `keep` fraction of
 * `scores` with the highest values — exactly round(keep · n) entries — whose gradient
 * passes straight through to the scores (edge-popup's estimator: forward `hard`, backward
 * as if the mask were `scores`). It is the runtime's `topk_mask` op ranking the scores
 * themselves (`scores.topkMask(k, false)`; edge-popup ranks |s|): one op a layer.
 */
export function straightThroughTopK(_rt: Runtime, scores: Tensor, keep: number): Tensor {
  if (!(keep > 0 && keep <= 1)) throw new LiaisonError('E_ARG', `straightThroughTopK: keep must be a fraction in (0, 1], got ${keep}`, { param: 'keep' });
  const shape = scores.shape;
  if (!shape?.every((d): d is number => typeof d === 'number')) throw new LiaisonError('E_ARG', `straightThroughTopK: the scores need a known, fixed shape (a tensor made by a factory op, or a program input with numeric sizes), got ${shape ? `[${shape}]` : 'an unknown one'}`, { param: 'scores' });
  const n = shape.reduce((a, b) => a * b, 1);
  return scores.topkMask(Math.max(1, Math.round(keep * n)), false);
}
