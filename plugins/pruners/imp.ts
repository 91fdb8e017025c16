/**
 * Iterative magnitude pruning with rewinding: the lottery-ticket procedure. Train `every`
 * epochs, prune the `rate` of the weights still kept with the smallest |w| (over all
 * selected weights, `scope: 'global'`, or within each, `'layer'`), rewind every parameter
 * of the model to its value at step `rewindTo` (0: the initialization), masked, reset the
 * optimizer's state, train again; `rounds` times. After round r (from 0) the sparsity is
 * 1 − (1 − rate)^(r+1): 20% a round reaches 1% of the weights left after 20 rounds.
 *
 * Controls (`control`), each with the same schedule and training:
 * - `'reinit'`: the masks are found the same way, but instead of the rewind every parameter
 *   gets a fresh draw from its own initial values — a seeded random permutation of each
 *   tensor's rewind-point entries, so the same distribution whatever the model's
 *   initializer (at `rewindTo: 0`, exactly the init's). Frankle & Carbin re-initialize the
 *   ticket's own masks; here the masks come from this run's own training (see docs/pruning.md).
 * - `'random'`: at each round, masks drawn at random among the entries still kept, with
 *   the per-weight counts the magnitude masks would have (with the global scope, the
 *   per-layer sparsity IMP would pick), rewound like the ticket.
 *
 * Masks are multiplied into the weights after every optimizer step (PrunerBase's
 * 'inplace' mode), so momentum cannot revive a pruned weight. The rewind point is a
 * Trainer snapshot (`hooks.snapshot`): a run resumed mid-schedule needs checkpoints saved
 * with `checkpointSnapshots: true`, and a rewind to anything else is refused (E_ARG): a
 * checksum of the snapshot travels in the pruner's checkpoint state.
 *
 * Method: Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
 * Networks", ICLR 2019, https://arxiv.org/abs/1803.03635; rewinding to step k: Frankle et al.,
 * "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020,
 * https://arxiv.org/abs/1912.05671.
 *
 * ```ts
 * const ticket = imp({ rate: 0.2, rounds: 10, atEpoch: 3, every: 3 });  // 3 epochs a level
 * ticket.onLevelEnd(async () => ({ accuracy: (await trainer.evaluate(test)).accuracy! }));
 * const trainer = new Trainer({ model, optimizer: adam({ lr: 1.2e-3 }), plugins: [ticket], epochs: 33, loss: 'cross_entropy' });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { checksum, PrunerFields } from '../../sdk/families/pruners/base.js';
import { randomMasksLike, ScorePrunerBase, scopeField } from '../../sdk/families/pruners/score.js';
import type { PrunableWeight, PruneContext } from '../../sdk/families/pruners/types.js';
import type { LoopInfo, ModelLike, TrainingHooks } from '../../sdk/hooks.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link Imp}. */
export const ImpConfig = Type.Object({
  rate: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1, default: 0.2, description: 'fraction of the weights still kept pruned at each round' }),
  rounds: Type.Integer({ minimum: 1, default: 5, description: 'pruning rounds; after round r (from 0) the sparsity is 1 − (1 − rate)^(r+1)' }),
  atEpoch: Type.Integer({ minimum: 0, default: 1, description: 'epochs trained before the first round (0: prune the initialization)' }),
  every: Type.Integer({ minimum: 1, default: 1, description: 'epochs trained at each level, between rounds' }),
  scope: scopeField('global'),
  rewindTo: Type.Integer({ minimum: 0, default: 0, description: 'the step whose weights the survivors are rewound to: 0 the initialization, k the weights after step k' }),
  control: Type.Union([Type.Literal('none'), Type.Literal('reinit'), Type.Literal('random')], { default: 'none', description: "'none': the ticket; 'reinit': the same procedure, survivors re-initialized instead of rewound; 'random': random masks at IMP's per-layer counts, rewound" }),
  seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0, description: "seed of the controls' draws (with the round and the tensor, it fixes each)" }),
  mode: PrunerFields.mode,
}, { additionalProperties: false });
export type ImpConfig = Static<typeof ImpConfig>;

/** What one level (the training between two rounds) ended with. */
export interface ImpLevel {
  /** Rounds run before it: 0 the dense network. */
  level: number;
  /** Sparsity of the selected weights during it, from the weights (`report()`). */
  sparsity: number;
  /** Epochs and steps done when it ended. */
  epoch: number; step: number;
  /** The loop's metrics at its end (train loss), and what {@link Imp.onLevelEnd}'s function returned. */
  metrics: Record<string, number>;
}

/** Tensors a seeded draw per round may touch at most: seeds of one round never meet the next's. */
const SEEDS_PER_ROUND = 1 << 16;

/** Iterative magnitude pruning with rewinding (and its controls). */
export class Imp extends ScorePrunerBase<ImpConfig> {
  private hooks: TrainingHooks | null = null;
  /** () f64: checksum of the rewind snapshot, NaN until known; in checkpoints. */
  private check: Tensor | null = null;
  private listeners: ((level: ImpLevel) => Promise<Record<string, number> | void> | Record<string, number> | void)[] = [];
  /** The levels ended in this process (a resumed run starts a new list). */
  readonly levels: ImpLevel[] = [];

  /** |w|: an entry is worth its magnitude. */
  score({ weight }: PrunableWeight): Tensor {
    return weight.abs();
  }

  /** 1 − (1 − rate)^(r+1): each round prunes `rate` of what remains. */
  override sparsityAt(r: number): number {
    return 1 - Math.pow(1 - this.config.rate, r + 1);
  }

  /** Magnitude masks; for the `'random'` control, random ones with their per-weight counts. */
  override masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
    const mag = super.masks(weights, ctx);
    if (this.config.control !== 'random') return mag;
    const seed = (i: number) => this.config.seed * 1_000_003 + ctx.round * SEEDS_PER_ROUND + i;
    return randomMasksLike(ctx.rt, weights.map((w) => w.shape), ctx.current, mag.map((m) => m.sum()), seed);
  }

  /**
   * Call `fn` at the end of every level, before the round that follows prunes and rewinds
   * (the model is the level's trained one): what it returns joins the level's metrics,
   * e.g. `async () => ({ accuracy: (await trainer.evaluate(test)).accuracy! })`.
   */
  onLevelEnd(fn: (level: ImpLevel) => Promise<Record<string, number> | void> | Record<string, number> | void): void {
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `${this.id}: onLevelEnd needs a function`, { param: 'fn' });
    this.listeners.push(fn);
  }

  override setup(model: ModelLike): void {
    super.setup(model);
    this.check = model.rt.full([], NaN, 'f64').keep();
    // attached at step 0 with rewindTo 0: the snapshot is the weights now
    if (this.hooks && this.config.rewindTo === 0) {
      const params = this.modelParams(model);
      const sum = checksum(model.rt, params);
      this.check.copy_(sum).free();
      for (const t of [sum, ...params]) t.free();
    }
  }

  override free(): void {
    super.free();
    this.check?.free();
    this.check = null;
  }

  override async attach(hooks: TrainingHooks): Promise<void> {
    this.hooks = hooks;
    hooks.snapshot(this.snapName, { at: this.config.rewindTo });
    // registered before the base's epochEnd (which prunes): a level is read before its round
    hooks.on('epochEnd', (info) => this.levelEnd(info));
    await super.attach(hooks);
    hooks.addState('imp', () => ({ '#check': this.check! }));
  }

  /** A round: the base's new masks, then the rewind (or the control's re-init), masked, and fresh optimizer state. */
  override async prune(rt: Runtime): Promise<void> {
    await super.prune(rt);
    if (!this.hooks) return; // set up by hand, outside a Trainer: nothing to rewind to
    const hooks = this.hooks;
    const names = hooks.model.params.map((p) => p.name);
    const round = this.rounds - 1;
    try {
      hooks.rewind(this.snapName, names);
    } catch (e) {
      throw new LiaisonError('E_ARG', `${this.id}: round ${round} has no weights of step ${this.config.rewindTo} to rewind to (${(e as Error).message}); prune after that step, and resume only from checkpoints saved with checkpointSnapshots: true`, { param: 'rewindTo', cause: e });
    }
    await rt.scope(async () => {
      const params = this.modelParams(hooks.model);
      const sum = checksum(rt, params);
      const [now, was] = await Promise.all([sum.item(), this.check!.item()]);
      if (Number.isNaN(was)) this.check!.copy_(sum);
      else if (Math.abs(now - was) > 1e-9 * Math.max(1, Math.abs(was))) {
        throw new LiaisonError('E_ARG', `${this.id}: the rewind snapshot is not the one this run took at step ${this.config.rewindTo} (checksum ${now}, expected ${was}): a run resumed from a checkpoint saved without its snapshots rewinds to other weights; save checkpoints with checkpointSnapshots: true`, { param: 'rewindTo' });
      }
      if (this.config.control === 'reinit') {
        params.forEach((p, i) => {
          const n = hooks.model.params[i].numel;
          const perm = rt.call('randperm', [n], { seed: this.config.seed * 1_000_003 + round * SEEDS_PER_ROUND + i }) as Tensor;
          p.copy_(p.reshape([-1]).gather(0, perm).reshape(hooks.model.params[i].shape));
        });
      }
      this.apply();
    });
    hooks.resetOptimizer(names);
  }

  private get snapName(): string {
    return `imp-rewind-${this.config.rewindTo}`;
  }

  private modelParams(model: ModelLike): Tensor[] {
    return model.params.map((p) => model.param(p.name));
  }

  /** After `every` epochs of a level (from atEpoch on, up to the last round's level): record it. */
  private async levelEnd(info: LoopInfo): Promise<void> {
    const { atEpoch, every, rounds } = this.config;
    const ran = info.epoch + 1;
    if (ran < atEpoch || (ran - atEpoch) % every !== 0 || (ran - atEpoch) / every > rounds) return;
    const level: ImpLevel = { level: (ran - atEpoch) / every, sparsity: (await this.report()).sparsity, epoch: ran, step: info.step, metrics: { ...info.metrics } };
    for (const fn of this.listeners) Object.assign(level.metrics, (await fn(level)) ?? {});
    this.levels.push(level);
  }
}

/** The `imp` registration: `imp({ rate, rounds, atEpoch, every, scope, rewindTo, control, seed })`. */
export const imp = definePlugin({
  name: 'imp',
  version: '1.0.0',
  family: 'pruner',
  schema: ImpConfig,
  description: "iterative magnitude pruning with rewinding (lottery tickets): prune rate of the remaining |w| each level, rewind to step k, reset the optimizer; controls 'reinit' and 'random'",
  paper: 'https://arxiv.org/abs/1803.03635',
  create: (config, meta) => new Imp(config, meta),
});
