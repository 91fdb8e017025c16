/**
 * One training step of a {@link TrainingLoop} (sdk/loop.ts), traced once into a program the
 * runtime replays (sdk/program.ts). The caller writes the forward pass and the loss; the
 * step puts the plugins' hook points around it:
 *
 * ```
 * inputs (the spec's placeholders) + lr ()          (the step number is the program's own state)
 *   → beforeStep hooks → zero_grad → spec.loss(inputs, t) + every addLoss term → every addMetric (no grad)
 *   → the loss's finiteness check → backward → afterBackward hooks
 *   → the optimizer's update() per trainable parameter (side by side: traceEach) → afterOptimizerStep hooks
 * output: the loss (and the plugins' metrics)
 * ```
 *
 * The program is traced again before a run when a plugin asked (`hooks.retrace()`, a hook
 * added) or the trainable set changed (a freeze, a parameter joining) — and only then.
 * Several steps may share one loop (a GAN's two updates, a distillation and a plain step):
 * each keeps its own step count in step with the loop's, set again (one op) when another
 * step ran in between.
 */
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { traceUpdate } from './families/momentum/base.js';
import type { MomentumOptimizer } from './families/momentum/types.js';
import type { StepTrace } from './hooks.js';
import type { Model } from './model.js';
import { dataParallel } from './data-parallel.js';
import { guardLoss, maskedUpdate, type NonFiniteMode } from './nonfinite.js';
import { define, noGrad, type PlaceholderSpec, type Placeholders, type Program, traceEach, type TensorsOf } from './program.js';
import type { ParamEntry, ParamSet } from './trainer-params.js';
import type { HookRegistry } from './training-hooks.js';

/** What a step computes before the plugins' part: its inputs and its loss. */
export interface StepSpec<I extends Placeholders = Placeholders> {
  /** The program's name, shown in errors (default `'train-step'`). */
  name?: string;
  /**
   * Placeholders of what each run is given (`{ x: {}, y: {} }`; a shape is optional and
   * checked at every run). The loop adds `lr` after them; no input may be called `lr`.
   * None: the step draws its own data (a text sampler's `draw()` inside `loss`).
   */
  inputs?: I;
  /**
   * Traced once, after the `beforeStep` hooks and zero_grad: the forward pass in training
   * mode and the () loss, e.g. `({ x, y }, t) => lossOf('cross_entropy', t.model.forward(x, { train: true }), y, 1)`.
   * Other models may be used (a teacher's forward, inside `noGrad(rt, …)`); only the loop's
   * parameters are optimized. Queued ops only: nothing read, nothing awaited.
   */
  loss: (inputs: TensorsOf<keyof I>, t: StepTrace) => Tensor;
}

/** What one run of a step queued: handles to its results (the caller frees them). */
export interface StepOutput {
  /** The step's number: steps done by the loop, this one included. */
  step: number;
  /** The learning rate the optimizer's schedule gave this step. */
  lr: number;
  /** () f32: the training loss, the plugins' `addLoss` terms included. */
  loss: Tensor;
  /** The plugins' `addMetric` values, by the names they got. */
  metrics: Record<string, Tensor>;
}

/** What a step needs of its loop (sdk/loop.ts implements it). */
export interface StepHost {
  readonly rt: Runtime;
  readonly model: Model;
  readonly optimizer: MomentumOptimizer;
  readonly nonFinite: NonFiniteMode;
  readonly hooks: HookRegistry;
  readonly params: ParamSet;
  /** Steps done (queued). */
  step: number;
  /** The () rate tensor for step `step` (kept by the loop; the same one while the rate stays). */
  rate(step: number): { lr: number; t: Tensor };
  /** Throws unless a step may run now (the loop is live, its plugins attached). */
  check(): void;
  /** Called right behind each step's run (snapshots due then). */
  after(step: number): void;
  /** One step queued: send a group when one is full, waiting while too many are in flight. */
  pace(): Promise<void>;
  /** The step forgets itself when freed. */
  release(step: TrainStep<never>): void;
}

/** A traced training step: `run()` queues one replay (sdk/loop.ts paces them). */
export class TrainStep<I extends Placeholders = Placeholders> {
  private program: Program | null = null;
  /** The hook registry's and the parameter set's versions the program was traced for. */
  private tracedFor = { hooks: -1, params: -1 };
  /** The loop's step count the program's own counter matches. */
  private synced = -1;
  private freed = false;
  private readonly inputNames: string[];

  /** @internal made by `TrainingLoop.stepProgram` */
  constructor(private readonly host: StepHost, readonly spec: StepSpec<I>) {
    if (typeof spec?.loss !== 'function') throw new LiaisonError('E_ARG', 'stepProgram: spec.loss must be a function (inputs, t) => the () loss tensor', { param: 'loss' });
    this.inputNames = Object.keys(spec.inputs ?? {});
    if (this.inputNames.includes('lr')) throw new LiaisonError('E_ARG', "stepProgram: an input may not be called 'lr' (the loop passes the learning rate as 'lr')", { param: 'inputs' });
  }

  /** Whether the next run traces the program first (a plugin asked, or the trainable set changed). */
  get stale(): boolean {
    return !this.program || this.tracedFor.hooks !== this.host.hooks.version || this.tracedFor.params !== this.host.params.version;
  }

  /**
   * Queue one step: counts it, asks the optimizer for its rate, replays the program (traced
   * first when stale) and takes the snapshots due behind it. Nothing is sent or awaited:
   * `TrainingLoop.run` / `sync` pace the steps.
   */
  queue(inputs: TensorsOf<keyof I> = {} as TensorsOf<keyof I>): StepOutput {
    if (this.freed) throw new LiaisonError('E_ARG', `step '${this.name}': free() was called on it; make a new one with loop.stepProgram()`);
    const missing = this.inputNames.filter((k) => !(inputs as Record<string, Tensor>)?.[k]);
    if (missing.length) throw new LiaisonError('E_ARG', `step '${this.name}': run() needs input ${missing.map((k) => `'${k}'`).join(', ')} (the spec's inputs are ${this.inputNames.join(', ') || 'none'})`, { param: 'inputs' });
    const h = this.host;
    h.check();
    const step = h.step + 1;
    const { lr, t } = h.rate(step); // a bad rate throws before anything is counted or queued
    const program = this.current();
    if (this.synced !== h.step) {
      // another step of the loop ran (or the loop was resumed): count on from the loop's steps
      const s = program.state('step');
      const v = h.rt.full([], h.step);
      for (const x of [h.rt.call('copy_', [s, v]) as Tensor, s, v]) x.free();
    }
    const out = program.run({ ...(inputs as Record<string, Tensor>), lr: t } as never) as Tensor | Tensor[];
    h.step = this.synced = step;
    const [loss, ...values] = Array.isArray(out) ? out : [out];
    h.after(step);
    return { step, lr, loss, metrics: Object.fromEntries(h.hooks.metrics.map((m, i) => [m.name, values[i]])) };
  }

  /**
   * Queue one step ({@link queue}) and pace: every `inFlight / 2` steps the queued ones go
   * out as one batch, and at most `inFlight` are unconfirmed, so the runtime always has
   * work while this side prepares the next. The results are handles: read them when needed
   * (`await out.loss.item()`; a read every step costs a round trip each). A step that
   * failed in the runtime (E_NONFINITE, …) throws here or at the loop's next `sync()`.
   */
  async run(inputs?: TensorsOf<keyof I>): Promise<StepOutput> {
    const out = this.queue(inputs);
    await this.host.pace();
    return out;
  }

  get name(): string {
    return this.spec.name ?? 'train-step';
  }

  /** The program, traced again when stale. */
  private current(): Program {
    if (!this.stale) return this.program!;
    this.program?.free();
    const h = this.host;
    this.tracedFor = { hooks: h.hooks.version, params: h.params.version };
    this.program = traceStep(h, this.spec, this.name);
    this.synced = h.step;
    return this.program;
  }

  /** Drop the program (the loop's parameters, state and plugins stay). */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.program?.free();
    this.program = null;
    this.host.release(this as unknown as TrainStep<never>);
  }
}

/** Trace the step (see the file's comment); the program's step counter starts at the loop's steps. */
function traceStep<I extends Placeholders>(h: StepHost, spec: StepSpec<I>, name: string): Program {
  const { rt, model, hooks, optimizer, params } = h;
  const lr: PlaceholderSpec = { dtype: 'f32', shape: [] };
  const inputs: Placeholders = { ...(spec.inputs ?? {}), lr };
  // The step number is state of the program (counted there, one op fewer per step).
  // Defined, not awaited: the definition goes out in the first step's batch.
  const state = { step: rt.full([], h.step) };
  // the first step whose loss was not finite, set by check_finite (sdk/nonfinite.ts); captured
  const halt = rt.zeros([], 'i64');
  const dp = dataParallel(rt);
  const whole = Object.keys(inputs).filter((k) => inputs[k].shape?.length === 0); // lr and other () inputs are not sharded
  const program = define(rt, { name, inputs, state }, (ins: Record<string, Tensor>, st) => {
    st.step = st.step.add(1);
    // `finite` is known once the loss is guarded; under 'error' it is made only when a hook reads it
    let finite: Tensor | null = null;
    let guarded: (() => Tensor) | null = null;
    const t: StepTrace = {
      rt, model, lr: ins.lr, step: st.step,
      get finite(): Tensor {
        if (!guarded) throw new LiaisonError('E_ARG', 'StepTrace.finite: whether the step is applied is known once the loss is; read it at afterBackward or afterOptimizerStep, not at beforeStep or in a loss term', { param: 'finite' });
        return (finite ??= guarded());
      },
    };
    for (const fn of hooks.traced.beforeStep) fn(t);
    rt.call('zero_grad', [model.handle], undefined, 0);
    const own = params.pluginTrainable();
    if (own.length) rt.call('clear_grads', [own], undefined, 0);
    // on a runtime group: this rank's rows of the batch, its loss weighted by their share (sdk/data-parallel.ts)
    const part = dp?.shard(ins, whole);
    let local = spec.loss((part?.inputs ?? ins) as TensorsOf<keyof I>, t);
    for (const l of hooks.losses) local = local.add(l.fn(t));
    // metrics see the step's forward and loss; read, not trained through
    const metrics = noGrad(rt, () => hooks.metrics.map((m) => m.fn(t)));
    if (part) local = dp!.local(local, part.weight);
    const first = part ? null : guardLoss(rt, h.nonFinite, local, st.step, halt);
    rt.call('backward', [local], undefined, 0);
    // on a group: the gradients and the loss summed over the ranks in one collective, before any hook
    // sees them; the global loss is guarded then (after backward, still before any update)
    const loss = part ? dp!.reduce(local, params.trainable().map((e) => params.grad(e))) : local;
    const ok = part ? guardLoss(rt, h.nonFinite, loss, st.step, halt) : first;
    guarded = () => ok ?? (rt.call('isfinite', [loss]) as Tensor);
    for (const fn of hooks.traced.afterBackward) fn(t);
    noGrad(rt, () => {
      // parameters whose state was made after step 0 count their own steps (sdk/trainer-params.ts)
      const groups = new Map<Tensor | null, ParamEntry[]>();
      for (const e of params.trainable()) groups.set(e.offset, [...(groups.get(e.offset) ?? []), e]);
      for (const [offset, group] of groups) {
        const hp = { lr: ins.lr, step: offset ? t.step.sub(offset) : t.step };
        const prepared = optimizer.prepare?.(hp); // shared by every parameter's update()
        // one computation per parameter: the runtime may run them side by side (multi-tensor ops)
        traceEach(rt, group, (s) => maskedUpdate(rt, ok, [s.param, ...Object.values(s.state!)], () => traceUpdate(optimizer, s.info.name, s.param, params.grad(s), s.state!, hp, prepared)));
      }
      for (const fn of hooks.traced.afterOptimizerStep) fn(t);
    });
    return metrics.length ? [loss, ...metrics] : loss;
  });
  state.step.free(); // the program holds its own references
  halt.free();
  return program;
}
