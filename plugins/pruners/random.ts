/**
 * Random pruning: the lottery-ticket control. Every entry gets a uniform random score, so
 * the masks keep a random `(1 − sparsity)` share of each weight (`scope: 'layer'`, the
 * default: the same sparsity in every layer as a layer-wise magnitude ticket) or of all
 * selected weights at once (`'global'`). Frankle & Carbin show a winning ticket's accuracy
 * is not reached by a random mask of the same layer-wise sparsity: this plugin is that
 * mask. With `rounds > 1` each round prunes a random share of the entries still kept; an
 * entry once pruned stays pruned (ScorePrunerBase, sdk/families/pruners/score.ts).
 *
 * The scores are seeded: `seed`, the round and the weight's position fix them, so a run
 * is repeatable and two seeds give two different controls.
 *
 * Method: Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
 * Networks", ICLR 2019, https://arxiv.org/abs/1803.03635 (the random-pruning control);
 * Liu et al., "The Unreasonable Effectiveness of Random Pruning", ICLR 2022,
 * https://arxiv.org/abs/2202.02643.
 *
 * ```ts
 * const control = random({ sparsity: 0.9, seed: 1 });   // 90% of each layer, at random
 * new Trainer({ model, optimizer, plugins: [control], epochs: 3, batchSize: 64, loss: 'cross_entropy' });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { ScorePrunerBase, scopeField, ScorePrunerFields } from '../../sdk/families/pruners/score.js';
import type { PrunableWeight, PruneContext } from '../../sdk/families/pruners/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link Random}. */
export const RandomConfig = Type.Object({
  ...ScorePrunerFields,
  scope: scopeField('layer'),
  seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0, description: 'seed of the random scores (with the round and the weight, it fixes each mask)' }),
}, { additionalProperties: false });
export type RandomConfig = Static<typeof RandomConfig>;

/** Weights a seeded round draws scores for at most: seeds of one round never meet the next's. */
const SEEDS_PER_ROUND = 1 << 16;

/** Random pruning: uniform scores in [0, 1), top-k per layer (default) or over all weights. */
export class Random extends ScorePrunerBase<RandomConfig> {
  /** U[0, 1) per entry, from a seed of its own (config seed, round, weight): independent of the weights' values. */
  score({ shape }: PrunableWeight, { rt, round }: PruneContext, index: number): Tensor {
    return rt.rand(shape, { seed: this.config.seed * 1_000_003 + round * SEEDS_PER_ROUND + index });
  }
}

/** The `random` registration: `random({ sparsity, seed, scope, atEpoch, rounds })`. */
export const random = definePlugin({
  name: 'random',
  version: '1.0.0',
  family: 'pruner',
  schema: RandomConfig,
  description: 'random pruning (the lottery-ticket control): uniform random scores, the same sparsity in every layer by default',
  paper: 'https://arxiv.org/abs/1803.03635',
  create: (config, meta) => new Random(config, meta),
});
