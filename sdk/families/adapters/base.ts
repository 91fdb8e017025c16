/**
 * AdapterBase: the shared shell of the `Adapter` family (types.ts). A plugin says how many
 * components each module holds ({@link AdapterBase.rankOf}) and, when it needs to, how its
 * factors start and what it does in the loop; the base does the rest in `attach(hooks)`:
 *
 * - picks the sites: the nn.Linear / nn.Conv*d modules whose whole names match `targets`
 *   (sdk/adapters.ts `adapterSites`), less the model's output layer — its last nn.Linear,
 *   the head — unless `targets` names it (one of its `|`-separated alternatives is the
 *   head's name, escapes aside: `'head'`, `'layers\\.0|layers\\.2'`), since adapting the
 *   head of a classifier is a choice, not a default (PEFT's `modules_to_save` exists for it);
 * - declares A (r, in[, k…]) and B (out, r[, 1…]) of each module as the Trainer's
 *   parameters `<module>.lora_A` / `.lora_B` (PEFT's LoRA init: A Kaiming-uniform
 *   U(±1/√fan_in), seeded per module; B zeros, so the model's output is unchanged at the
 *   start), and the gate (r,) — ones — as checkpointed state (`adapter.<module>.gate`);
 * - freezes every parameter of the model (biases too: PEFT's `bias: 'none'`), and keeps its
 *   buffers (a norm's running statistics) as they were at attach: a training forward moves
 *   them, and they are put back after every step, so `remove()` gives back the base model
 *   (PEFT lets them drift; here the base is the base);
 * - installs the side paths (an AdapterSet) and, with `merge`, merges them into the weights
 *   when a `fit()` ends (the Trainer's `fitEnd` point).
 *
 * A resume restores A, B (plugin parameters), the gates and the plugin's own state in place,
 * so the installed side paths read the restored values. While merged — by `merge: true` or
 * by hand, `adapter.set.merge()` — the adapter refuses a Trainer checkpoint (it would hold
 * the update twice) and further training (the side paths it would train are off):
 * `adapter.set.unmerge()` first. A plugin's config is checked before anything is made
 * ({@link AdapterBase.check}), and an attach that fails takes back what it made, so a
 * corrected adapter can go on the same model.
 */
import { Type } from '@sinclair/typebox';
import { LiaisonError, type Tensor } from '../../../bridge/index.js';
import { AdapterSet, adapterSites, type AdapterSite, type LowRankFactors } from '../../adapters.js';
import type { ParamSpec, TrainingHooks } from '../../hooks.js';
import type { Model } from '../../model.js';
import { PluginBase } from '../../plugin.js';
import type { Adapter } from './types.js';

/** The config fields every adapter plugin's schema spreads (`Type.Object({ ...AdapterFields, r: … })`). */
export const AdapterFields = {
  targets: Type.String({ minLength: 1, default: '.*', description: "regular expression matched against whole module names: the nn.Linear / nn.Conv*d modules adapted; the model's output layer (its last nn.Linear) only when an alternative names it (e.g. 'head' or 'layers\\\\.0|layers\\\\.2')" }),
  alpha: Type.Optional(Type.Number({ exclusiveMinimum: 0, description: "the update's scale numerator: ΔW = alpha/r · B·A (alpha/√r with rslora); unset: r (√r with rslora), so the scale is 1" })),
  rslora: Type.Boolean({ default: false, description: 'rank-stabilized scale alpha/√r (Kalajdzievski 2023) instead of alpha/r' }),
  seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0, description: "seed of the factors' random init (with the module's position, it fixes each module's)" }),
  merge: Type.Boolean({ default: false, description: 'merge the trained update into the weights when a fit() ends (W += scale·B·diag(gate)·A; side paths removed); false: kept apart, as side paths' }),
};

/** What {@link AdapterFields} holds. */
export interface AdapterBaseConfig {
  targets: string;
  alpha?: number;
  rslora: boolean;
  seed: number;
  merge: boolean;
}

/** The shapes of one module's factors of rank r: A (r, in, …kernel), B (out, r, 1 per kernel dim). */
export function factorShapes(site: AdapterSite, r: number): { A: number[]; B: number[] } {
  return { A: [r, site.in, ...site.kernel], B: [site.out, r, ...site.kernel.map(() => 1)] };
}

/** fan_in of A's rows: in · ∏kernel. */
export const fanIn = (site: AdapterSite): number => site.kernel.reduce((a, k) => a * k, site.in);

/** A module's init seed: modules of one adapter never share one (index < 2^16). */
export const seedOf = (seed: number, index: number): number => seed * 65_537 + index;

/** Whether one of `targets`' top-level `|` alternatives is `name` itself, regex escapes aside. */
export function namesModule(targets: string, name: string): boolean {
  const alternatives: string[] = [];
  let depth = 0, start = 0;
  for (let i = 0; i < targets.length; i++) {
    const c = targets[i];
    if (c === '\\') { i++; continue; }
    if (c === '(' || c === '[') depth++;
    else if (c === ')' || c === ']') depth--;
    else if (c === '|' && depth === 0) { alternatives.push(targets.slice(start, i)); start = i + 1; }
  }
  alternatives.push(targets.slice(start));
  return alternatives.some((a) => a.replace(/^\^|\$$/g, '').replace(/\\(.)/g, '$1') === name);
}

/** The model's output layer: its last nn.Linear (null: it has none). */
export function headOf(model: Model): string | null {
  const linear = model.hookModules.output.filter((m) => model.moduleGeometry[m]?.kind === 'linear');
  return linear.at(-1) ?? null;
}

export abstract class AdapterBase<C extends AdapterBaseConfig = AdapterBaseConfig> extends PluginBase<C> implements Adapter<C> {
  set: AdapterSet | null = null;
  /** The adapted modules, in the model's order (empty before attach). */
  sites: AdapterSite[] = [];
  /** The model's output layer when `targets` matched it without naming it, so it was left out (null: nothing was). */
  excluded: string | null = null;
  /** Tensors this plugin made (gates, ghosts, its state); A and B are the Trainer's. */
  protected owned: Tensor[] = [];
  /** The gates (and ghosts) checkpointed under `adapter.<module>.gate` / `.ghost`. */
  protected held: Record<string, Tensor> = {};

  /** Components module `site` holds (an integer >= 1). */
  protected abstract rankOf(site: AdapterSite): number;

  /** ΔW's fixed scale for a module of rank r: alpha/r, or alpha/√r with rslora; alpha defaults to r (√r with rslora): scale 1. */
  protected scaleOf(r: number): number {
    const alpha = this.config.alpha ?? (this.config.rslora ? Math.sqrt(r) : r);
    return this.config.rslora ? alpha / Math.sqrt(r) : alpha / r;
  }

  /** How A and B start: PEFT's LoRA, A Kaiming-uniform U(±1/√fan_in) seeded per module, B zeros. */
  protected initOf(site: AdapterSite, r: number, index: number): { A: ParamSpec; B: ParamSpec } {
    const shapes = factorShapes(site, r);
    return {
      A: { shape: shapes.A, init: 'uniform', scale: 1 / Math.sqrt(fanIn(site)), seed: seedOf(this.config.seed, index) },
      B: { shape: shapes.B, init: 'zeros' },
    };
  }

  /** The gate (r,) of a module (and a ghost, for plugins with advance learning): ones, held and checkpointed by the base. */
  protected gateOf(site: AdapterSite, r: number, hooks: TrainingHooks, _index: number): { gate: Tensor; ghost?: Tensor } {
    return { gate: this.checkpointed(site, 'gate', hooks.rt.ones([r])) };
  }

  /** Checks the plugin's config against the chosen sites before anything is made (E_ARG naming the field). */
  protected check(_sites: readonly AdapterSite[]): void {}

  /** A plugin joins the loop here, once the side paths are installed (hooks.on, addLoss, addState). */
  protected join(_hooks: TrainingHooks): void | Promise<void> {}

  /** `t` kept and freed by {@link free}. */
  protected hold(t: Tensor): Tensor {
    this.owned.push(t.keep());
    return t;
  }

  /** `t` held, and saved in checkpoints as `adapter.<module>.<key>` (copied back in place on resume). */
  protected checkpointed(site: AdapterSite, key: string, t: Tensor): Tensor {
    this.held[`${site.module}.${key}`] = this.hold(t);
    return t;
  }

  async rankPattern(): Promise<Record<string, number>> {
    return this.attachedSet('rankPattern').rankPattern();
  }

  async parameterCount(): Promise<number> {
    return this.attachedSet('parameterCount').parameterCount();
  }

  protected attachedSet(method: string): AdapterSet {
    if (!this.set) throw new LiaisonError('E_ARG', `${this.id}: ${method}() needs the adapter attached: give it to a Trainer and fit`);
    return this.set;
  }

  async attach(hooks: TrainingHooks): Promise<void> {
    const model = hooks.model as Model;
    if (!model.hookModules?.output || !model.moduleGeometry) throw new LiaisonError('E_ARG', `${this.id}: the model has no output hook points (a Model from Model.build or Model.fromHandle has them)`, { param: 'model' });
    this.free(); // attached again (another Trainer): what it held before goes
    const sites = this.pickSites(model);
    this.check(sites);
    this.sites = sites;
    try {
      await this.build(hooks, model);
    } catch (e) { // the side paths off the model, so a corrected adapter can go on it
      this.free();
      throw e;
    }
  }

  private async build(hooks: TrainingHooks, model: Model): Promise<void> {
    hooks.freeze(model.params.map((p) => p.name));
    this.keepBuffers(hooks, model);
    const factors: Record<string, LowRankFactors> = {};
    for (const [i, site] of this.sites.entries()) {
      const r = this.rankOf(site);
      if (!Number.isInteger(r) || r < 1) throw new LiaisonError('E_ARG', `${this.id}: rankOf('${site.module}') is ${r}; a module's rank must be an integer >= 1`, { param: 'r' });
      const init = this.initOf(site, r, i);
      const A = hooks.addParam(`${site.module}.lora_A`, { ...init.A, module: site.module });
      const B = hooks.addParam(`${site.module}.lora_B`, { ...init.B, module: site.module });
      const { gate, ghost } = this.gateOf(site, r, hooks, i);
      factors[site.module] = { A, B, gate, ...(ghost ? { ghost } : {}), scale: this.scaleOf(r) };
    }
    const set = this.set = new AdapterSet(model, factors);
    // a merge by hand as well as at fitEnd: the next step is traced again and meets the guard below
    const merge = set.merge.bind(set);
    set.merge = async () => { await merge(); hooks.retrace(); };
    set.install();
    hooks.addState('adapter', () => {
      // a checkpoint holds the factors apart: of merged weights, a resume would add the update twice
      if (this.set?.merged) throw new LiaisonError('E_ARG', `${this.id}: its update is merged into the weights, so a Trainer checkpoint would hold it twice; call adapter.set.unmerge() before trainer.save() (or save the merged model with model.save)`, { param: 'merge' });
      return this.held;
    });
    // a fit after a merge would train side paths the forward no longer runs: refused when the step
    // is traced, which every merge asks for (above)
    hooks.on('beforeStep', () => {
      if (this.set?.merged) throw new LiaisonError('E_ARG', `${this.id}: its update is merged into the weights (by adapter.set.merge(), or merge: true when a fit ends); call adapter.set.unmerge() before training again`);
    });
    if (this.config.merge) {
      hooks.on('fitEnd', () => this.set!.merge());
    }
    await this.join(hooks);
  }

  /**
   * The model's buffers put back after every step from copies made at attach (checkpointed,
   * so a resume restores the copies along with the model). Nothing for a model without any.
   */
  private keepBuffers(hooks: TrainingHooks, model: Model): void {
    const params = new Set(model.params.map((p) => p.name));
    const buffers = model.stateInfo.filter((e) => !params.has(e.name)).map((e) => e.name);
    if (!buffers.length) return;
    const state = model.state();
    const kept: Record<string, Tensor> = {};
    const live: Tensor[] = [];
    for (const [name, t] of Object.entries(state)) {
      if (!params.has(name)) { live.push(this.hold(t)); kept[name] = this.hold(t.clone()); } else t.free();
    }
    hooks.addState('adapter-buffers', () => kept);
    hooks.on('afterOptimizerStep', () => { buffers.forEach((name, i) => live[i].copy_(kept[name])); });
  }

  /** The sites `targets` picks, less the head unless named. */
  protected pickSites(model: Model): AdapterSite[] {
    const { targets } = this.config;
    const picked = adapterSites(model, targets);
    const head = headOf(model);
    const sites = picked.filter((s) => s.module !== head || namesModule(targets, head));
    // the root module of an adopted nn.Linear is named '' (matched by '^$')
    const naming = head === '' ? '^$' : head?.replace(/\./g, '\\.');
    if (!sites.length) throw new LiaisonError('E_ARG', `${this.id}: config field 'targets' (${JSON.stringify(targets)}) matches only the model's output layer '${head}', which is adapted only when named (targets: '${naming}')`, { param: 'targets' });
    this.excluded = sites.length < picked.length ? head : null;
    return sites;
  }

  /** Side paths off (a merged update stays in the weights) and what the plugin made dropped. */
  free(): void {
    const set = this.set;
    this.set = null;
    try {
      set?.free(); // the side paths off; a merged update stays in the weights
    } catch (e) { // the model was freed first: its hooks went with it
      if (!(e instanceof LiaisonError && e.code === 'E_HANDLE')) throw e;
    }
    for (const t of this.owned) t.free();
    this.owned = [];
    this.held = {};
    this.sites = [];
    this.excluded = null;
  }
}
