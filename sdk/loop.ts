/**
 * The parts the Trainer is made of, public: a loop of one's own with the same plugins and
 * the same guarantees (docs/any-loop.md, "Your own loop in TypeScript"). A
 * {@link TrainingLoop} holds a model, its optimizer and the plugins attached to them; its
 * step programs (sdk/loop-step.ts) trace the caller's forward and loss between the plugins'
 * hook points; it paces the steps sent to the runtime, runs the loop points, and saves and
 * resumes checkpoints of all of it. `Trainer` (sdk/trainer.ts) is a TrainingLoop driven by
 * `fit()`: data, evaluation, events, metrics files.
 *
 * ```ts
 * const loop = await TrainingLoop.create({ model: student, optimizer: nesterov({ lr: 0.05 }), plugins: [magnitude({ sparsity: 0.8 })] });
 * const step = loop.stepProgram({
 *   inputs: { x: {}, y: {} },
 *   loss: ({ x, y }, t) => distill(t.model.forward(x, { train: true }), noGrad(rt, () => teacher.forward(x)), y),
 * });
 * for (let e = 0; e < epochs; e++) {
 *   for (const b of train.batches(64, { seed: e })) { const { loss } = await step.run(b); losses.push(loss); }
 *   await loop.epochEnd({ loss: … });   // the pruner prunes here
 * }
 * await loop.save('distilled.safetensors');
 * ```
 *
 * What it guarantees, as the Trainer does: every plugin attached once (its own view of the
 * hooks, names per plugin); its traced hooks in every step at their points, its loss terms
 * added to the loss, its metrics returned with it, a pruner's masks held after every
 * optimizer step; the optimizer's state per parameter (the model's and the plugins'),
 * frozen parameters skipped, joining ones given fresh state; a non-finite loss stopped
 * (or skipped) inside the step; the checkpoint holding model, optimizer, plugin state and
 * parameters, refused whole when it does not fit.
 */
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { checkSameSetup, decodeCheckpoint, encodeCheckpoint, pluginRecord } from './checkpoint.js';
import { syncParams } from './data-parallel.js';
import type { MomentumOptimizer } from './families/momentum/types.js';
import type { LoopInfo, LoopPoint, ParamControl, ParamView, Selector, TrainerPlugin } from './hooks.js';
import { type StepHost, type StepSpec, TrainStep } from './loop-step.js';
import type { Model } from './model.js';
import { type NonFiniteMode, nonFiniteError } from './nonfinite.js';
import { describeValue, requirePlugin } from './plugin.js';
import type { Placeholders } from './program.js';
import { readSafetensors } from './safetensors.js';
import { paramControl, Snapshots } from './snapshots.js';
import { StepWindow } from './step-window.js';
import { ParamSet } from './trainer-params.js';
import { restoreCheckpoint } from './trainer-resume.js';
import { HookRegistry } from './training-hooks.js';

export { TrainStep, type StepOutput, type StepSpec } from './loop-step.js';
export { StepWindow } from './step-window.js';

export interface TrainingLoopOptions {
  /** The model trained (from `Model.build`); plugins attach to it. */
  model: Model;
  /** The optimizer plugin: its state per parameter is the loop's. */
  optimizer: MomentumOptimizer;
  /** Plugins that take part (pruners, routers, adapters…): each `attach()`es once. */
  plugins?: TrainerPlugin[];
  /** A step whose loss is NaN or infinite: `'error'` (default) stops it with E_NONFINITE, `'skip'` leaves the parameters and optimizer state as they were (docs/training.md). */
  nonFinite?: NonFiniteMode;
  /** Steps sent ahead of the runtime before `run()` waits (default 8; sent in groups of half as many). */
  inFlight?: number;
}

/** E_ARG unless model, optimizer and plugins are what a loop needs; `who` names the caller. */
export function checkLoopParts(who: string, model: unknown, optimizer: unknown, plugins: unknown): void {
  const m = model as Partial<Model> | undefined;
  if (!m?.handle || !Array.isArray(m.params)) throw new LiaisonError('E_ARG', `${who}: model must be a Model (from Model.build)`, { param: 'model' });
  requirePlugin(optimizer, 'momentum-optimizer', 'MomentumOptimizer', ['init', 'update', 'learningRate'], `${who}: optimizer`, 'optimizer');
  const odd = Array.isArray(plugins) ? plugins.findIndex((p) => typeof p?.attach !== 'function') : -1;
  if (!Array.isArray(plugins) || odd >= 0) {
    throw new LiaisonError('E_ARG', `${who}: plugins must be a list of plugins with attach(hooks) (pruners, routers), got ${Array.isArray(plugins) ? `${describeValue(plugins[odd])} at [${odd}]` : describeValue(plugins)}`, { param: 'plugins' });
  }
}

/** A model, its optimizer and its plugins, trained by steps the caller writes. */
export class TrainingLoop {
  readonly rt: Runtime;
  readonly model: Model;
  readonly optimizer: MomentumOptimizer;
  readonly plugins: readonly TrainerPlugin[];
  readonly nonFinite: NonFiniteMode;
  /** The steps sent ahead of the runtime: `run()` and `sync()` pace through it (sdk/step-window.ts). */
  readonly window: StepWindow;
  /** Optimizer steps done (queued). */
  step = 0;
  /** Epochs done: `epochEnd()` counts them (a checkpoint records them). */
  epoch = 0;
  /** @internal the hooks the plugins attached through */
  readonly hooks: HookRegistry;
  /** @internal the parameters and the optimizer's state of each */
  readonly params: ParamSet;
  /** @internal */
  readonly snaps: Snapshots;
  /** @internal parameters, freezing and snapshots, as plugins reach them through their hooks */
  readonly control: ParamControl;
  private attaching: Promise<void> | null = null;
  /** The plugins' attach() has finished: steps may run. */
  private ready = false;
  private readonly steps = new Set<TrainStep<never>>();
  private lr = NaN;
  private lrT: Tensor | null = null;
  private freed = false;

  constructor(opts: TrainingLoopOptions, who = 'TrainingLoop') {
    const { model, optimizer, plugins = [], nonFinite = 'error', inFlight = 8 } = opts ?? ({} as TrainingLoopOptions);
    checkLoopParts(who, model, optimizer, plugins);
    if (nonFinite !== 'error' && nonFinite !== 'skip') throw new LiaisonError('E_ARG', `${who}: nonFinite must be 'error' or 'skip', got ${describeValue(nonFinite)}`, { param: 'nonFinite' });
    if (!Number.isInteger(inFlight) || inFlight < 1) throw new LiaisonError('E_ARG', `${who}: inFlight must be an integer >= 1, got ${describeValue(inFlight)}`, { param: 'inFlight' });
    this.rt = model.rt;
    this.model = model;
    this.optimizer = optimizer;
    this.plugins = [...plugins];
    this.nonFinite = nonFinite;
    this.window = new StepWindow(this.rt, inFlight);
    this.params = new ParamSet(this.rt, model, optimizer, () => this.step);
    this.snaps = new Snapshots(this.params, () => this.step);
    this.control = paramControl(this.params, this.snaps, () => this.step);
    this.hooks = new HookRegistry(this.rt, model, this.control);
  }

  /** A loop with its plugins attached. */
  static async create(opts: TrainingLoopOptions): Promise<TrainingLoop> {
    const loop = new TrainingLoop(opts);
    await loop.attach();
    return loop;
  }

  /** Whether the plugins have attached (or are attaching). */
  get attached(): boolean {
    return this.attaching !== null;
  }

  /**
   * Attach the plugins, once (later calls wait for the first): each through its own view of
   * the hooks, so two plugins of a kind keep their state, losses and parameters apart. A
   * pruner set to prune at the start prunes here.
   */
  attach(): Promise<void> {
    this.attaching ??= (async () => {
      this.params.all();
      for (const [i, p] of this.plugins.entries()) await p.attach(this.hooks.forPlugin(i));
      syncParams(this.rt, this.params.all().map((e) => e.param)); // on a group: every rank starts from rank 0's
      await this.rt.flush();
      this.ready = true;
    })();
    return this.attaching;
  }

  /**
   * A training step: `spec.loss` (the forward pass and the loss) traced between the
   * plugins' hook points, the optimizer's update of every trainable parameter after it
   * (sdk/loop-step.ts). Attach the plugins first (`create`, or `attach()`): the step traces
   * the hooks attached when it first runs, and again when they change.
   */
  stepProgram<I extends Placeholders>(spec: StepSpec<I>): TrainStep<I> {
    this.checkLive('stepProgram');
    const s = new TrainStep<I>(this.host, spec);
    this.steps.add(s as unknown as TrainStep<never>);
    return s;
  }

  /** Send what is queued and wait until every step sent has run (a failed one throws here). */
  async sync(): Promise<void> {
    await this.guard((async () => { await this.window.send(null); await this.window.drainAll(); })());
  }

  /**
   * Run the plugins' hooks at a loop point, after {@link sync}: `info.epoch` defaults to the
   * epochs done, `info.step` is the steps done. `epochEnd`: see {@link epochEnd}.
   */
  async point(point: LoopPoint, info: Partial<LoopInfo> = {}): Promise<void> {
    this.checkLive(point);
    await this.sync();
    await this.hooks.runLoop(point, { epoch: info.epoch ?? this.epoch, step: this.step, metrics: info.metrics ?? {} });
  }

  /** An epoch's end: counts it ({@link epoch}), then the plugins' epochEnd hooks (a pruner's round). */
  async epochEnd(metrics: Record<string, number> = {}): Promise<void> {
    this.checkLive('epochEnd');
    await this.sync(); // a failed step fails here, before the epoch counts
    const epoch = this.epoch++;
    await this.hooks.runLoop('epochEnd', { epoch, step: this.step, metrics });
  }

  /** After an evaluation: the plugins' `evaluation` hooks see its figures. */
  evaluation(metrics: Record<string, number>): Promise<void> {
    return this.point('evaluation', { epoch: Math.max(0, this.epoch - 1), metrics });
  }

  /** Once, when training is over: the plugins' `fitEnd` hooks (an adapter merges into the weights). */
  fitEnd(metrics: Record<string, number> = {}): Promise<void> {
    return this.point('fitEnd', { epoch: Math.max(0, this.epoch - 1), metrics });
  }

  /** Whether any plugin attached hooks at `point` (a loop with none need not stop there). */
  hasHooks(point: LoopPoint): boolean {
    return this.hooks.loop[point].length > 0;
  }

  /** The names the plugins' metrics got (`StepOutput.metrics` keys), in the order they were added. */
  metricNames(): string[] {
    return this.hooks.metrics.map((m) => m.name);
  }

  /** Stop optimizing these parameters (by name, glob or RegExp): no gradient, values unchanged, optimizer state kept. */
  freeze(params: Selector): string[] { return this.control.freeze(params); }
  /** Optimize these again; one that never had optimizer state gets fresh state. */
  unfreeze(params: Selector): string[] { return this.control.unfreeze(params); }
  /** Every parameter the loop holds (the model's, then the plugins'), trainable or not. */
  paramList(): ParamView[] { return this.control.params(); }
  /** The optimizer's state tensors of one parameter, to read. */
  optimizerState(name: string): Readonly<Record<string, Tensor>> { return this.control.optimizerState(name); }
  /** Save copies of every parameter as snapshot `name`: now, or right after step `opts.at`. */
  snapshot(name: string, opts?: { at?: number }): void { this.control.snapshot(name, opts); }
  /** Copy snapshot `name` back into these parameters (default: all); `keepZeros`: only their non-zero entries. */
  rewind(name: string, params?: Selector, opts?: { keepZeros?: boolean }): void { this.control.rewind(name, params, opts); }
  /** Fresh optimizer state for these parameters (default: all), their step count from 1 again. */
  resetOptimizer(params?: Selector): void { this.control.resetOptimizer(params); }
  /** Snapshots held: name → the step each was taken at. */
  snapshots(): Record<string, number> { return this.snaps.list(); }

  /** Trace every step program again before its next run (after a failure: steps counted here may not have run there). */
  retrace(): void {
    this.hooks.retrace();
  }

  /**
   * Write a checkpoint (sdk/checkpoint.ts): the model's state, the optimizer's state,
   * the plugins' parameters and state, the epochs and steps done; with `snapshots`, the
   * snapshots; `config` is recorded as the run's config (the Trainer's own).
   */
  async save(path: string, opts: { snapshots?: boolean; config?: Record<string, unknown> } = {}): Promise<void> {
    this.checkLive('save');
    await this.sync();
    const snaps = opts.snapshots ? this.snaps.checkpointTensors() : {};
    const tensors = { ...this.params.stateTensors(), ...this.params.pluginTensors(), ...this.hooks.stateTensors(), ...snaps };
    const metadata = encodeCheckpoint({
      epoch: this.epoch, step: this.step, optimizer: pluginRecord(this.optimizer),
      plugins: this.plugins.map(pluginRecord), attached: this.attaching !== null, config: { ...(opts.config ?? {}) },
      params: this.params.record(), ...(opts.snapshots ? { snapshots: this.snaps.list() } : {}),
    });
    await this.model.save(path, { tensors, metadata });
  }

  /**
   * Restore a checkpoint written by {@link save} (or a Trainer's) with the same optimizer
   * and plugins: everything is checked against the file before anything is written, so a
   * refused one leaves the loop as it was (sdk/trainer-resume.ts). The step programs count
   * on from the file's steps; a file saved before the plugins attached leaves them to attach.
   */
  async resume(path: string): Promise<void> {
    this.checkLive('resume');
    await this.sync();
    const file = await readSafetensors(path);
    const c = decodeCheckpoint(file.metadata, path);
    checkSameSetup(c, pluginRecord(this.optimizer), this.plugins.map(pluginRecord), path);
    const withPlugins = c.attached !== false;
    if (!withPlugins && this.attaching) {
      throw new LiaisonError('E_ARG', `resume: ${path} was saved before its plugins were attached (before the first fit), and this Trainer's plugins are attached already; resume it into a Trainer that has not trained`, { param: 'path' });
    }
    await restoreCheckpoint({
      rt: this.rt, model: this.model, file, path, withPlugins, attached: this.attaching !== null, checkpoint: c,
      attach: () => this.attach(), params: this.params, snapshots: this.snaps, pluginState: () => this.hooks.stateTensors(),
    });
    this.epoch = c.epoch;
    this.step = c.step;
    this.retrace(); // the step programs count steps from where they were traced
  }

  /**
   * Drop what the loop made in the runtime: its step programs, parameter handles, the
   * plugins' parameters, the optimizer's state, the snapshots. The model and the plugins
   * are the caller's (a pruner has its own `free()`).
   */
  free(): void {
    for (const s of [...this.steps]) s.free();
    this.snaps.free();
    this.params.free();
    this.lrT?.free();
    this.lrT = null;
    this.freed = true;
  }

  /** @internal throws when freed */
  checkLive(method: string, who = 'TrainingLoop'): void {
    if (this.freed) throw new LiaisonError('E_ARG', `${who}.${method}: free() was called on this ${who}; make a new one`);
  }

  /** A failure from the runtime: after E_NONFINITE the step count goes back to the last step that ran. */
  private async guard(p: Promise<void>): Promise<void> {
    try {
      await p;
    } catch (e) {
      await this.window.settled(); // the groups sent before it land first
      this.retrace();
      const nf = nonFiniteError(e, { step: 0, epoch: 0, stepsPerEpoch: 1 });
      if (nf) this.step = nf.step - 1;
      throw e;
    }
  }

  private get host(): StepHost {
    const self = this; // eslint-disable-line @typescript-eslint/no-this-alias -- the host's step is the loop's
    return {
      rt: this.rt, model: this.model, optimizer: this.optimizer, nonFinite: this.nonFinite, hooks: this.hooks, params: this.params,
      get step() { return self.step; },
      set step(n: number) { self.step = n; },
      rate: (step) => this.rate(step),
      check: () => {
        this.checkLive('run');
        if (!this.ready && this.plugins.length) throw new LiaisonError('E_ARG', `TrainingLoop: its plugins have not attached${this.attaching ? ' yet (await loop.attach() before running a step)' : '; make it with TrainingLoop.create(), or await loop.attach() before the first step'}`, { param: 'plugins' });
      },
      after: (step) => this.snaps.after(step),
      pace: async () => {
        this.window.add();
        if (this.window.full) await this.guard(this.window.send(null));
      },
      release: (s) => { this.steps.delete(s); },
    };
  }

  /** The () rate of step `step`, one upload when it changes (a constant one costs nothing). */
  private rate(step: number): { lr: number; t: Tensor } {
    const next = this.optimizer.learningRate(step);
    if (!Number.isFinite(next) || next < 0) throw new LiaisonError('E_ARG', `${pluginRecord(this.optimizer).id}: learningRate(${step}) returned ${next}; it must be a finite number >= 0`, { param: 'optimizer' });
    if (next !== this.lr || !this.lrT) {
      this.lrT?.free();
      this.lr = next;
      this.lrT = this.rt.full([], next).keep();
    }
    return { lr: this.lr, t: this.lrT };
  }
}
