/**
 * The parameters a Trainer optimizes and the optimizer's state of each (sdk/trainer.ts):
 * the model's own, and those plugins declare (`hooks.addParam`: a pruner's scores, an
 * adapter's factors), each trainable or frozen.
 *
 * - Trainable: `requires_grad`, a gradient every step, updated by the optimizer.
 * - Frozen: no gradient (`requires_grad` false, so backward skips its work), not updated;
 *   its value stays bit for bit. Its optimizer state is KEPT, not updated: unfrozen, it goes
 *   on from that state. Only `resetOptimizer()` replaces state.
 * - A parameter that has never been trainable has no state; when it first becomes
 *   trainable (it joins: at round k, or declared mid-run), the optimizer's `init()` makes
 *   fresh state for it, and the state of every other parameter is untouched.
 *
 * A parameter whose state was made after step 0 (it joined, or its state was reset) counts
 * its own steps from there: `hp.step` of its update is 1 at its first step, as for a fresh
 * optimizer (Adam's bias correction, heavy-ball's first step). That count is a () tensor
 * captured by the step program, so a later reset only refills it.
 *
 * The step program captures the trainable set; `version` changes when the set changes (a
 * join, a freeze, a parameter declared, a first own step count), and the Trainer traces
 * its step again then — and only then.
 */
import { LiaisonError, type Runtime, Tensor } from '../bridge/index.js';
import { type ParamsRecord, optimizerKey, pluginRecord } from './checkpoint.js';
import type { MomentumOptimizer } from './families/momentum/types.js';
import type { ParamInfo, ParamSpec, ParamView, Selector } from './hooks.js';
import type { Model } from './model.js';

/** One parameter the Trainer may optimize. */
export interface ParamEntry {
  info: ParamInfo;
  /** The tensor itself (kept): the model's parameter, or the plugin's leaf. */
  param: Tensor;
  /** Added by a plugin (false: the model's own). */
  plugin: boolean;
  /** The module it belongs to (a plugin parameter's `module`; a model parameter's prefix). */
  module: string;
  trainable: boolean;
  /** The optimizer's state (kept); null: never trainable yet. */
  state: Record<string, Tensor> | null;
  /** Steps done when its state was made (0: at the start). */
  started: number;
  /** () f32 `started`, captured by the step program once `started` > 0. */
  offset: Tensor | null;
}

// What a checkpoint's metadata records of the parameter set: declared in checkpoint.ts,
// which must not import this module back (test/import-graph.test.ts).
export type { ParamsRecord } from './checkpoint.js';

/** The checkpoint name of a plugin parameter. */
export const paramKey = (name: string): string => `param/${name}`;

/** The names `sel` picks among `names`; a selector that picks none is an E_ARG listing the names. */
export function select(sel: Selector | undefined, names: readonly string[], what: string): string[] {
  if (sel === undefined) return [...names];
  const one = (s: string | RegExp): string[] => {
    if (s instanceof RegExp) return names.filter((n) => s.test(n));
    if (typeof s !== 'string' || !s) throw new LiaisonError('E_ARG', `${what}: a parameter selector must be a name, a glob ('layers.*.weight') or a RegExp, got ${JSON.stringify(s)}`, { param: 'params' });
    if (!s.includes('*')) return names.includes(s) ? [s] : [];
    const re = new RegExp(`^${s.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
    return names.filter((n) => re.test(n));
  };
  const picked = new Set<string>();
  for (const s of Array.isArray(sel) ? sel : [sel]) {
    const got = one(s);
    if (!got.length) throw new LiaisonError('E_ARG', `${what}: ${String(s)} matches no parameter; there are ${names.slice(0, 20).join(', ')}${names.length > 20 ? ', …' : ''}`, { param: 'params' });
    for (const n of got) picked.add(n);
  }
  return names.filter((n) => picked.has(n));
}

/** The parameter set of one Trainer. */
export class ParamSet {
  /** Changes whenever the trainable set (or what the step program captures of it) changes. */
  version = 0;
  private readonly entries = new Map<string, ParamEntry>();
  /**
   * Step-count offsets by start step, shared: the step program groups parameters by their
   * offset, so those whose state (re)started at one step — a `resetOptimizer()` of them all —
   * still update side by side in one multi-tensor group.
   */
  private readonly offsets = new Map<number, Tensor>();
  private made = false;

  constructor(private readonly rt: Runtime, private readonly model: Model, private readonly optimizer: MomentumOptimizer, private readonly steps: () => number) {}

  /** Every entry, the model's first (named_parameters() order), then the plugins' in declaration order. */
  all(): ParamEntry[] {
    this.ensure();
    return [...this.entries.values()];
  }

  names(): string[] {
    return this.all().map((e) => e.info.name);
  }

  /** The entries the optimizer updates. */
  trainable(): ParamEntry[] {
    return this.all().filter((e) => e.trainable);
  }

  get(name: string, what: string): ParamEntry {
    this.ensure();
    const e = this.entries.get(name);
    if (!e) throw new LiaisonError('E_ARG', `${what}: no parameter '${name}'; there are ${this.names().slice(0, 20).join(', ')}`, { param: 'name' });
    return e;
  }

  /** The model's parameters and their state, made on first need (kept: they live as long as the Trainer). */
  private ensure(): void {
    if (this.made) return;
    this.made = true;
    for (const info of this.model.params) {
      const param = this.model.param(info.name).keep();
      const module = info.name.includes('.') ? info.name.slice(0, info.name.lastIndexOf('.')) : '';
      const e: ParamEntry = { info, param, plugin: false, module, trainable: true, state: null, started: 0, offset: null };
      this.entries.set(info.name, e);
      e.state = this.freshState(e);
    }
  }

  /** A plugin's parameter: a new leaf, trainable (requires_grad) unless `spec.trainable` is false. */
  declare(spec: ParamSpec, name: string): Tensor {
    this.ensure();
    const what = `hooks.addParam('${name}')`;
    if (this.entries.has(name)) throw new LiaisonError('E_ARG', `${what}: a parameter named '${name}' exists already (the model's, or one added before)`, { param: 'name' });
    const shape = spec.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) throw new LiaisonError('E_ARG', `${what}: shape must be a list of integers >= 0, got ${JSON.stringify(shape)}`, { param: 'shape' });
    const param = this.initial(spec, what).keep();
    const numel = shape.reduce((a, b) => a * b, 1);
    const e: ParamEntry = {
      info: Object.freeze({ name, shape: [...shape], dtype: 'f32', numel }), param, plugin: true,
      module: spec.module ?? '', trainable: false, state: null, started: 0, offset: null,
    };
    this.entries.set(name, e);
    this.rt.call('set_requires_grad', [param], { flag: false }, 0);
    if (spec.trainable ?? true) this.setTrainable([name], true);
    return param;
  }

  private initial(spec: ParamSpec, what: string): Tensor {
    const { rt } = this;
    const init = spec.init ?? 'zeros';
    if (init instanceof Tensor) return init.to('f32').reshape(spec.shape);
    const seed = spec.seed === undefined ? {} : { seed: spec.seed };
    switch (init) {
      case 'zeros': return rt.zeros(spec.shape);
      case 'ones': return rt.ones(spec.shape);
      case 'normal': return rt.randn(spec.shape, seed).mul(spec.scale ?? 1);
      case 'uniform': return rt.rand(spec.shape, seed).mul(2).sub(1).mul(spec.scale ?? 1);
      default: throw new LiaisonError('E_ARG', `${what}: init must be 'zeros', 'ones', 'normal', 'uniform' or a tensor, got ${JSON.stringify(init)}`, { param: 'init' });
    }
  }

  /**
   * Make these parameters trainable (true) or frozen (false). A frozen one keeps its value
   * and its optimizer state; one that joins without state gets fresh state. Returns the
   * names whose flag changed (none: nothing to trace again).
   */
  setTrainable(names: readonly string[], flag: boolean): string[] {
    const changed = names.map((n) => this.get(n, flag ? 'unfreeze' : 'freeze')).filter((e) => e.trainable !== flag);
    for (const e of changed) {
      e.trainable = flag;
      this.rt.call('set_requires_grad', [e.param], { flag }, 0);
      if (flag && !e.state) e.state = this.freshState(e);
    }
    if (changed.length) this.version++;
    return changed.map((e) => e.info.name);
  }

  /**
   * Fresh optimizer state for these parameters, counting their steps from now: written into
   * the state tensors they have (the program keeps its captures); one that has none (never
   * trainable) gets it when it joins.
   */
  resetState(names: readonly string[]): void {
    const scratch: Tensor[] = [];
    for (const n of names) {
      const e = this.get(n, 'resetOptimizer');
      if (!e.state) continue;
      const fresh = this.optimizer.init(e.param, e.info, this.rt) ?? {};
      for (const [k, t] of Object.entries(e.state)) {
        if (!(fresh[k] instanceof Tensor)) throw new LiaisonError('E_ARG', `${pluginRecord(this.optimizer).id}: init() for '${n}' returned no state '${k}' on reset`, { param: 'optimizer' });
        t.copy_(fresh[k]);
      }
      scratch.push(...Object.values(fresh));
      this.startAt(e, this.steps());
    }
    for (const t of scratch) t.free();
  }

  /** `e` counts its steps from `step` on: the offset shared by every parameter started then (a change is retraced). */
  startAt(e: ParamEntry, step: number): void {
    e.started = step;
    let next: Tensor | null = null;
    if (step !== 0) {
      next = this.offsets.get(step) ?? this.rt.full([], step).keep();
      this.offsets.set(step, next);
    }
    if (next === e.offset) return;
    e.offset = next;
    this.version++;
    // an offset no parameter counts from any more: the program that captured it holds its own reference
    const used = new Set([e.offset, ...[...this.entries.values()].map((x) => x.offset)]);
    for (const [at, t] of this.offsets) if (!used.has(t)) { t.free(); this.offsets.delete(at); }
  }

  /** Fresh state from the optimizer's init(), kept, counting steps from now. */
  freshState(e: ParamEntry): Record<string, Tensor> {
    const state = this.optimizer.init(e.param, e.info, this.rt) ?? {};
    for (const [k, t] of Object.entries(state)) {
      if (!(t instanceof Tensor)) throw new LiaisonError('E_ARG', `${pluginRecord(this.optimizer).id}: init() returned state '${k}' for '${e.info.name}' that is not a tensor`, { param: 'optimizer' });
      t.keep();
    }
    if (this.made && this.steps() > 0) this.startAt(e, this.steps());
    return state;
  }

  /** The gradient of a trainable entry, as the step program reads it. */
  grad(e: ParamEntry): Tensor {
    return !e.plugin ? this.model.grad(e.info.name) : (this.rt.call('grad_of', [e.param]) as Tensor);
  }

  /** The plugin parameters that need their gradients dropped before a step's backward. */
  pluginTrainable(): Tensor[] {
    return this.trainable().filter((e) => e.plugin).map((e) => e.param);
  }

  /** The optimizer's state tensors under their checkpoint names (`optimizer/<param>/<key>`). */
  stateTensors(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const e of this.all()) for (const [k, t] of Object.entries(e.state ?? {})) out[optimizerKey(e.info.name, k)] = t;
    return out;
  }

  /** The plugin parameters under their checkpoint names (`param/<name>`). */
  pluginTensors(): Record<string, Tensor> {
    return Object.fromEntries(this.all().filter((e) => e.plugin).map((e) => [paramKey(e.info.name), e.param]));
  }

  record(): ParamsRecord {
    const all = this.all();
    return {
      frozen: all.filter((e) => !e.trainable).map((e) => e.info.name),
      stateful: all.filter((e) => e.state).map((e) => e.info.name),
      started: Object.fromEntries(all.filter((e) => e.started > 0).map((e) => [e.info.name, e.started])),
      plugin: all.filter((e) => e.plugin).map((e) => e.info.name),
    };
  }

  /** A read-only description of each parameter, for plugins. */
  views(): ParamView[] {
    return this.all().map((e) => Object.freeze({ name: e.info.name, shape: e.info.shape, module: e.module, trainable: e.trainable, plugin: e.plugin, hasState: !!e.state }));
  }

  /** Drop every handle this set holds. */
  free(): void {
    for (const e of this.entries.values()) {
      e.param.free();
      for (const t of Object.values(e.state ?? {})) t.free();
    }
    for (const t of this.offsets.values()) t.free();
    this.offsets.clear();
    this.entries.clear();
  }

  /**
   * What a resume writes into the set, made but not installed: targets (existing state and
   * parameters, and fresh state where the file has state this set lacks) to check and copy
   * into, then `commit()` (frozen flags, state sets, step counts) or `discard()`.
   */
  planRestore(r: ParamsRecord | undefined, path: string): { targets: Record<string, Tensor>; commit(): void; discard(): void } {
    const all = this.all();
    const rec: ParamsRecord = r ?? { frozen: [], stateful: all.filter((e) => !e.plugin).map((e) => e.info.name), started: {}, plugin: [] };
    const names = new Set(all.map((e) => e.info.name));
    const unknown = [...rec.frozen, ...rec.stateful, ...Object.keys(rec.started)].filter((n) => !names.has(n));
    if (unknown.length) throw new LiaisonError('E_ARG', `resume: ${path} records parameters this Trainer does not have: ${[...new Set(unknown)].join(', ')} (a plugin that declares them is missing, or declares them under other names)`, { param: 'path' });
    const fresh = new Map<ParamEntry, Record<string, Tensor>>();
    const targets: Record<string, Tensor> = {};
    for (const e of all) {
      if (e.plugin) targets[paramKey(e.info.name)] = e.param;
      if (!rec.stateful.includes(e.info.name)) continue;
      let state = e.state;
      if (!state) {
        state = Object.fromEntries(Object.entries(this.optimizer.init(e.param, e.info, this.rt) ?? {}).map(([k, t]) => [k, t.keep()]));
        fresh.set(e, state);
      }
      for (const [k, t] of Object.entries(state)) targets[optimizerKey(e.info.name, k)] = t;
    }
    return {
      targets,
      discard: () => { for (const s of fresh.values()) for (const t of Object.values(s)) t.free(); },
      commit: () => {
        for (const e of all) {
          const stateful = rec.stateful.includes(e.info.name);
          if (!stateful && e.state) { for (const t of Object.values(e.state)) t.free(); e.state = null; }
          if (fresh.has(e)) e.state = fresh.get(e)!;
          const trainable = !rec.frozen.includes(e.info.name);
          if (trainable !== e.trainable) { e.trainable = trainable; this.rt.call('set_requires_grad', [e.param], { flag: trainable }, 0); }
          this.startAt(e, rec.started[e.info.name] ?? 0);
        }
        this.version++;
      },
    };
  }
}
