/**
 * `fit()`: the SDK's ready-made training loop, with hook points where plugins of every
 * family attach (a loop of one's own on the same parts: sdk/loop.ts, docs/any-loop.md).
 *
 * ```ts
 * const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 128, 10] }, { seed: 0 });
 * const [train, test] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
 * const trainer = new Trainer({ model, optimizer: gd({ lr: 0.5 }), plugins: [magnitude({ sparsity: 0.8 })], epochs: 5 });
 * trainer.on('epoch', (e) => console.log(e.epoch, e.loss, e.accuracy));
 * const history = await trainer.fit(train, { eval: test });
 * ```
 *
 * The Trainer is a {@link TrainingLoop} (sdk/loop.ts, the parts public for a loop of one's
 * own) driven by `fit()`: the plugins attach to the loop, the step is the loop's step
 * program (sdk/loop-step.ts) with the configured loss as its `loss`, and the optimizer's
 * state, snapshots and checkpoints are the loop's. A training step is ONE program traced
 * once and replayed by the runtime: inputs x, y, lr () → beforeStep hooks → zero_grad →
 * forward (train) → loss (+ every addLoss term) → its finiteness check (sdk/nonfinite.ts)
 * → backward → afterBackward hooks → the optimizer's update() over every trainable
 * parameter → afterOptimizerStep hooks; output the loss. Each step queues one
 * `program_run`; steps go out in groups of `inFlight / 2` (each group one batch, one round
 * trip) and at most `inFlight` steps are unconfirmed (sdk/step-window.ts), so the runtime
 * always has work while this side prepares the next. The loss is read back only every
 * `logEvery` steps and at epoch ends, in the batch of the step itself. An epoch end that
 * nothing waits for (no epochEnd hook, evaluation or checkpoint due) does not stop the
 * pipeline either: its results arrive while the next epoch runs.
 *
 * Events (a typed EventEmitter; shapes in sdk/trainer-types.ts): `progress` at every
 * logged step, `eval` after each evaluation, `checkpoint` after each save, `epoch` at each
 * epoch's end. Metrics go to JSONL (`metricsFile`, sdk/metrics.ts) and TensorBoard
 * (`tensorboardDir`, where the runtime has it); checkpoints are described in sdk/checkpoint.ts.
 */
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { Dataset, TextCorpus, type TokenSampler } from './data.js';
import { checkTargets, evaluate, lossOf } from './evaluate.js';
import type { MomentumOptimizer } from './families/momentum/types.js';
import type { ParamControl, ParamView, Selector, TrainerPlugin } from './hooks.js';
import { checkLoopParts, TrainingLoop } from './loop.js';
import type { TrainStep } from './loop-step.js';
import { MetricsLog, TensorBoard } from './metrics.js';
import type { Model } from './model.js';
import { lossSummary, nonFiniteError } from './nonfinite.js';
import { progressView } from './progress.js';
import { resolveTrainerConfig, type TrainerConfig } from './trainer-config.js';
import { StepMetrics } from './trainer-metrics.js';
import type { ParamSet } from './trainer-params.js';
import { epochSeed, type Source } from './trainer-source.js';
import type { EpochResult, EvalResult, FitLMOptions, FitOptions, TrainerEvents, TrainerOptions } from './trainer-types.js';

export { TrainerConfig } from './trainer-config.js';
export type { CheckpointEvent, EpochResult, EvalEvent, EvalResult, FitLMOptions, FitOptions, ProgressEvent, TrainerEvents, TrainerOptions } from './trainer-types.js';

export class Trainer extends EventEmitter<TrainerEvents> {
  readonly config: Readonly<TrainerConfig>;
  readonly model: Model;
  readonly optimizer: MomentumOptimizer;
  readonly plugins: readonly TrainerPlugin[];
  readonly rt: Runtime;
  /** The loop it drives: its plugins, parameters, optimizer state, steps and checkpoints (sdk/loop.ts). */
  readonly loop: TrainingLoop;
  /** The step program of the current kind of source (a dataset, a sampler), kept across fit() calls. */
  private stepFor: { key: unknown; step: TrainStep } | null = null;
  private tb: TensorBoard | null | undefined;
  private running = false;

  constructor(opts: TrainerOptions) {
    super();
    const { model, optimizer, plugins = [], ...config } = opts ?? ({} as TrainerOptions);
    checkLoopParts('Trainer', model, optimizer, plugins);
    this.config = Object.freeze(resolveTrainerConfig(config));
    this.loop = new TrainingLoop({ model, optimizer, plugins, nonFinite: this.config.nonFinite, inFlight: this.config.inFlight }, 'Trainer');
    this.model = model;
    this.optimizer = optimizer;
    this.plugins = this.loop.plugins;
    this.rt = model.rt;
  }

  /** A new Trainer, restored from a checkpoint written by {@link save}. */
  static async resume(path: string, opts: TrainerOptions): Promise<Trainer> {
    const t = new Trainer(opts);
    await t.resume(path);
    return t;
  }

  /** Epochs done (a resumed trainer starts from the checkpoint's). */
  get epoch(): number { return this.loop.epoch; }
  set epoch(n: number) { this.loop.epoch = n; }
  /** Optimizer steps done. */
  get step(): number { return this.loop.step; }
  set step(n: number) { this.loop.step = n; }

  /** Stop optimizing these parameters (by name, glob or RegExp): no gradient, values unchanged, optimizer state kept. */
  freeze(params: Selector): string[] { return this.loop.freeze(params); }
  /** Optimize these again; one that never had optimizer state gets fresh state. */
  unfreeze(params: Selector): string[] { return this.loop.unfreeze(params); }
  /** Every parameter this Trainer holds (the model's, then the plugins'), trainable or not. */
  paramList(): ParamView[] { return this.loop.paramList(); }
  /** Save copies of every parameter as snapshot `name`: now, or right after step `opts.at`. */
  snapshot(name: string, opts?: { at?: number }): void { this.loop.snapshot(name, opts); }
  /** Copy snapshot `name` back into these parameters (default: all); `keepZeros`: only their non-zero entries. */
  rewind(name: string, params?: Selector, opts?: { keepZeros?: boolean }): void { this.loop.rewind(name, params, opts); }
  /** Fresh optimizer state for these parameters (default: all), their step count from 1 again. */
  resetOptimizer(params?: Selector): void { this.loop.resetOptimizer(params); }
  /** Snapshots held: name → the step each was taken at. */
  snapshots(): Record<string, number> { return this.loop.snapshots(); }
  /** The optimizer's state tensors of one parameter, to read. */
  optimizerState(name: string): Readonly<Record<string, Tensor>> { return this.loop.optimizerState(name); }
  /** @internal the loop's parameters, freezing and snapshots, as plugins reach them through their hooks */
  get control(): ParamControl { return this.loop.control; }
  /** @internal the loop's parameter set and optimizer state (sdk/trainer-params.ts) */
  get params(): ParamSet { return this.loop.params; }

  /**
   * The step program for `source`: the loop's, with the configured loss of the model's
   * forward on x and y (a dataset's batch, or drawn inside the step by a sampler); made
   * again when the kind of source changes (the loop traces it again when a plugin asks or
   * the trainable set changes).
   */
  private stepProgram(source: Source): TrainStep {
    if (this.stepFor && this.stepFor.key === source.key) return this.stepFor.step;
    this.stepFor?.step.free();
    const { model, config } = this;
    const draw = source.draw;
    const step = draw
      ? this.loop.stepProgram({ loss: () => { const { x, y } = draw(); return lossOf(config.loss, model.forward(x, { train: true }), y, source.yRank); } })
      : this.loop.stepProgram({ inputs: { x: {}, y: {} }, loss: ({ x, y }) => lossOf(config.loss, model.forward(x, { train: true }), y, source.yRank) });
    this.stepFor = { key: source.key, step: step as unknown as TrainStep };
    return this.stepFor.step;
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
    this.loop.checkLive('fit', 'Trainer');
    this.running = true;
    const start = { step: this.step, epoch: this.epoch, stepsPerEpoch: source.steps };
    try {
      return await this.train(source, epochs);
    } catch (e) {
      this.loop.retrace(); // steps may have been counted here but not run there: trace afresh
      const nf = nonFiniteError(e, start);
      if (!nf) throw e;
      // the runtime stopped every step from the failed one on: count what the model went through
      [this.step, this.epoch] = [nf.step - 1, nf.epoch];
      throw nf.error;
    } finally {
      this.running = false;
    }
  }

  private async train(source: Source, epochs: number): Promise<EpochResult[]> {
    await this.loop.attach();
    const cfg = this.config;
    const rt = this.rt;
    const skip = cfg.nonFinite === 'skip';
    const last = this.epoch + epochs;
    const bar = progressView(cfg.progress);
    const log = cfg.metricsFile ? new MetricsLog(cfg.metricsFile) : null;
    if (cfg.tensorboardDir && this.tb === undefined) this.tb = await TensorBoard.open(rt, cfg.tensorboardDir);
    const history: EpochResult[] = [];
    // groups of half the window; at most `inFlight` steps unconfirmed (sdk/step-window.ts)
    const sent = this.loop.window;
    let done = 0;
    let shown = NaN;
    let lr = NaN;
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
        const metrics = new StepMetrics(rt, this.loop.metricNames());
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
          const b = batches?.[i];
          // counted, its rate asked, queued; snapshots due are queued right behind it
          const out = this.stepProgram(source).queue(b ? { x: b.x, y: b.y } : {});
          const step = out.step;
          lr = out.lr;
          losses.push(out.loss);
          metrics.push(Object.values(out.metrics));
          if (b) { b.x.free(); b.y.free(); }
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
        if (!evalDue && !saveDue && !this.loop.hasHooks('epochEnd') && e < last - 1) {
          // nothing here needs this epoch's results: go on while the runtime finishes it
          await sent.send(result.then(finish));
          continue;
        }
        await sent.send(result);
        await sent.drainAll();
        const r = await result;
        await this.loop.hooks.runLoop('epochEnd', { epoch: e, step, metrics: { loss: r.loss } });
        if (evalDue) {
          const ev = await source.evaluate!();
          Object.assign(r, { evalLoss: ev.loss }, ev.accuracy !== undefined ? { accuracy: ev.accuracy } : {}, ev.perplexity !== undefined ? { perplexity: ev.perplexity } : {});
          log?.write({ kind: 'eval', epoch: e, step, ...ev });
          for (const [k, v] of Object.entries(ev)) this.tb?.scalar(`eval/${k}`, v as number, step);
          this.emit('eval', { epoch: e, step, ...ev });
          await this.loop.hooks.runLoop('evaluation', { epoch: e, step, metrics: { ...ev } });
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
        await this.loop.hooks.runLoop('fitEnd', { epoch, step, metrics: metrics as Record<string, number> });
      }
    } finally {
      // after a failure, the groups sent before it land first: their records reach the
      // log before it closes, and no event fires after fit() has settled
      await sent.settled();
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
    this.loop.checkLive('save', 'Trainer');
    await this.loop.save(path, { ...opts, config: { ...this.config } });
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
    this.loop.checkLive('resume', 'Trainer');
    await this.loop.resume(path);
  }

  /**
   * Drop what this Trainer made in the runtime: its step program, its parameter handles,
   * the plugins' parameters, the optimizer's state and the snapshots. The model, the data
   * and the plugins are the caller's (a pruner has its own `free()`). The Trainer cannot
   * train, save or resume afterwards.
   */
  free(): void {
    if (this.running) throw new LiaisonError('E_ARG', 'Trainer.free: training is running; await fit() first');
    this.stepFor = null;
    this.loop.free();
    this.tb?.close();
    this.tb = undefined;
  }
}
