/**
 * The Trainer's options, results and event shapes (sdk/trainer.ts).
 */
import type { Dataset, TextCorpus } from './data.js';
import type { MomentumOptimizer } from './families/momentum/types.js';
import type { TrainerPlugin } from './hooks.js';
import type { Model } from './model.js';
import type { TrainerConfig } from './trainer-config.js';

export interface TrainerOptions extends Partial<TrainerConfig> {
  model: Model;
  optimizer: MomentumOptimizer;
  /** Plugins that take part (pruners, routers, …): each `attach()`es once before the first step. */
  plugins?: TrainerPlugin[];
}

/** An evaluation: mean loss over the set; accuracy for classification; perplexity for text. */
export interface EvalResult {
  loss: number;
  accuracy?: number;
  perplexity?: number;
}

/** One epoch of the history `fit()` returns, and the `epoch` event. */
export interface EpochResult {
  /** From 0. */
  epoch: number;
  /** Optimizer steps done at its end. */
  step: number;
  /** Mean training loss over the epoch's steps. */
  loss: number;
  evalLoss?: number;
  accuracy?: number;
  perplexity?: number;
  /** With `nonFinite: 'skip'`: the steps of the epoch whose loss was not finite, skipped (`loss` is the mean of the others). */
  skipped?: number;
  /** The plugins' metrics (`TrainingHooks.addMetric`), each its mean over the epoch's steps; absent without any. */
  metrics?: Record<string, number | number[]>;
  /** Wall-clock seconds of the epoch (steps, hooks, evaluation and checkpoint). */
  seconds: number;
}

/** The `progress` event: a logged step. */
export interface ProgressEvent {
  epoch: number;
  step: number;
  /** Steps of this epoch done, of `stepsPerEpoch`. */
  epochStep: number;
  stepsPerEpoch: number;
  /** Mean training loss over the steps since the previous progress event. */
  loss: number;
  lr: number;
  /** With `nonFinite: 'skip'`: steps skipped since the previous progress event (`loss` is the mean of the others). */
  skipped?: number;
  /** The plugins' metrics (`TrainingHooks.addMetric`), each its mean over the steps since the previous progress event; absent without any. */
  metrics?: Record<string, number | number[]>;
}

/** The `eval` event. */
export interface EvalEvent extends EvalResult { epoch: number; step: number }
/** The `checkpoint` event. */
export interface CheckpointEvent { epoch: number; step: number; path: string }

export interface TrainerEvents {
  progress: [ProgressEvent];
  epoch: [EpochResult];
  eval: [EvalEvent];
  checkpoint: [CheckpointEvent];
}

export interface FitOptions {
  /** Epochs to train now (default: config `epochs`), counting on from those already done. */
  epochs?: number;
  /** Evaluated every `evalEvery` epochs and after the last. */
  eval?: Dataset;
}

export interface FitLMOptions {
  /** Epochs to train now (default: config `epochs`); an epoch here is `stepsPerEpoch` sampled steps. */
  epochs?: number;
  stepsPerEpoch: number;
  /** Held-out text, scored on consecutive windows of the sampler's context. */
  eval?: TextCorpus;
  /** At most this many windows of the eval text (default 256). */
  evalWindows?: number;
}
