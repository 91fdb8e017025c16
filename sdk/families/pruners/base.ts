/**
 * Shared base of the Pruner family: masks held, applied in the masking mode (re-applied
 * after every optimizer step in `'inplace'` mode), recomputed at pruning events. A plugin
 * writes `masks()` only — or `score()` only, on ScorePrunerBase (./score.ts).
 */
import { lstat } from 'node:fs/promises';
import { Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, type Tensor } from '../../../bridge/index.js';
import type { ModelLike, ParamInfo, TrainingHooks } from '../../hooks.js';
import { PluginBase } from '../../plugin.js';
import { traceEach } from '../../program.js';
import { writeSafetensors } from '../../safetensors.js';
import { removeWeightHook, weightHook, type WeightHookable } from '../../weight-hooks.js';
import type { PruneContext, PrunableWeight, PruneMode, Pruner } from './types.js';

/**
 * The masking modes a config may name (types.ts {@link PruneMode}), both implemented here:
 * `'inplace'` by {@link PrunerBase.apply} after every step, `'hook'` by weight hooks over
 * the held masks. A plugin whose forward needs its own hook program (edge-popup: masks from
 * trained scores) says so by overriding `mode`, `apply()` and `currentMasks()` instead.
 */
export const PRUNE_MODES: readonly PruneMode[] = ['inplace', 'hook'];

/** Sparsity of one weight: `pruned` of its `numel` entries are zero. */
export interface LayerSparsity { name: string; numel: number; pruned: number; sparsity: number }

/** Sparsity per weight and over all of them together (`pruned / numel`). */
export interface SparsityReport { layers: LayerSparsity[]; numel: number; pruned: number; sparsity: number }

/**
 * The zeros of each tensor, counted in the runtime and read in one round trip, as a report
 * (layers in the order given). The tensors are read, not changed.
 */
async function countZeros(rt: Runtime, named: [string, Tensor, number][]): Promise<SparsityReport> {
  const counts = await rt.scope(async () => {
    const each = named.map(([, t]) => t.eq(0).sum().to('f64').reshape([1]));
    return Array.from((await (each.length === 1 ? each[0] : rt.cat(each)).data()).data as ArrayLike<number>, Number);
  });
  const layers = named.map(([name, , numel], i) => ({ name, numel, pruned: counts[i], sparsity: numel ? counts[i] / numel : 0 }));
  const numel = layers.reduce((a, l) => a + l.numel, 0);
  const pruned = layers.reduce((a, l) => a + l.pruned, 0);
  return { layers, numel, pruned, sparsity: numel ? pruned / numel : 0 };
}

/**
 * Sparsity of a model's weights as they are stored, without a pruner: the zeros of each
 * chosen parameter (default: every parameter of rank ≥ 2, the weights a pruner selects by
 * default). A pruner in `'hook'` mode leaves its stored weights whole: ask it
 * (`pruner.report()`) for the weights its forward uses.
 */
export async function sparsityOf(model: ModelLike, names?: readonly string[]): Promise<SparsityReport> {
  const chosen = names ?? model.params.filter((p) => p.shape.length >= 2).map((p) => p.name);
  const infos = chosen.map((n) => {
    const p = model.params.find((q) => q.name === n);
    if (!p) throw new LiaisonError('E_ARG', `sparsityOf: the model has no parameter '${n}'; it has ${model.params.map((q) => q.name).join(', ')}`, { param: 'names' });
    return p;
  });
  const handles = infos.map((p) => model.param(p.name));
  try {
    return await countZeros(model.rt, infos.map((p, i) => [p.name, handles[i], p.numel]));
  } finally {
    for (const h of handles) h.free();
  }
}

/**
 * () f64: Σ w·(w + 1) over the tensors, a checksum of their values (their sum and energy):
 * what a pruner keeps in its checkpoint state to know a rewind snapshot again. Frees its
 * intermediates (it may run outside a scope).
 */
export function checksum(rt: Runtime, ts: readonly Tensor[]): Tensor {
  const parts = ts.map((t) => {
    const d = t.to('f64');
    const steps = [d, d.add(1)];
    steps.push(d.mul(steps[1]), steps.at(-1)!.sum());
    const out = steps.at(-1)!.reshape([1]);
    for (const x of steps) x.free();
    return out;
  });
  const all = rt.cat(parts);
  const sum = all.sum();
  for (const x of [...parts, all]) x.free();
  return sum;
}

/**
 * Compare the checksum `sum` with the one `held` (a () f64 kept in a pruner's checkpoint
 * state, NaN until known): the first time, `held` takes it and null is returned; after,
 * the two values where they differ (relative 1e-9), else null. One round trip.
 */
export async function matchChecksum(sum: Tensor, held: Tensor): Promise<{ now: number; was: number } | null> {
  const [now, was] = await Promise.all([sum.item(), held.item()]);
  if (Number.isNaN(was)) held.copy_(sum).free();
  else if (Math.abs(now - was) > 1e-9 * Math.max(1, Math.abs(was))) return { now, was };
  return null;
}

/** Config fields every pruner has; spread them into a plugin's schema. */
export const PrunerFields = {
  sparsity: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.8, description: 'fraction of the selected weights pruned after the last round' }),
  atEpoch: Type.Integer({ minimum: 0, default: 0, description: 'epoch after which the first pruning round runs (0: before training starts)' }),
  rounds: Type.Integer({ minimum: 1, default: 1, description: 'pruning rounds, one every `every` epochs from atEpoch; each prunes the same fraction of the weights still kept, reaching sparsity after the last (1: one-shot)' }),
  // optional in the static type (the schema's default fills it in): subclasses constructed
  // with configs written before these fields existed keep typing
  every: Type.Optional(Type.Integer({ minimum: 1, default: 1, description: 'epochs between pruning rounds: round r runs after atEpoch + r·every epochs' })),
  mode: Type.Optional(Type.Union(PRUNE_MODES.map((m) => Type.Literal(m)), {
    default: 'inplace',
    description: "how masks reach the weights: 'inplace' multiplies them into the stored weights after every optimizer step; 'hook' applies W ⊙ mask in the forward through weight hooks, leaving the stored weights whole (only weights of nn.Linear / nn.Conv modules)",
  })),
};

/**
 * The config fields {@link PrunerBase} reads. `every` and `mode` are optional so that
 * configs written before they existed still type; `sparsity` is optional for a plugin
 * whose schedule is not a target sparsity (it overrides {@link PrunerBase.sparsityAt}).
 */
export interface PrunerSchedule { sparsity?: number; atEpoch: number; rounds: number; every?: number; mode?: PruneMode }

/** {@link PrunerSchedule} with a target sparsity: the config of a pruner built on {@link PrunerFields}. */
export interface PrunerBaseConfig extends PrunerSchedule { sparsity: number }

/**
 * Rounds due once `epochs` epochs have run: round r (from 0) runs after `atEpoch + r·every`
 * epochs (at attach when that is 0), and there are `rounds` of them.
 */
export function roundsDue(epochs: number, c: { atEpoch: number; rounds: number; every?: number }): number {
  if (epochs < c.atEpoch) return 0;
  return Math.min(c.rounds, Math.floor((epochs - c.atEpoch) / (c.every ?? 1)) + 1);
}

export abstract class PrunerBase<C extends PrunerSchedule> extends PluginBase<C> implements Pruner<C> {
  private held: { info: ParamInfo; param: Tensor; mask: Tensor }[] = [];
  private target: ModelLike | null = null;
  /** Modules whose weight hook {@link setup} installed (config `mode: 'hook'`). */
  private hooked: string[] = [];
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
    const target = this.config.sparsity;
    if (typeof target !== 'number') throw new LiaisonError('E_ARG', `${this.id}: config has no 'sparsity'; a pruner without it must override sparsityAt(round)`, { param: 'sparsity' });
    const keep = Math.pow(1 - target, (r + 1) / this.config.rounds);
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
    this.target = model;
    // kept: they live as long as this pruner, whatever rt.scope() setup ran in
    this.held = chosen.map((info) => ({ info, param: model.param(info.name).keep(), mask: model.rt.ones(info.shape).keep() }));
    this.round = 0;
    this.roundT = model.rt.zeros([]).keep();
    if (this.config.mode === 'hook') this.hookMasks(model);
  }

  /**
   * Config `mode: 'hook'`: each selected weight's module computes W ⊙ mask in its forward
   * (sdk/weight-hooks.ts; the program captures the held mask, which rounds update in place),
   * so the stored weights stay whole and the gradient reaches the kept entries only. A plugin
   * whose own code installs hooks (edge-popup) declares `mode` itself and leaves the config
   * field alone.
   */
  private hookMasks(model: ModelLike): void {
    const m = model as Partial<WeightHookable>;
    const sites = m.hookModules?.weight;
    if (typeof m.setWeightHook !== 'function' || !sites) throw new LiaisonError('E_ARG', `${this.id}: mode 'hook' masks through weight hooks, and this model has none (build it as a Model, or use mode 'inplace')`, { param: 'mode' });
    const modules = this.held.map((h) => h.info.name.replace(/\.weight$/, ''));
    const bad = this.held.filter((h, i) => !h.info.name.endsWith('.weight') || !sites.includes(modules[i]));
    if (bad.length) throw new LiaisonError('E_ARG', `${this.id}: mode 'hook' masks through weight hooks, and ${bad.map((h) => `'${h.info.name}'`).join(', ')} is not the weight of a module with one (${sites.join(', ') || 'none'}); select only those weights, or use mode 'inplace'`, { param: 'mode' });
    this.held.forEach((h, i) => weightHook(m as WeightHookable, [modules[i]], (w) => w.mul(h.mask), { name: this.id }));
    this.hooked = modules;
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
    try {
      if (this.hooked.length && this.target) removeWeightHook(this.target as unknown as WeightHookable, this.hooked);
    } catch (e) { // the model was freed first: its hooks went with it
      if (!(e instanceof LiaisonError && e.code === 'E_HANDLE')) throw e;
    }
    this.hooked = [];
    for (const h of this.held) { h.param.free(); h.mask.free(); }
    this.roundT?.free();
    this.held = [];
    this.roundT = null;
    this.target = null;
  }

  /**
   * Bring the masks in force to the weights, in this pruner's {@link mode}. `'inplace'`:
   * zero the pruned entries of the stored weights (queued; the step program does this after
   * every optimizer step). `'hook'`: nothing, the weight hooks apply them in every forward.
   */
  apply(): void {
    if (!this.target || this.hooked.length) return; // 'hook': the forward applies them
    // one computation per weight: inside the step program, one torch._foreach_mul_ for all
    // of them (sdk/program.ts traceEach); the in-place op's handle is not needed
    traceEach(this.target.rt, this.held, (h) => { h.param.mul_(h.mask).free(); });
  }

  /** The masks in force, by parameter name. */
  currentMasks(): Record<string, Tensor> {
    return Object.fromEntries(this.held.map((h) => [h.info.name, h.mask]));
  }

  /** Rounds run so far. */
  get rounds(): number {
    return this.round;
  }

  /** Rounds run so far as the tensor holds them: a resumed run restored the count there, before its first epoch end reads it. One round trip. */
  async roundsRun(): Promise<number> {
    return this.roundT ? this.roundT.item() : this.round;
  }

  /**
   * Sparsity per pruned weight and over all of them, from the weights as they are: the
   * zeros of `param ⊙ mask` with the masks of {@link currentMasks} (in `'inplace'` mode the
   * product is the stored weight; in `'hook'` mode it is the weight the forward uses). A
   * zero the optimizer left in a kept entry counts too: this is what the weights hold, not
   * what the masks say. One round trip.
   */
  async report(): Promise<SparsityReport> {
    if (!this.held.length || !this.target) throw new LiaisonError('E_ARG', `${this.id}: report() needs the weights: call setup(model) (or attach it to a Trainer) first`);
    const masks = this.currentMasks();
    const rt = this.target.rt;
    return rt.scope(() => countZeros(rt, this.held.map((h) => {
      const m = masks[h.info.name];
      if (!m) throw new LiaisonError('E_ARG', `${this.id}: currentMasks() has no mask for '${h.info.name}'`);
      return [h.info.name, h.param.mul(m), h.info.numel];
    })));
  }

  /**
   * Write the masks in force ({@link currentMasks}) to a safetensors file at `path`: one
   * u8 tensor per pruned weight (1 = kept, 0 = pruned), under the parameter's name and
   * shaped as it, and metadata `format: 'liaison-masks'`, `plugin` (its id), `round` (rounds
   * run) and `sparsity` (over the masks, as a decimal string). The file is written from
   * this process, as checkpoints are (sdk/safetensors.ts: atomically, parent folders
   * made), so it works with remote runtimes too. An existing file is an E_ARG unless
   * `overwrite` is true, as `Model.saveFile`.
   */
  async exportMasks(path: string, opts: { overwrite?: boolean } = {}): Promise<void> {
    if (typeof path !== 'string' || !path) throw new LiaisonError('E_ARG', `${this.id}: exportMasks needs a file path, got ${JSON.stringify(path)}`, { param: 'path' });
    if (!this.held.length || !this.target) throw new LiaisonError('E_ARG', `${this.id}: exportMasks() has no masks yet: call setup(model) (or attach it to a Trainer) first`);
    if (!opts.overwrite && await lstat(path).then(() => true, () => false)) {
      throw new LiaisonError('E_ARG', `${this.id}: exportMasks: ${path} exists; pass { overwrite: true } to replace it`, { param: 'path' });
    }
    const masks = this.currentMasks();
    const rt = this.target.rt;
    const names = Object.keys(masks);
    const datas = await rt.scope(() => Promise.all(names.map((n) => masks[n].to('u8').data())));
    let kept = 0;
    let total = 0;
    for (const d of datas) {
      const v = d.data as Uint8Array;
      total += v.length;
      for (let i = 0; i < v.length; i++) kept += v[i];
    }
    // the count as the tensor holds it: a resumed run restored it there
    const round = await this.roundsRun();
    const metadata = { format: 'liaison-masks', plugin: this.id, round: String(round), sparsity: String(total ? 1 - kept / total : 0) };
    await writeSafetensors(path, Object.fromEntries(names.map((n, i) => [n, datas[i]])), metadata);
  }

  async attach(hooks: TrainingHooks): Promise<void> {
    this.setup(hooks.model);
    if (this.config.atEpoch === 0) await this.prune(hooks.rt);
    // 'inplace': the optimizer step moved pruned entries off zero (momentum); zero them again
    if (this.mode === 'inplace') hooks.on('afterOptimizerStep', () => this.apply());
    hooks.on('epochEnd', async ({ epoch }) => {
      // after epoch e (from 0), e + 1 epochs have run: the rounds due by then
      const due = roundsDue(epoch + 1, this.config);
      // Only where the schedule adds a round can one be missing: checkpoints are written
      // after this point, so a resumed count is never behind an earlier boundary. The
      // count is read there only (a resumed run restored it into the tensor): other
      // epoch ends cost no round trip.
      if (due === roundsDue(epoch, this.config)) return;
      this.round = await this.roundT!.item();
      if (this.round < due) await this.prune(hooks.rt);
    });
    // '#round' cannot be a parameter name, so it never meets a mask's key
    hooks.addState('pruner', () => ({ ...this.currentMasks(), '#round': this.roundT! }));
  }
}
