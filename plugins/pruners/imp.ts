/**
 * Iterative magnitude pruning with rewinding: the lottery-ticket procedure. Train `every`
 * epochs, prune the `rate` of the weights still kept with the smallest |w| (over all
 * selected weights, `scope: 'global'`, or within each, `'layer'`), rewind every parameter
 * to its value at step `rewindTo` (0: the initialization), masked, reset the optimizer's
 * state, train again; `rounds` times. After round r (from 0) the sparsity is 1 − (1 − rate)^(r+1).
 *
 * Controls, as Frankle & Carbin's: an Imp with `control` set follows a ticket trained
 * before it (`followTicket`; every Imp records its masks of each round, {@link MaskHistory}),
 * and at its round r, with the same schedule and training, takes
 * - `'reinit'`: the ticket's round-r masks exactly, on a fresh random re-initialization of
 *   every parameter: a seeded permutation of each tensor's rewind-point values, a draw
 *   from the init's empirical distribution (at `rewindTo: 0`) whatever the initializer;
 * - `'random'`: uniform random masks among its kept entries with the ticket's round-r
 *   per-weight counts, rewound like the ticket.
 * A control without a ticket is refused (E_ARG): masks its own training found would not
 * be the paper's control, and a fallback would pass for it unnoticed.
 *
 * Masks are multiplied into the weights after every optimizer step, so momentum cannot
 * revive a pruned weight. The rewind point is a Trainer snapshot: resuming mid-schedule
 * needs checkpoints saved with `checkpointSnapshots: true`. The checkpoint state holds a
 * checksum of the snapshot (a rewind to other weights: E_ARG), the mask record, and in a
 * control a checksum of the ticket's masks it used (resumed with another ticket: E_ARG).
 *
 * Method: Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
 * Networks", ICLR 2019, https://arxiv.org/abs/1803.03635; rewinding to step k: Frankle et al.,
 * "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML 2020, https://arxiv.org/abs/1912.05671.
 *
 * ```ts
 * const ticket = imp({ rate: 0.2, rounds: 10, atEpoch: 3, every: 3 }) as Imp;  // 3 epochs a level; trained first
 * const control = (imp({ rate: 0.2, rounds: 10, atEpoch: 3, every: 3, control: 'reinit' }) as Imp).followTicket(ticket);
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { checksum, matchChecksum, PrunerFields } from '../../sdk/families/pruners/base.js';
import { MaskHistory, permuteEach, randomMasksLike, ScorePrunerBase, scopeField } from '../../sdk/families/pruners/score.js';
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
  control: Type.Union([Type.Literal('none'), Type.Literal('reinit'), Type.Literal('random')], { default: 'none', description: "'none': the ticket; 'reinit': the followed ticket's masks, re-initialized; 'random': random masks at the followed ticket's per-layer counts, rewound (followTicket)" }),
  seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0, description: "seed of the controls' draws (with the round and the tensor, it fixes each)" }),
  mode: PrunerFields.mode,
}, { additionalProperties: false });
export type ImpConfig = Static<typeof ImpConfig>;

/** What one level (the training between two rounds) ended with. */
export interface ImpLevel {
  /** Rounds run before it (0: the dense network); the sparsity during it, from the weights (`report()`); epochs and steps done at its end. */
  level: number; sparsity: number; epoch: number; step: number;
  /** The loop's metrics at its end (train loss), and what {@link Imp.onLevelEnd}'s function returned. */
  metrics: Record<string, number>;
}

/** Iterative magnitude pruning with rewinding (and its controls). */
export class Imp extends ScorePrunerBase<ImpConfig> {
  private hooks: TrainingHooks | null = null;
  private ticket: Imp | null = null;
  /** In checkpoints: () f64 checksums of the rewind snapshot and (a control) of the ticket's masks used, NaN until known; the masks of each round. */
  private check: Tensor | null = null;
  private ticketCheck: Tensor | null = null;
  private history: MaskHistory | null = null;
  private listeners: ((level: ImpLevel) => Promise<Record<string, number> | void> | Record<string, number> | void)[] = [];
  /** The levels ended in this process (a resumed run starts a new list). */
  readonly levels: ImpLevel[] = [];

  /** |w|: an entry is worth its magnitude. */
  score({ weight }: PrunableWeight): Tensor { return weight.abs(); }

  /** 1 − (1 − rate)^(r+1): each round prunes `rate` of what remains. */
  override sparsityAt(r: number): number { return 1 - Math.pow(1 - this.config.rate, r + 1); }

  /** The ticket's: magnitude masks. A control's: the followed ticket's round-r masks, or random ones with their counts. */
  override masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
    if (this.config.control === 'none') return super.masks(weights, ctx);
    const masks = this.followed().history!.masksAt(ctx.round, weights, `${this.id}: the followed ticket`);
    if (this.config.control === 'reinit') return masks;
    return randomMasksLike(ctx.rt, weights.map((w) => w.shape), ctx.current, masks.map((m) => m.sum()), (i) => this.seedOf(ctx.round, i));
  }

  /** This control takes `ticket`'s masks: an Imp with control 'none' pruning the same weights, trained first, freed after. */
  followTicket(ticket: Imp): this {
    if (this.config.control === 'none') throw new LiaisonError('E_ARG', `${this.id}: control is 'none': a ticket follows no other`, { param: 'control' });
    if (!(ticket instanceof Imp) || ticket.config.control !== 'none') throw new LiaisonError('E_ARG', `${this.id}: followTicket needs an imp pruner with control 'none' (the ticket)`, { param: 'ticket' });
    this.ticket = ticket;
    return this;
  }

  /** Call `fn` at the end of every level, before the round that follows prunes and rewinds (the model is the level's trained one): what it returns joins the level's metrics. */
  onLevelEnd(fn: (level: ImpLevel) => Promise<Record<string, number> | void> | Record<string, number> | void): void {
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `${this.id}: onLevelEnd needs a function`, { param: 'fn' });
    this.listeners.push(fn);
  }

  override setup(model: ModelLike): void {
    super.setup(model);
    this.history = new MaskHistory(model.rt, model.params.filter((p) => this.selects(p)), this.config.rounds);
    [this.check, this.ticketCheck] = [0, 1].map(() => model.rt.full([], NaN, 'f64').keep());
    if (this.hooks && this.config.rewindTo === 0) { // attached at step 0 with rewindTo 0: the snapshot is the weights now
      const params = model.params.map((p) => model.param(p.name));
      const sum = checksum(model.rt, params);
      this.check!.copy_(sum).free();
      for (const t of [sum, ...params]) t.free();
    }
  }

  /** Frees what setup made, the mask record too: a control following this ticket cannot run its rounds after. */
  override free(): void {
    super.free();
    for (const t of [this.check, this.ticketCheck, this.history]) t?.free();
    this.check = this.ticketCheck = this.history = null;
  }

  override async attach(hooks: TrainingHooks): Promise<void> {
    if (this.config.control !== 'none') this.followed();
    this.hooks = hooks;
    hooks.snapshot(this.snapName, { at: this.config.rewindTo });
    // registered before the base's epochEnd (which prunes): a level is read before its round
    hooks.on('epochEnd', (info) => this.levelEnd(info));
    await super.attach(hooks);
    hooks.addState('imp', () => ({ '#check': this.check!, '#ticket': this.ticketCheck!, ...this.history!.state('#pruned-at.') }));
  }

  /** A round: the base's new masks (recorded), then the rewind (or the control's re-init), masked, and fresh optimizer state. */
  override async prune(rt: Runtime): Promise<void> {
    const round = this.rounds;
    if (this.config.control !== 'none') await this.checkTicket(rt, round);
    await super.prune(rt);
    await rt.scope(() => this.history?.record(Object.values(this.currentMasks()), round));
    if (!this.hooks) return; // set up by hand, outside a Trainer: nothing to rewind to
    const hooks = this.hooks;
    const names = hooks.model.params.map((p) => p.name);
    try {
      hooks.rewind(this.snapName, names);
    } catch (e) {
      throw new LiaisonError('E_ARG', `${this.id}: round ${round} has no weights of step ${this.config.rewindTo} to rewind to (${(e as Error).message}); prune after that step, and resume only from checkpoints saved with checkpointSnapshots: true`, { param: 'rewindTo', cause: e });
    }
    await rt.scope(async () => {
      const params = names.map((n) => hooks.model.param(n));
      const differ = await matchChecksum(checksum(rt, params), this.check!);
      if (differ) throw new LiaisonError('E_ARG', `${this.id}: the rewind snapshot is not the one this run took at step ${this.config.rewindTo} (checksum ${differ.now}, expected ${differ.was}): a run resumed from a checkpoint saved without its snapshots rewinds to other weights; save checkpoints with checkpointSnapshots: true`, { param: 'rewindTo' });
      if (this.config.control === 'reinit') permuteEach(rt, params, hooks.model.params.map((p) => p.shape), (i) => this.seedOf(round, i));
      this.apply();
    });
    hooks.resetOptimizer(names);
  }

  private followed(): Imp {
    if (!this.ticket) throw new LiaisonError('E_ARG', `${this.id}: control '${this.config.control}' uses a ticket's masks: call followTicket(ticket) with the ticket's imp pruner first`, { param: 'control' });
    return this.ticket;
  }

  /** The ticket has run round r, and (resumed) it is the ticket whose masks the rounds before used: then remember it. */
  private async checkTicket(rt: Runtime, r: number): Promise<void> {
    const ticket = this.followed();
    const ran = ticket.history ? await ticket.roundsRun() : 0;
    if (ran <= r) throw new LiaisonError('E_ARG', `${this.id}: round ${r} needs the followed ticket's round-${r} masks, and it has ${ticket.history ? `run ${ran} rounds` : 'none (freed or never set up)'}: train the ticket first`, { param: 'ticket' });
    await rt.scope(async () => {
      const differ = r > 0 ? await matchChecksum(ticket.history!.fingerprint(rt, r - 1), this.ticketCheck!) : null;
      if (differ) throw new LiaisonError('E_ARG', `${this.id}: the followed ticket's masks up to round ${r - 1} are not those this run used (checksum ${differ.now}, expected ${differ.was}): resume a control with the ticket it followed`, { param: 'ticket' });
      this.ticketCheck!.copy_(ticket.history!.fingerprint(rt, r));
    });
  }

  /** The seed of a control's draw for tensor i (< 2^16) at round r: no two meet. */
  private seedOf(r: number, i: number): number { return this.config.seed * 1_000_003 + r * (1 << 16) + i; }

  private get snapName(): string { return `imp-rewind-${this.config.rewindTo}`; }

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
  description: "iterative magnitude pruning with rewinding (lottery tickets): prune rate of the remaining |w| each level, rewind to step k, reset the optimizer; controls 'reinit' and 'random' following a ticket's masks",
  paper: 'https://arxiv.org/abs/1803.03635',
  create: (config, meta) => new Imp(config, meta),
});
