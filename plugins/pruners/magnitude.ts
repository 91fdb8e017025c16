/**
 * One-shot global magnitude pruning: the lottery-ticket baseline.
 *
 * One threshold over every selected weight at once (not one per layer): among the entries
 * not already pruned, keep the `(1 − sparsity)` fraction of all selected entries with the
 * largest |w| and zero the rest. Layers whose weights are small overall lose more, as in
 * the global variant of Frankle & Carbin. With `rounds > 1` it prunes again after later
 * epochs (sparsity grows geometrically, PrunerBase's schedule), which is iterative
 * magnitude pruning without rewinding. The base class re-applies the masks after every
 * optimizer step, so momentum cannot revive a pruned weight.
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
import { PrunerBase, PrunerFields } from '../../sdk/families/pruners/base.js';
import type { PrunableWeight, PruneContext } from '../../sdk/families/pruners/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link Magnitude}. */
export const MagnitudeConfig = Type.Object({
  ...PrunerFields,
}, { additionalProperties: false });
export type MagnitudeConfig = Static<typeof MagnitudeConfig>;

/** Global magnitude pruning: masks keep the largest |w| over all selected weights. */
export class Magnitude extends PrunerBase<MagnitudeConfig> {
  /**
   * Exactly `round((1 − sparsity) · total)` entries survive: the indices of the top-k
   * scores are scattered into one flat mask, so ties at the threshold cannot keep extra
   * entries (a `|w| ≥ threshold` test would keep every tied zero).
   */
  masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
    const { rt } = ctx;
    const sizes = weights.map((w) => w.shape.reduce((a, b) => a * b, 1));
    const total = sizes.reduce((a, b) => a + b, 0);
    const keep = Math.round((1 - ctx.sparsity) * total);
    // (total,) scores: |w| where still kept, −1 where already pruned, so a pruned entry
    // ranks below every live one (|w| ≥ 0) and is never revived
    const scores = rt.cat(weights.map((w, i) => w.weight.abs().where(ctx.current[i].gt(0), -1).reshape([-1])));
    const [, idx] = scores.topk(keep, 0, true, false);
    const flat = rt.zeros([total]).scatter(0, idx, 1); // (total,) 1 = keep
    // entries past the live count would only be pruned ones; multiplying keeps them pruned
    const pieces = weights.length === 1 ? [flat] : flat.split(sizes, 0);
    return pieces.map((m, i) => m.reshape(weights[i].shape).mul(ctx.current[i]));
  }
}

/** The `magnitude` registration: `magnitude({ sparsity, atEpoch, rounds })`. */
export const magnitude = definePlugin({
  name: 'magnitude',
  version: '1.0.0',
  family: 'pruner',
  schema: MagnitudeConfig,
  description: 'global magnitude pruning: one |w| threshold over all selected weights, masks re-applied after every step',
  paper: 'https://arxiv.org/abs/1803.03635',
  create: (config, meta) => new Magnitude(config, meta),
});
