/**
 * The `Pruner` family: masks over a model's weights (lottery tickets, docs/architecture.md, "Plugins and families").
 *
 * A plugin writes `masks()` — which entries of each weight to keep — or, when the decision
 * is "keep the highest scores", only `score()` on {@link ScorePruner}'s base
 * (sdk/families/pruners/score.ts), which does the top-k per layer or globally. The base
 * class does the rest in a training loop: it holds one mask per pruned weight, applies
 * them in the masking {@link PruneMode} (multiplied into the weights after every optimizer
 * step, as momentum would revive pruned weights otherwise; or in the forward through weight
 * hooks) and recomputes them at the pruning events its config
 * names (one-shot, or iterative rounds that each prune a fixed fraction of what remains).
 */
import type { Runtime, Tensor } from '../../../bridge/index.js';
import type { ParamInfo, TrainerPlugin } from '../../hooks.js';
import type { PluginInstance } from '../../plugin.js';

/**
 * How masks reach the weights.
 * - `'inplace'` (PrunerBase's, the default): the masks are multiplied into the stored
 *   weights when they are made and after every optimizer step, so pruned entries are zero
 *   in the weights themselves (and in checkpoints).
 * - `'hook'`: the forward uses `W ⊙ mask` through a weight hook (sdk/weight-hooks.ts) and
 *   the stored weight is left whole. PrunerBase installs the hooks for any plugin whose
 *   config says `mode: 'hook'` (weights of nn.Linear / nn.Conv modules); a plugin whose
 *   masks need their own hook program (edge-popup: masks from trained scores over frozen
 *   random weights) declares the mode itself, installs its hooks and reports its masks
 *   through `currentMasks()`.
 */
export type PruneMode = 'inplace' | 'hook';

/** Where a score-based pruner's top-k runs: over all selected weights at once, or within each. */
export type ScopeOfPruning = 'global' | 'layer';

/** A weight a pruner decides on. */
export interface PrunableWeight {
  /** Dotted parameter name, `layers.0.weight`. */
  name: string;
  /** The parameter (out, in) or (out, in, kh, kw): read it, do not change it. */
  weight: Tensor;
  /** The weight's shape, (out, in) or (out, in, kh, kw): what `masks()` and `score()` return for it. */
  shape: number[];
}

export interface PruneContext {
  /** The runtime the weights live in: new tensors (`rt.rand(shape)`, `rt.zeros`) come from it. */
  rt: Runtime;
  /** Pruning round, from 0 (iterative pruning prunes again each round). */
  round: number;
  /** The masks in force, one per weight, f32 with 1 = kept (all ones before the first round). */
  current: Tensor[];
  /** Target fraction of the selected weights' entries that are pruned after this round, in [0, 1). */
  sparsity: number;
}

export interface Pruner<C = unknown> extends PluginInstance<C>, TrainerPlugin {
  /**
   * Required: the new masks, one per weight, each shaped as its weight, f32, 1 = keep and
   * 0 = prune. Queued ops, run once per pruning event (not traced), inside `rt.scope()`:
   * what it makes is freed once the base has copied the new masks in.
   */
  masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[];
  /** Which parameters it prunes. Default (the base class): every parameter of rank ≥ 2 (weights, not biases). */
  selects(param: ParamInfo): boolean;
  /** How its masks reach the weights. Default (the base class): `config.mode`, else `'inplace'`. */
  readonly mode?: PruneMode;
  /**
   * What a mask keeps or drops: `'entry'` (default) single weights; `'unit'` whole rows —
   * a neuron's or a filter's incoming weights, (out, …) row by row, with the unit's bias
   * when the pruner selects biases — so the sparsity is met in rows of each weight, rounded
   * per weight (structured pruning: LoFT's filters, masked neurons).
   */
  readonly granularity?: Granularity;
  /**
   * The masks in force, by parameter name, f32 shaped as each weight (PrunerBase has it). A
   * `'hook'`-mode pruner must have it: its stored weights do not show its masks.
   */
  currentMasks?(): Record<string, Tensor>;
}

/** What a pruner's masks keep or drop: single entries, or whole rows (neurons, filters). */
export type Granularity = 'entry' | 'unit';

/**
 * A pruner that keeps the highest-scoring entries: `masks()` is the base's top-k
 * (sdk/families/pruners/score.ts), over all weights or within each ({@link scope}), among
 * the entries still kept.
 */
export interface ScorePruner<C = unknown> extends Pruner<C> {
  /**
   * Required: how much each entry of `weight` is worth keeping, a tensor shaped as the
   * weight — (out, in) or (out, in, kh, kw) — of any real range, higher = keep. Called once
   * per weight (`index`: its position in the selected weights, stable across rounds) at
   * each pruning round, as queued ops inside `rt.scope()`: what it makes is freed after the
   * round. Entries already pruned (`ctx.current[index]` = 0) stay pruned whatever their score.
   */
  score(weight: PrunableWeight, ctx: PruneContext, index: number): Tensor;
  /** Where the top-k runs: `'global'` (one threshold over all selected weights) or `'layer'` (each weight pruned at the sparsity). */
  readonly scope: ScopeOfPruning;
}
