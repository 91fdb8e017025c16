/**
 * The `Pruner` family: masks over a model's weights (lottery tickets, docs/architecture.md, "Plugins and families").
 *
 * A plugin writes `masks()` — which entries of each weight to keep. The base class does
 * the rest in a training loop: it holds one mask per pruned weight, applies them after
 * every optimizer step (momentum would revive pruned weights otherwise) and recomputes
 * them at the pruning events its config names.
 */
import type { Runtime, Tensor } from '../../../bridge/index.js';
import type { ParamInfo, TrainerPlugin } from '../../hooks.js';
import type { PluginInstance } from '../../plugin.js';

/** A weight a pruner decides on. */
export interface PrunableWeight {
  /** Dotted parameter name, `layers.0.weight`. */
  name: string;
  /** The parameter (out, in) or (out, in, kh, kw): read it, do not change it. */
  weight: Tensor;
  shape: number[];
}

export interface PruneContext {
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
}
