/**
 * One-shot global magnitude pruning: the lottery-ticket baseline.
 *
 * One threshold over every selected weight at once (not one per layer): among the entries
 * not already pruned, keep the `(1 − sparsity)` fraction of all selected entries with the
 * largest |w| and zero the rest. Layers whose weights are small overall lose more, as in
 * the global variant of Frankle & Carbin. With `rounds > 1` it prunes again after later
 * epochs (each round prunes the same fraction of the weights still kept, PrunerBase's
 * schedule), which is iterative magnitude pruning without rewinding; `scope: 'layer'`
 * prunes each weight at the sparsity instead. The score is |w|: the top-k, the rounds and
 * the masking are ScorePrunerBase's (sdk/families/pruners/score.ts), which re-applies the
 * masks after every optimizer step, so momentum cannot revive a pruned weight.
 *
 * Method: Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
 * NeurIPS 2015, https://arxiv.org/abs/1506.02626; global pruning as in Frankle & Carbin,
 * "The Lottery Ticket Hypothesis", ICLR 2019, https://arxiv.org/abs/1803.03635.
 *
 * ```ts
 * const pruner = magnitude({ sparsity: 0.9 });           // prune before training starts
 * new Trainer({ model, optimizer, plugins: [pruner], epochs: 3, batchSize: 64, loss: 'cross_entropy' });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { ScorePrunerBase, ScorePrunerFields } from '../../sdk/families/pruners/score.js';
import type { PrunableWeight } from '../../sdk/families/pruners/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link Magnitude}. */
export const MagnitudeConfig = Type.Object({
  ...ScorePrunerFields,
}, { additionalProperties: false });
export type MagnitudeConfig = Static<typeof MagnitudeConfig>;

/** Global magnitude pruning: masks keep the largest |w| over all selected weights. */
export class Magnitude extends ScorePrunerBase<MagnitudeConfig> {
  /** |w|: an entry is worth its magnitude. */
  score({ weight }: PrunableWeight): Tensor {
    return weight.abs();
  }
}

/** The `magnitude` registration: `magnitude({ sparsity, atEpoch, rounds, scope })`. */
export const magnitude = definePlugin({
  name: 'magnitude',
  version: '1.0.0',
  family: 'pruner',
  schema: MagnitudeConfig,
  description: 'magnitude pruning: keep the largest |w|, over all selected weights (global) or per layer; masks re-applied after every step',
  paper: 'https://arxiv.org/abs/1803.03635',
  create: (config, meta) => new Magnitude(config, meta),
});
