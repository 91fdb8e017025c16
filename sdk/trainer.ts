/**
 * The training loop: one per SDK, with hook points where plugins of every family attach.
 *
 * ```ts
 * const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 128, 10] }, { seed: 0 });
 * const [train, test] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
 * const trainer = new Trainer({ model, optimizer: gd({ lr: 0.5 }), plugins: [magnitude({ sparsity: 0.8 })], epochs: 5 });
 * trainer.on('epoch', (e) => console.log(e.epoch, e.loss, e.accuracy));
 * const history = await trainer.fit(train, { eval: test });
 * ```
 *
 * A training step is ONE program traced once (sdk/program.ts) and replayed by the runtime:
 * inputs x, y, lr () (the step number () is the program's own state) → beforeStep hooks →
 * zero_grad → forward (train) → loss (+ every addLoss term) → its finiteness check
 * (sdk/nonfinite.ts) → backward → afterBackward hooks → the optimizer's update() over every
 * trainable parameter (the model's and those plugins added; sdk/trainer-params.ts) →
 * afterOptimizerStep hooks; output the loss. The program is traced again when a plugin asks
 * or the trainable set changes (a freeze, a parameter joining). Snapshots and rewinding:
 * sdk/snapshots.ts. Each step queues one
 * `program_run`; steps go out in groups of `inFlight / 2` (each group one batch, one round
 * trip) and at most `inFlight` steps are unconfirmed, so the runtime always has work while
 * this side prepares the next. The loss is read back only every `logEvery` steps and at
 * epoch ends, in the batch of the step itself. An epoch end that nothing waits for (no
 * epochEnd hook, evaluation or checkpoint due) does not stop the pipeline either: its
 * results arrive while the next epoch runs.
 *
 * Events (a typed EventEmitter; shapes in sdk/trainer-types.ts): `progress` at every
 * logged step, `eval` after each evaluation, `checkpoint` after each save, `epoch` at each
 * epoch's end. Metrics go to JSONL (`metricsFile`, sdk/metrics.ts) and TensorBoard
 * (`tensorboardDir`, where the runtime has it); checkpoints are described in sdk/checkpoint.ts.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { checkSameSetup, decodeCheckpoint, encodeCheckpoint, pluginRecord } from './checkpoint.js';
import { Dataset, TextCorpus, type TokenSampler } from './data.js';
import { checkTargets, evaluate, lossOf } from './evaluate.js';
import { traceUpdate } from './families/momentum/base.js';
import type { MomentumOptimizer } from './families/momentum/types.js';
import type { ParamControl, ParamView, Selector, StepTrace, TrainerPlugin } from './hooks.js';
import { MetricsLog, TensorBoard } from './metrics.js';
import type { Model } from './model.js';
import { guardLoss, lossSummary, maskedUpdate, nonFiniteError } from './nonfinite.js';
import { describeValue, requirePlugin } from './plugin.js';
import { define, noGrad, type PlaceholderSpec, type Placeholders, type Program, traceEach } from './program.js';
import { progressView } from './progress.js';
import { readSafetensors } from './safetensors.js';
import { paramControl, Snapshots } from './snapshots.js';
import { StepWindow } from './step-window.js';
import { resolveTrainerConfig, type TrainerConfig } from './trainer-config.js';
import { type ParamEntry, ParamSet } from './trainer-params.js';
import { StepMetrics } from './trainer-metrics.js';
import { restoreCheckpoint } from './trainer-resume.js';
import { epochSeed, type Source } from './trainer-source.js';
import type { EpochResult, EvalResult, FitLMOptions, FitOptions, TrainerEvents, TrainerOptions } from './trainer-types.js';
import { HookRegistry } from './training-hooks.js';

export { TrainerConfig } from './trainer-config.js';
export type { CheckpointEvent, EpochResult, EvalEvent, EvalResult, FitLMOptions, FitOptions, ProgressEvent, TrainerEvents, TrainerOptions } from './trainer-types.js';

export class Trainer extends EventEmitter<TrainerEvents> {
  readonly config: Readonly<TrainerConfig>;
  readonly model: Model;
  readonly optimizer: MomentumOptimizer;
  readonly plugins: readonly TrainerPlugin[];
  readonly rt: Runtime;
  /** Epochs done (a resumed trainer starts from the checkpoint's). */
  epoch = 0;
  /** Optimizer steps done. */
  step = 0;
  private readonly hooks: HookRegistry;
  /** The parameters it optimizes and the optimizer's state of each (made on first need). */
  private readonly params: ParamSet;
  private readonly snaps: Snapshots;
  /** Parameters, freezing and snapshots, as plugins reach them through their hooks. */
  private readonly control: ParamControl;
  /** The parameter set's version the step program was traced for. */
  private tracedFor = -1;
  /** The plugins' attach(), once (null before). */
  private attached: Promise<void> | null = null;
  private program: Program | null = null;
  private programFor: unknown = null;
  private tb: TensorBoard | null | undefined;
  private running = false;
  private freed = false;

  constructor(opts: TrainerOptions) {
    super();
    const { model, optimizer, plugins = [], ...config } = opts ?? ({} as TrainerOptions);
    if (!model?.handle || !Array.isArray(model.params)) throw new LiaisonError('E_ARG', 'Trainer: model must be a Model (from Model.build)', { param: 'model' });
    requirePlugin(optimizer, 'momentum-optimizer', 'MomentumOptimizer', ['init', 'update', 'learningRate'], 'Trainer: optimizer', 'optimizer');
    const odd = Array.isArray(plugins) ? plugins.findIndex((p) => typeof p?.attach !== 'function') : -1;
    if (!Array.isArray(plugins) || odd >= 0) {
      throw new LiaisonError('E_ARG', `Trainer: plugins must be a list of plugins with attach(hooks) (pruners, routers), got ${Array.isArray(plugins) ? `${describeValue(plugins[odd])} at [${odd}]` : describeValue(plugins)}`, { param: 'plugins' });
    }
    this.config = Object.freeze(resolveTrainerConfig(config));
    this.model = model;
    this.optimizer = optimizer;
    this.plugins = [...plugins];
    this.rt = model.rt;
    this.params = new ParamSet(this.rt, model, optimizer, () => this.step);
    this.snaps = new Snapshots(this.params, () => this.step);
    this.control = paramControl(this.params, this.snaps, () => this.step);
    this.hooks = new HookRegistry(this.rt, model, this.control);
  }

  /** A new Trainer, restored from a checkpoint written by {@link save}. */
  static async resume(path: string, opts: TrainerOptions): Promise<Trainer> {
    const t = new Trainer(opts);
    await t.resume(path);
    return t;
  }

  /** Stop optimizing these parameters (by name, glob or RegExp): no gradient, values unchanged, optimizer state kept. */
  freeze(params: Selector): string[] { return this.control.freeze(params); }
  /** Optimize these again; one that never had optimizer state gets fresh state. */
  unfreeze(params: Selector): string[] { return this.control.unfreeze(params); }
  /** Every parameter this Trainer holds (the model's, then the plugins'), trainable or not. */
  paramList(): ParamView[] { return this.control.params(); }
  /** Save copies of every parameter as snapshot `name`: now, or right after step `opts.at`. */
  snapshot(name: string, opts?: { at?: number }): void { this.control.snapshot(name, opts); }
  /** Copy snapshot `name` back into these parameters (default: all); `keepZeros`: only their non-zero entries. */
  rewind(name: string, params?: Selector, opts?: { keepZeros?: boolean }): void { this.control.rewind(name, params, opts); }
  /** Fresh optimizer state for these parameters (default: all), their step count from 1 again. */
  resetOptimizer(params?: Selector): void { this.control.resetOptimizer(params); }
  /** Snapshots held: name → the step each was taken at. */
  snapshots(): Record<string, number> { return this.snaps.list(); }

  /**
   * Plugins attached (each through its own view of the hooks, so that two plugins of a kind
   * keep their state and losses apart): once, before the first step or a resume. An
   * evaluation or a save attaches nothing: a pruner set to prune at the start prunes when
   * training starts, not when a baseline is measured.
   */
  private attach(): Promise<void> {
    this.attached ??= (async () => {
      this.params.all();
      for (const [i, p] of this.plugins.entries()) await p.attach(this.hooks.forPlugin(i));
      await this.rt.flush();
    })();
    return this.attached;
  }

  /** The step program for `source`, traced again when a plugin called retrace() or the kind of source changed. */
  private stepProgram(source: Source): Program {
    if (this.program && !this.hooks.stale && this.programFor === source.key && this.tracedFor === this.params.version) return this.program;
    this.program?.free();
    this.hooks.stale = false;
    this.tracedFor = this.params.version;
    const { rt, model, hooks, optimizer, params } = this;
    const lr: PlaceholderSpec = { dtype: 'f32', shape: [] };
    const inputs: Placeholders = source.draw ? { lr } : { x: {}, y: {}, lr };
    // The step number is state of the program (counted there, one op fewer per step),
    // starting from the steps done when it is traced. Defined, not awaited: the definition
    // goes out in the first step's batch.
    const state = { step: rt.full([], this.step) };
    // the first step whose loss was not finite, set by check_finite (sdk/nonfinite.ts); captured
    const halt = rt.zeros([], 'i64');
    this.program = define(rt, { name: 'train-step', inputs, state }, (ins: Record<string, Tensor>, st) => {
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
      const { x, y } = source.draw ? source.draw() : { x: ins.x, y: ins.y };
      rt.call('zero_grad', [model.handle], undefined, 0);
      const own = params.pluginTrainable();
      if (own.length) rt.call('clear_grads', [own], undefined, 0);
      let loss = lossOf(this.config.loss, model.forward(x, { train: true }), y, source.yRank);
      for (const l of hooks.losses) loss = loss.add(l.fn(t));
      // metrics see the step's forward and loss; read, not trained through
      const metrics = noGrad(rt, () => hooks.metrics.map((m) => m.fn(t)));
      const ok = guardLoss(rt, this.config.nonFinite, loss, st.step, halt);
      guarded = () => ok ?? (rt.call('isfinite', [loss]) as Tensor);
      rt.call('backward', [loss], undefined, 0);
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
    this.programFor = source.key;
    return this.program;
  }

  /** Train on `train` for `epochs` more epochs; returns one entry per epoch. */
  async fit(train: Dataset, opts: FitOptions = {}): Promise<EpochResult[]> {
    if (!(train instanceof Dataset)) throw new LiaisonError('E_ARG', 'Trainer.fit: train must be a Dataset (for text, use fitLM with a sampler)', { param: 'train' });
    checkTargets(this.config.loss, train.classification);
    const ev = opts.eval;
    // checked now, not at the first evaluation an epoch later
    if (ev !== undefined) {
      if (!(ev instanceof Dataset)) throw new LiaisonError('E_ARG', 'Trainer.fit: opts.eval must be a Dataset (held-out rows)', { param: 'eval' });
      checkTargets(this.config.loss, ev.classification, 'the eval set');
    }
    const { batchSize, shuffle, dropLast, seed } = this.config;
    const source: Source = {
      key: `dataset, y of rank ${train.yShape.length}`,
      steps: train.countBatches(batchSize, dropLast),
      yRank: train.yShape.length,
      batches: (e) => train.batches(batchSize, { shuffle, dropLast, seed: epochSeed(seed, e) }),
      evaluate: ev ? () => this.evaluate(ev) : undefined,
    };
    return this.run(source, opts.epochs ?? this.config.epochs);
  }

  /**
   * Train a language model on windows drawn inside each step by `sampler` (no upload per
   * step): `epochs` of `stepsPerEpoch` steps. Loss: cross-entropy over every position.
   */
  async fitLM(sampler: TokenSampler, opts: FitLMOptions): Promise<EpochResult[]> {
    if (typeof sampler?.draw !== 'function') throw new LiaisonError('E_ARG', 'Trainer.fitLM: sampler must come from TextCorpus.sampler(batch, context)', { param: 'sampler' });
    if (!Number.isInteger(opts?.stepsPerEpoch) || opts.stepsPerEpoch < 1) throw new LiaisonError('E_ARG', `Trainer.fitLM: stepsPerEpoch must be an integer >= 1, got ${opts?.stepsPerEpoch}`, { param: 'stepsPerEpoch' });
    checkTargets(this.config.loss, true);
    const ev = opts.eval;
    if (ev !== undefined && !(ev instanceof TextCorpus)) throw new LiaisonError('E_ARG', 'Trainer.fitLM: opts.eval must be a TextCorpus (held-out text)', { param: 'eval' });
    if (opts.evalWindows !== undefined && (!Number.isInteger(opts.evalWindows) || opts.evalWindows < 1)) {
      throw new LiaisonError('E_ARG', `Trainer.fitLM: evalWindows must be an integer >= 1, got ${opts.evalWindows}`, { param: 'evalWindows' });
    }
    const source: Source = {
      key: sampler,
      steps: opts.stepsPerEpoch, yRank: 2,
      batches: () => null,
      draw: () => sampler.draw(),
      evaluate: ev ? () => this.evaluate(ev, { context: sampler.context, maxWindows: opts.evalWindows ?? 256 }) : undefined,
    };
    return this.run(source, opts.epochs ?? this.config.epochs);
  }

  private async run(source: Source, epochs: number): Promise<EpochResult[]> {
    if (!Number.isInteger(epochs) || epochs < 1) throw new LiaisonError('E_ARG', `Trainer: epochs must be an integer >= 1, got ${epochs}`, { param: 'epochs' });
    if (this.running) throw new LiaisonError('E_ARG', 'Trainer: already training; await the running fit() before starting another');
    this.checkLive('fit');
    this.running = true;
    const start = { step: this.step, epoch: this.epoch, stepsPerEpoch: source.steps };
    try {
      return await this.loop(source, epochs);
    } catch (e) {
      this.hooks.stale = true; // steps may have been counted here but not run there: trace afresh
      const nf = nonFiniteError(e, start);
      if (!nf) throw e;
      // the runtime stopped every step from the failed one on: count what the model went through
      [this.step, this.epoch] = [nf.step - 1, nf.epoch];
      throw nf.error;
    } finally {
      this.running = false;
    }
  }

  private async loop(source: Source, epochs: number): Promise<EpochResult[]> {
    await this.attach();
    const cfg = this.config;
    const rt = this.rt;
    const skip = cfg.nonFinite === 'skip';
    const last = this.epoch + epochs;
    const bar = progressView(cfg.progress);
    const log = cfg.metricsFile ? new MetricsLog(cfg.metricsFile) : null;
    if (cfg.tensorboardDir && this.tb === undefined) this.tb = await TensorBoard.open(rt, cfg.tensorboardDir);
    const history: EpochResult[] = [];
    // groups of half the window; at most `inFlight` steps unconfirmed (sdk/step-window.ts)
    const sent = new StepWindow(rt, cfg.inFlight);
    let done = 0;
    let shown = NaN;
    let lr = NaN;
    let lrT: Tensor | null = null;
    let mark = performance.now(); // when the previous epoch's results were final
    const finish = (r: EpochResult) => {
      const now = performance.now();
      r.seconds = (now - mark) / 1000;
      mark = now;
      history.push(r);
      log?.write({ kind: 'epoch', ...r });
      this.emit('epoch', r);
    };
    bar.start(epochs * source.steps, { epoch: this.epoch + 1, epochs: last, loss: NaN });
    try {
      for (let e = this.epoch; e < last; e++) {
        rt.manualSeed(epochSeed(cfg.seed, e)); // draws inside steps (text windows) restart per epoch
        bar.update(done, { epoch: e + 1 });
        const batches = source.batches(e);
        const losses: Tensor[] = [];
        const metrics = new StepMetrics(rt, this.hooks.metrics.map((m) => m.name));
        let since = 0;
        const report = (ts: Tensor[], at: { step: number; epochStep: number; lr: number }) => {
          const { mean, skipped } = lossSummary(rt, ts, skip);
          this.tb?.scalar('train/loss', mean, at.step);
          const values = metrics.summary(losses.length - ts.length, losses.length);
          return Promise.all([mean.item(), skipped?.item(), values]).then(([loss, n, m]) => {
            shown = loss;
            const more = { ...(n === undefined ? {} : { skipped: n }), ...(m ? { metrics: m } : {}) };
            log?.write({ kind: 'step', epoch: e, step: at.step, loss, lr: at.lr, ...more });
            this.emit('progress', { epoch: e, step: at.step, epochStep: at.epochStep, stepsPerEpoch: source.steps, loss, lr: at.lr, ...more });
          }).finally(() => { mean.free(); skipped?.free(); });
        };
        for (let i = 0; i < source.steps; i++) {
          const program = this.stepProgram(source);
          const step = ++this.step;
          const next = this.optimizer.learningRate(step);
          if (!Number.isFinite(next) || next < 0) throw new LiaisonError('E_ARG', `${pluginRecord(this.optimizer).id}: learningRate(${step}) returned ${next}; it must be a finite number >= 0`, { param: 'optimizer' });
          if (next !== lr || !lrT) { lrT?.free(); lr = next; lrT = rt.full([], lr); } // a constant rate costs no op
          const b = batches?.[i];
          const out = program.run(b ? { x: b.x, y: b.y, lr: lrT } : { lr: lrT }) as Tensor | Tensor[];
          losses.push(Array.isArray(out) ? out[0] : out);
          if (Array.isArray(out)) metrics.push(out.slice(1));
          if (b) { b.x.free(); b.y.free(); }
          this.snaps.after(step); // queued behind the step: the weights it left
          bar.update(++done, { loss: shown });
          sent.add();
          if (i === source.steps - 1) break; // the epoch's end reads go out with this step
          // a logged step's read goes out in the step's own batch: no extra round trip
          if (step % cfg.logEvery === 0) {
            const read = report(losses.slice(since), { step, epochStep: i + 1, lr });
            since = losses.length;
            await sent.send(read);
          } else if (sent.full) {
            await sent.send(null);
          }
        }
        // epoch end: the mean since the last log and over the epoch, in the last step's batch
        const tail = report(losses.slice(since), { step: this.step, epochStep: source.steps, lr });
        const { mean: epochMean, skipped } = lossSummary(rt, losses, skip);
        this.tb?.scalar('train/epoch_loss', epochMean, this.step);
        const step = this.step;
        const epochMetrics = metrics.summary(0, losses.length);
        const result = Promise.all([epochMean.item(), skipped?.item(), epochMetrics, tail])
          .then(([loss, n, m]): EpochResult => ({ epoch: e, step, loss, ...(n === undefined ? {} : { skipped: n }), ...(m ? { metrics: m } : {}), seconds: 0 }))
          .finally(() => { for (const l of [...losses, epochMean, ...(skipped ? [skipped] : [])]) l.free(); metrics.free(); });
        this.epoch = e + 1;
        const evalDue = !!source.evaluate && ((e + 1) % cfg.evalEvery === 0 || e === last - 1);
        const saveDue = !!cfg.checkpointDir && this.epoch % cfg.checkpointEvery === 0;
        if (!evalDue && !saveDue && !this.hooks.loop.epochEnd.length && e < last - 1) {
          // nothing here needs this epoch's results: go on while the runtime finishes it
          await sent.send(result.then(finish));
          continue;
        }
        await sent.send(result);
        await sent.drainAll();
        const r = await result;
        await this.hooks.runLoop('epochEnd', { epoch: e, step, metrics: { loss: r.loss } });
        if (evalDue) {
          const ev = await source.evaluate!();
          Object.assign(r, { evalLoss: ev.loss }, ev.accuracy !== undefined ? { accuracy: ev.accuracy } : {}, ev.perplexity !== undefined ? { perplexity: ev.perplexity } : {});
          log?.write({ kind: 'eval', epoch: e, step, ...ev });
          for (const [k, v] of Object.entries(ev)) this.tb?.scalar(`eval/${k}`, v as number, step);
          this.emit('eval', { epoch: e, step, ...ev });
          await this.hooks.runLoop('evaluation', { epoch: e, step, metrics: { ...ev } });
        }
        if (saveDue) {
          const path = join(cfg.checkpointDir!, `epoch-${this.epoch}.safetensors`);
          await this.save(path, { snapshots: cfg.checkpointSnapshots });
          log?.write({ kind: 'checkpoint', epoch: e, step, path });
          this.emit('checkpoint', { epoch: e, step, path });
        }
        this.tb?.flush();
        finish(r);
      }
      // the last epoch's end always drains the window: every step's results are in
      const end = history.at(-1);
      if (end) {
        const { epoch, step, seconds: _, metrics: __, ...metrics } = end;
        await this.hooks.runLoop('fitEnd', { epoch, step, metrics: metrics as Record<string, number> });
      }
    } finally {
      // after a failure, the groups sent before it land first: their records reach the
      // log before it closes, and no event fires after fit() has settled
      await sent.settled();
      lrT?.free();
      bar.stop();
      log?.close();
    }
    await rt.flush();
    return history;
  }

  /**
   * Loss (and accuracy, for classes) of the model on `data`, forward in eval mode, in
   * chunks of `evalBatchSize` rows, read in one round trip (sdk/evaluate.ts). For text:
   * the held-out windows of `context` tokens (required), at most `maxWindows`; the
   * perplexity is exp(loss).
   */
  async evaluate(data: Dataset | TextCorpus, opts: { context?: number; maxWindows?: number } = {}): Promise<EvalResult> {
    return evaluate(this.model, data, { loss: this.config.loss, batchSize: this.config.evalBatchSize, ...opts });
  }

  /**
   * Write a checkpoint: model state, optimizer state, plugin parameters, every plugin's state,
   * and metadata (epochs and steps done, optimizer and plugin ids and configs, frozen
   * parameters, the trainer config); with `snapshots`, the snapshots too. See
   * sdk/checkpoint.ts for the layout.
   */
  async save(path: string, opts: { snapshots?: boolean } = {}): Promise<void> {
    this.checkLive('save');
    const snaps = opts.snapshots ? this.snaps.checkpointTensors() : {};
    const tensors = { ...this.params.stateTensors(), ...this.params.pluginTensors(), ...this.hooks.stateTensors(), ...snaps };
    const metadata = encodeCheckpoint({
      epoch: this.epoch, step: this.step, optimizer: pluginRecord(this.optimizer),
      plugins: this.plugins.map(pluginRecord), attached: this.attached !== null, config: { ...this.config },
      params: this.params.record(), ...(opts.snapshots ? { snapshots: this.snaps.list() } : {}),
    });
    await this.model.save(path, { tensors, metadata });
  }

  /**
   * Restore a checkpoint written by {@link save} with the same optimizer and plugins: the
   * model, the plugins' parameters, which parameters are frozen, the optimizer's and
   * plugins' state, any snapshots, and the epoch and step counts, so the next `fit()` goes
   * on where that run stopped. Everything is checked against the file (its setup; the name,
   * dtype and shape of every entry) before anything is written, so a refused checkpoint
   * leaves the model, the parameters, the optimizer's state and the counters as they were
   * (sdk/trainer-resume.ts). A checkpoint saved before the plugins were attached (before
   * the first fit) restores the model and the optimizer; the plugins attach when training
   * starts, as in a straight run.
   */
  async resume(path: string): Promise<void> {
    if (this.running) throw new LiaisonError('E_ARG', 'Trainer.resume: training is running; await fit() first');
    this.checkLive('resume');
    const file = await readSafetensors(path);
    const c = decodeCheckpoint(file.metadata, path);
    checkSameSetup(c, pluginRecord(this.optimizer), this.plugins.map(pluginRecord), path);
    const withPlugins = c.attached !== false;
    if (!withPlugins && this.attached) {
      throw new LiaisonError('E_ARG', `resume: ${path} was saved before its plugins were attached (before the first fit), and this Trainer's plugins are attached already; resume it into a Trainer that has not trained`, { param: 'path' });
    }
    await restoreCheckpoint({
      rt: this.rt, model: this.model, file, path, withPlugins, attached: this.attached !== null, checkpoint: c,
      attach: () => this.attach(), params: this.params, snapshots: this.snaps, pluginState: () => this.hooks.stateTensors(),
    });
    this.epoch = c.epoch;
    this.step = c.step;
    this.hooks.stale = true; // the step program counts steps from where it was traced
  }

  /**
   * Drop what this Trainer made in the runtime: its step program, its parameter handles,
   * the plugins' parameters, the optimizer's state and the snapshots. The model, the data
   * and the plugins are the caller's (a pruner has its own `free()`). The Trainer cannot
   * train, save or resume afterwards.
   */
  free(): void {
    if (this.running) throw new LiaisonError('E_ARG', 'Trainer.free: training is running; await fit() first');
    this.program?.free();
    this.program = null;
    this.snaps.free();
    this.params.free();
    this.tb?.close();
    this.tb = undefined;
    this.freed = true;
  }

  private checkLive(method: string): void {
    if (this.freed) throw new LiaisonError('E_ARG', `Trainer.${method}: free() was called on this Trainer; make a new one`);
  }
}
