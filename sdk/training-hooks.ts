/**
 * The loop's side of sdk/hooks.ts: what plugins attached, by point, in the order they
 * attached. A TrainingLoop (sdk/loop.ts; the Trainer's) traces the traced points into its
 * step programs (sdk/loop-step.ts) and awaits the loop points; plugins see only the
 * {@link TrainingHooks} surface, one view per plugin ({@link HookRegistry.forPlugin}).
 *
 * Names are per plugin. Two plugins of one kind (two pruners) ask for the same state
 * prefix (`pruner`) and loss name; the first plugin in the loop's list to ask keeps the
 * name as it asked, and a later one at position i (from 0) gets `<name>#<i>`: checkpoint
 * entries `pruner.layers.0.weight` and `pruner#1.layers.2.weight`. The list is the same
 * on resume (checked), so the names are too. One plugin asking twice for a name is an error.
 */
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import {
  LOOP_POINTS, type LoopInfo, type LoopPoint, type ModelLike, type ParamControl, type ParamSpec, type ParamView, type Selector, type StepTrace, TRACED_POINTS, type TracedPoint,
  type TrainingHooks,
} from './hooks.js';

type TracedFn = (t: StepTrace) => void;
type LoopFn = (info: LoopInfo) => Promise<void> | void;

/** Hooks collected from plugins' `attach()`. */
export class HookRegistry implements TrainingHooks {
  readonly traced: Record<TracedPoint, TracedFn[]> = { beforeStep: [], afterBackward: [], afterOptimizerStep: [] };
  readonly loop: Record<LoopPoint, LoopFn[]> = { epochEnd: [], evaluation: [], fitEnd: [] };
  /** Extra loss terms, added to the training loss in this order; `owner` is the plugin's position (-1: added directly). */
  readonly losses: { name: string; owner: number; fn: (t: StepTrace) => Tensor }[] = [];
  /** Metrics reported with the loss (sdk/trainer-metrics.ts), in this order; `owner` as for losses. */
  readonly metrics: { name: string; owner: number; fn: (t: StepTrace) => Tensor }[] = [];
  /** Checkpointed tensors, saved as `prefix.key` (the prefix as made unique here). */
  readonly states: { prefix: string; owner: number; fn: () => Record<string, Tensor> }[] = [];
  /**
   * Set by retrace() and by every traced hook, loss term or metric added: a step program
   * traced before must be traced again before its next run. A loop with several step
   * programs reads {@link version} instead (each compares it with the one it traced for).
   */
  stale = false;
  private changes = 0;

  /** Bumped whenever {@link stale} is set: what a step program was traced for (sdk/loop-step.ts). */
  get version(): number {
    return this.changes;
  }

  private touch(): void {
    this.stale = true;
    this.changes++;
  }

  /** Plugin parameter names as given out, with their owners (unique as loss names are). */
  private readonly paramNames: { name: string; owner: number }[] = [];

  /** `control`: the Trainer's parameters and snapshots (sdk/trainer-params.ts, sdk/snapshots.ts). */
  constructor(readonly rt: Runtime, readonly model: ModelLike, private readonly control?: ParamControl) {}

  private ctl(method: string): ParamControl {
    if (!this.control) throw new LiaisonError('E_ARG', `hooks.${method}: these hooks have no Trainer behind them (parameters and snapshots are a Trainer's)`, { param: 'hooks' });
    return this.control;
  }

  /** Add a plugin parameter; `owner` as for {@link addLoss}. */
  addParam(name: string, spec: ParamSpec, owner = -1): Tensor {
    if (typeof name !== 'string' || !name || /[/#]/.test(name)) throw new LiaisonError('E_ARG', `hooks.addParam: name must be a non-empty name without '/' or '#', got ${JSON.stringify(name)}`, { param: 'name' });
    if (spec === null || typeof spec !== 'object') throw new LiaisonError('E_ARG', `hooks.addParam('${name}'): spec must be {shape, init?, module?, trainable?}, got ${JSON.stringify(spec)}`, { param: 'spec' });
    const own = unique('addParam', 'a parameter named', name, owner, this.paramNames);
    const t = this.ctl('addParam').addParam(own, spec);
    this.paramNames.push({ name: own, owner });
    return t;
  }

  on(point: TracedPoint, fn: TracedFn): void;
  on(point: LoopPoint, fn: LoopFn): void;
  on(point: TracedPoint | LoopPoint, fn: TracedFn | LoopFn): void {
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `hooks.on('${point}'): the hook must be a function`, { param: 'fn' });
    if ((TRACED_POINTS as readonly string[]).includes(point)) {
      this.traced[point as TracedPoint].push(fn as TracedFn);
      this.touch(); // a program traced before this hook does not run it
    } else if ((LOOP_POINTS as readonly string[]).includes(point)) {
      this.loop[point as LoopPoint].push(fn as LoopFn);
    } else {
      throw new LiaisonError('E_ARG', `hooks.on: no hook point '${String(point)}'; there are ${[...TRACED_POINTS, ...LOOP_POINTS].join(', ')}`, { param: 'point' });
    }
  }

  /** Add a loss term; `owner` is the plugin's position in the Trainer's list (see the file's comment on names). */
  addLoss(name: string, fn: (t: StepTrace) => Tensor, owner = -1): void {
    if (typeof name !== 'string' || !name) throw new LiaisonError('E_ARG', `hooks.addLoss: name must be a non-empty string, got ${JSON.stringify(name)}`, { param: 'name' });
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `hooks.addLoss('${name}'): the loss must be a function`, { param: 'fn' });
    this.losses.push({ name: unique('addLoss', 'a loss named', name, owner, this.losses.map((l) => ({ name: l.name, owner: l.owner }))), owner, fn });
    this.touch();
  }

  /** Add a metric; names as for {@link addLoss}. */
  addMetric(name: string, fn: (t: StepTrace) => Tensor, owner = -1): void {
    if (typeof name !== 'string' || !name) throw new LiaisonError('E_ARG', `hooks.addMetric: name must be a non-empty string, got ${JSON.stringify(name)}`, { param: 'name' });
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `hooks.addMetric('${name}'): the metric must be a function of the step returning a tensor`, { param: 'fn' });
    this.metrics.push({ name: unique('addMetric', 'a metric named', name, owner, this.metrics.map((m) => ({ name: m.name, owner: m.owner }))), owner, fn });
    this.touch();
  }

  /** Add checkpointed state; `owner` as for {@link addLoss}. */
  addState(prefix: string, fn: () => Record<string, Tensor>, owner = -1): void {
    if (typeof prefix !== 'string' || !prefix || /[/]/.test(prefix)) throw new LiaisonError('E_ARG', `hooks.addState: prefix must be a non-empty name without '/', got ${JSON.stringify(prefix)}`, { param: 'prefix' });
    if (prefix === 'optimizer') throw new LiaisonError('E_ARG', "hooks.addState: the prefix 'optimizer' is the optimizer's; choose another", { param: 'prefix' });
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `hooks.addState('${prefix}'): the state must be a function returning tensors by key`, { param: 'fn' });
    this.states.push({ prefix: unique('addState', 'the prefix', prefix, owner, this.states.map((s) => ({ name: s.prefix, owner: s.owner }))), owner, fn });
  }

  /** The hooks plugin number `index` of the Trainer's list attaches through: names it adds are its own. */
  forPlugin(index: number): TrainingHooks {
    const self = this; // eslint-disable-line @typescript-eslint/no-this-alias -- the getter's own `this` is the view
    return {
      rt: this.rt,
      model: this.model,
      on: (point: TracedPoint | LoopPoint, fn: TracedFn | LoopFn) => this.on(point as TracedPoint, fn as TracedFn),
      addLoss: (name, fn) => this.addLoss(name, fn, index),
      addMetric: (name, fn) => this.addMetric(name, fn, index),
      addState: (prefix, fn) => this.addState(prefix, fn, index),
      retrace: () => this.retrace(),
      addParam: (name, spec) => this.addParam(name, spec, index),
      freeze: (sel) => this.ctl('freeze').freeze(sel),
      unfreeze: (sel) => this.ctl('unfreeze').unfreeze(sel),
      params: () => this.ctl('params').params(),
      get step() { return self.ctl('step').step; },
      optimizerState: (name) => this.ctl('optimizerState').optimizerState(name),
      snapshot: (name, opts) => this.ctl('snapshot').snapshot(name, opts),
      rewind: (name, sel, opts) => this.ctl('rewind').rewind(name, sel, opts),
      resetOptimizer: (sel) => this.ctl('resetOptimizer').resetOptimizer(sel),
    };
  }

  retrace(): void {
    this.touch();
  }

  freeze(sel: Selector): string[] { return this.ctl('freeze').freeze(sel); }
  unfreeze(sel: Selector): string[] { return this.ctl('unfreeze').unfreeze(sel); }
  params(): ParamView[] { return this.ctl('params').params(); }
  get step(): number { return this.ctl('step').step; }
  optimizerState(name: string): Readonly<Record<string, Tensor>> { return this.ctl('optimizerState').optimizerState(name); }
  snapshot(name: string, opts?: { at?: number }): void { this.ctl('snapshot').snapshot(name, opts); }
  rewind(name: string, sel?: Selector, opts?: { keepZeros?: boolean }): void { this.ctl('rewind').rewind(name, sel, opts); }
  resetOptimizer(sel?: Selector): void { this.ctl('resetOptimizer').resetOptimizer(sel); }

  /** Run every hook at a loop point, in attach order, waiting for each. */
  async runLoop(point: LoopPoint, info: LoopInfo): Promise<void> {
    for (const fn of this.loop[point]) await fn(info);
  }

  /** The state tensors of every plugin, as checkpoint names `prefix.key`. */
  stateTensors(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const { prefix, fn } of this.states) {
      for (const [k, t] of Object.entries(fn())) out[`${prefix}.${k}`] = t;
    }
    return out;
  }
}

/**
 * `name` as plugin `owner` gets it: as asked when free, `name#owner` when an earlier plugin
 * holds it. Taken by the same owner (or by anyone, for an owner of -1): E_ARG.
 */
function unique(method: string, what: string, name: string, owner: number, taken: { name: string; owner: number }[]): string {
  const holder = taken.find((t) => t.name === name);
  if (!holder) return name;
  const refuse = () => new LiaisonError('E_ARG', `hooks.${method}: ${what} '${name}' is already added${owner >= 0 && holder.owner === owner ? ' by this plugin' : ''}`, { param: method === 'addState' ? 'prefix' : 'name' });
  if (owner < 0 || holder.owner === owner) throw refuse();
  const own = `${name}#${owner}`;
  if (taken.some((t) => t.name === own)) throw refuse();
  return own;
}
