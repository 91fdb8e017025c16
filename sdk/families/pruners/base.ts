/**
 * Shared base of the Pruner family: masks held, applied in the masking mode (re-applied
 * after every optimizer step in `'inplace'` mode), recomputed at pruning events. A plugin
 * writes `masks()` only — or `score()` only, on ScorePrunerBase (./score.ts).
 */
import { Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, type Tensor } from '../../../bridge/index.js';
import type { ModelLike, ParamInfo, TrainingHooks } from '../../hooks.js';
import { PluginBase } from '../../plugin.js';
import type { PruneContext, PrunableWeight, PruneMode, Pruner } from './types.js';

/** The masking modes there are (types.ts {@link PruneMode}); forward-time weight hooks will add one. */
export const PRUNE_MODES: readonly PruneMode[] = ['inplace'];

/** Config fields every pruner has; spread them into a plugin's schema. */
export const PrunerFields = {
  sparsity: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.8, description: 'fraction of the selected weights pruned after the last round' }),
  atEpoch: Type.Integer({ minimum: 0, default: 0, description: 'epoch after which the first pruning round runs (0: before training starts)' }),
  rounds: Type.Integer({ minimum: 1, default: 1, description: 'pruning rounds, one per epoch from atEpoch; each prunes the same fraction of the weights still kept, reaching sparsity after the last (1: one-shot)' }),
  // optional in the static type (the schema's default fills it in): subclasses constructed
  // with configs written before the field existed keep typing
  mode: Type.Optional(Type.Union(PRUNE_MODES.map((m) => Type.Literal(m)), {
    default: 'inplace',
    description: "how masks reach the weights: 'inplace' multiplies them into the stored weights after every optimizer step",
  })),
};

/** The config fields {@link PrunerBase} reads; `mode` is optional so that configs written before it existed still type. */
export interface PrunerBaseConfig { sparsity: number; atEpoch: number; rounds: number; mode?: PruneMode }

export abstract class PrunerBase<C extends PrunerBaseConfig> extends PluginBase<C> implements Pruner<C> {
  private held: { info: ParamInfo; param: Tensor; mask: Tensor }[] = [];
  private round = 0;
  /** () f32: the rounds run, as a tensor too, so that checkpoints carry it and resume restores it. */
  private roundT: Tensor | null = null;

  abstract masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[];

  selects(param: ParamInfo): boolean {
    return param.shape.length >= 2;
  }

  /** How the masks reach the weights: `config.mode`, `'inplace'` when the plugin's schema has no such field. */
  get mode(): PruneMode {
    return this.config.mode ?? 'inplace';
  }

  /**
   * The sparsity after round `r` (from 0): with R rounds, each prunes the fraction
   * 1 − (1 − sparsity)^(1/R) of the weights still kept (iterative magnitude pruning's
   * schedule), so after the last the target is reached; R = 1 is one-shot.
   */
  sparsityAt(r: number): number {
    const keep = Math.pow(1 - this.config.sparsity, (r + 1) / this.config.rounds);
    return 1 - keep;
  }

  /** A mode set on an instance by hand (the schema refuses others) is refused by name before it could be ignored. */
  protected checkMode(): void {
    if (!PRUNE_MODES.includes(this.mode)) {
      throw new LiaisonError('E_ARG', `${this.id}: config field 'mode' is '${String(this.mode)}'; the masking modes are ${PRUNE_MODES.map((m) => `'${m}'`).join(', ')}`, { param: 'mode' });
    }
  }

  /**
   * Masks of ones over the selected weights of `model` (held, captured by the step program).
   * A pruner set up again (another model, another Trainer) drops what it held before.
   */
  setup(model: ModelLike): void {
    this.checkMode();
    const chosen = model.params.filter((p) => this.selects(p));
    if (!chosen.length) throw new LiaisonError('E_ARG', `${this.id}: selects none of the model's parameters (${model.params.map((p) => p.name).join(', ')})`);
    this.free();
    // kept: they live as long as this pruner, whatever rt.scope() setup ran in
    this.held = chosen.map((info) => ({ info, param: model.param(info.name).keep(), mask: model.rt.ones(info.shape).keep() }));
    this.round = 0;
    this.roundT = model.rt.zeros([]).keep();
  }

  /**
   * One pruning round now: new masks from `masks()`, copied into the held ones and applied.
   * It runs inside `rt.scope()`, so what `masks()` makes (its intermediates, the new masks)
   * is freed once copied: a plugin's `masks()` need not free anything. Queued; resolves once
   * the scope has closed (the ops go out with the next batch).
   */
  async prune(rt: Runtime): Promise<void> {
    if (!this.held.length) throw new LiaisonError('E_ARG', `${this.id}: call setup(model) (or attach it to a Trainer) before prune()`);
    const weights = this.held.map((h) => ({ name: h.info.name, weight: h.param, shape: h.info.shape }));
    const ctx: PruneContext = { rt, round: this.round, current: this.held.map((h) => h.mask), sparsity: this.sparsityAt(this.round) };
    await rt.scope(() => {
      const next = this.masks(weights, ctx);
      if (next.length !== this.held.length) throw new LiaisonError('E_ARG', `${this.id}: masks() returned ${next.length} masks for ${this.held.length} weights`);
      this.held.forEach((h, i) => { h.mask.copy_(next[i]); });
      this.apply();
      this.roundT!.fill_(this.round + 1);
    });
    this.round++;
  }

  /** Drop the masks and handles {@link setup} made (a pruner attached to a Trainer is done with them when the Trainer is). */
  free(): void {
    for (const h of this.held) { h.param.free(); h.mask.free(); }
    this.roundT?.free();
    this.held = [];
    this.roundT = null;
  }

  /**
   * Bring the masks in force to the weights, in this pruner's {@link mode}. `'inplace'`:
   * zero the pruned entries of the stored weights (queued; the step program does this after
   * every optimizer step).
   */
  apply(): void {
    // the in-place op's handle is not needed (inside a trace, free() is a no-op)
    for (const h of this.held) h.param.mul_(h.mask).free();
  }

  /** The masks in force, by parameter name. */
  currentMasks(): Record<string, Tensor> {
    return Object.fromEntries(this.held.map((h) => [h.info.name, h.mask]));
  }

  /** Rounds run so far. */
  get rounds(): number {
    return this.round;
  }

  async attach(hooks: TrainingHooks): Promise<void> {
    this.setup(hooks.model);
    if (this.config.atEpoch === 0) await this.prune(hooks.rt);
    // 'inplace': the optimizer step moved pruned entries off zero (momentum); zero them again
    if (this.mode === 'inplace') hooks.on('afterOptimizerStep', () => this.apply());
    hooks.on('epochEnd', async ({ epoch }) => {
      // a resumed run restored the count into the tensor; it is read once per epoch
      this.round = await this.roundT!.item();
      // after epoch e (from 0), e + 1 epochs have run: the rounds due by then
      const due = Math.min(this.config.rounds, epoch + 2 - this.config.atEpoch);
      if (this.round < due) await this.prune(hooks.rt);
    });
    // '#round' cannot be a parameter name, so it never meets a mask's key
    hooks.addState('pruner', () => ({ ...this.currentMasks(), '#round': this.roundT! }));
  }
}
