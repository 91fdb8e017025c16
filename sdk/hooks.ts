/**
 * Where plugins join a training loop. The {@link TrainingHooks} a Trainer hands to each
 * plugin's `attach()` is the whole surface: the core never looks at which algorithm a
 * plugin is, only at what it attached.
 *
 * Traced points run inside the step program, in the runtime, every step (no round trip);
 * loop points run in TypeScript once per epoch or evaluation.
 */
import type { Runtime, Tensor } from '../bridge/index.js';

/** A parameter of a model, as the runtime describes it. */
export interface ParamInfo {
  /** Dotted name, as in PyTorch's named_parameters(): `layers.0.weight`. */
  name: string;
  shape: number[];
  dtype: string;
  numel: number;
}

/** What plugins may use of a model (sdk/model.ts implements it). */
export interface ModelLike {
  readonly rt: Runtime;
  /** The runtime's nn.Module. */
  readonly handle: Tensor;
  /** Trainable parameters, in named_parameters() order. */
  readonly params: readonly ParamInfo[];
  /** The named parameter itself: in-place ops on it change the model. */
  param(name: string): Tensor;
  /** Its gradient after the last backward (zeros when it has none). */
  grad(name: string): Tensor;
  /** () f32: the MoE layers' auxiliary losses of the last forward, summed (`'aux'`: load balancing, the default; `'zloss'`: router z-losses); 0 without MoE. */
  auxLoss(kind?: 'aux' | 'zloss'): Tensor;
}

/** Parameters picked by name: a name, a glob (`'layers.*.weight'`, `*` spans dots), a RegExp, or a list of them. */
export type Selector = string | RegExp | readonly (string | RegExp)[];

/**
 * A parameter a plugin owns (`hooks.addParam`): a leaf tensor the Trainer optimizes beside
 * the model's (edge-popup's scores, a low-rank adapter's factors). A weight hook's program
 * captures it (sdk/weight-hooks.ts): it is just a tensor, with a gradient once it is trainable.
 */
export interface ParamSpec {
  shape: number[];
  /** 'zeros' (default), 'ones', 'normal' (× scale), 'uniform' (in [−scale, scale)), or a tensor to copy (as f32). */
  init?: 'zeros' | 'ones' | 'normal' | 'uniform' | Tensor;
  /** The std of 'normal', the bound of 'uniform' (default 1). */
  scale?: number;
  /** Seed of a random init (default: the runtime's stream). */
  seed?: number;
  /** The model module it belongs to (e.g. `layers.0`): what a weight hook on that module reads. */
  module?: string;
  /** Optimized from the next step on (default true); false: it waits until `unfreeze()`. */
  trainable?: boolean;
}

/** What plugins see of one parameter the Trainer holds. */
export interface ParamView {
  readonly name: string;
  readonly shape: readonly number[];
  readonly module: string;
  readonly trainable: boolean;
  /** Added by a plugin (not the model's own). */
  readonly plugin: boolean;
  /** Has optimizer state (it has been trainable). */
  readonly hasState: boolean;
}

/** The traced points, in the order a step reaches them. */
export const TRACED_POINTS = ['beforeStep', 'afterBackward', 'afterOptimizerStep'] as const;
export type TracedPoint = (typeof TRACED_POINTS)[number];
/**
 * The points run from TypeScript: each epoch's end, after each evaluation, and once when a
 * `fit()` has run all its epochs (`fitEnd`: after the last epoch's end, evaluation and
 * checkpoint; an adapter merges itself into the weights there).
 */
export const LOOP_POINTS = ['epochEnd', 'evaluation', 'fitEnd'] as const;
export type LoopPoint = (typeof LOOP_POINTS)[number];

/** What code at a traced point sees: placeholders of this step's values. */
export interface StepTrace {
  readonly rt: Runtime;
  readonly model: ModelLike;
  /** () f32: this step's learning rate. */
  readonly lr: Tensor;
  /** () f32: the step number, counting from 1. */
  readonly step: Tensor;
  /**
   * () bool: this step's update is applied — its loss is finite. With the Trainer's
   * `nonFinite: 'skip'` a step whose loss is not finite leaves the parameters and their
   * optimizer state as they were, and its gradients are NaN / Inf: state a plugin averages
   * at `afterBackward` / `afterOptimizerStep` (an importance EMA) must be kept as it was
   * there too (`rt.where(t.finite, updated, old)`; a lerp weight of 0 still spreads a NaN).
   * Under `'error'` it is true at every step that runs (a non-finite loss stops the run).
   * Known once the loss is: reading it at `beforeStep` or in an `addLoss` term is E_ARG.
   */
  readonly finite: Tensor;
}

/** What code at a loop point sees. */
export interface LoopInfo {
  epoch: number;
  /** Steps done so far. */
  step: number;
  /** The latest logged values (loss, accuracy, …). */
  metrics: Record<string, number>;
}

export interface TrainingHooks {
  readonly rt: Runtime;
  readonly model: ModelLike;
  /** Code traced into the step program at `point`. */
  on(point: TracedPoint, fn: (t: StepTrace) => void): void;
  /** Code run from TypeScript at `point`; the loop waits for it. */
  on(point: LoopPoint, fn: (info: LoopInfo) => Promise<void> | void): void;
  /**
   * An extra loss term traced into the step, e.g. a router's load-balancing loss; () f32.
   * Names are per plugin: one another plugin took first becomes `name#<position>`.
   */
  addLoss(name: string, fn: (t: StepTrace) => Tensor): void;
  /**
   * A metric traced into the step after its loss (the step's forward done; no gradient),
   * read back with the loss and reported in the Trainer's `progress` and `epoch` events as
   * `metrics[name]`: the mean over the steps since the last log, or over the epoch; a 0-d
   * tensor as a number, any other as a flat number[] (element-wise mean). Names are per
   * plugin, as for addLoss.
   */
  addMetric(name: string, fn: (t: StepTrace) => Tensor): void;
  /**
   * Tensors saved in checkpoints as `prefix.key` and copied back on resume. Prefixes are
   * per plugin: one another plugin of the Trainer took first becomes `prefix#<position>`
   * (sdk/checkpoint.ts), so two plugins of one kind can each say `'pruner'`.
   */
  addState(prefix: string, tensors: () => Record<string, Tensor>): void;
  /**
   * Tell the loop that what was traced is stale (a plugin added or replaced a captured
   * tensor); the step program is traced again before the next step.
   */
  retrace(): void;
  /**
   * A parameter this plugin owns, optimized with the model's (sdk/trainer-params.ts): the
   * kept leaf tensor. Names are per plugin, as for addState (`name#<position>`); the name
   * it got is in `params()`. Declared mid-run (at a loop point), it joins with fresh
   * optimizer state, and the step is traced again.
   */
  addParam(name: string, spec: ParamSpec): Tensor;
  /**
   * Stop optimizing these parameters (model or plugin): no gradient, values unchanged, their
   * optimizer state kept as it is. Returns the names that changed.
   */
  freeze(params: Selector): string[];
  /** Optimize these again (fresh state for one that never had any). Returns the names that changed. */
  unfreeze(params: Selector): string[];
  /** Every parameter the Trainer holds, in order (the model's, then the plugins'). */
  params(): ParamView[];
  /** Steps done (queued) so far; at a loop point, the steps whose results are in. */
  readonly step: number;
  /** The optimizer's state of one parameter: handles to read (`await t.toArray()`), not to write. */
  optimizerState(name: string): Readonly<Record<string, Tensor>>;
  /**
   * Save copies of every parameter as snapshot `name` now (at attach: the initial weights),
   * or, with `at`, right after step `at` (sdk/snapshots.ts). A name used again is replaced.
   */
  snapshot(name: string, opts?: { at?: number }): void;
  /**
   * Copy snapshot `name` back into these parameters (default: all it holds); `keepZeros`:
   * only entries that are not 0 now (a pruned weight's survivors), the zeros stay.
   */
  rewind(name: string, params?: Selector, opts?: { keepZeros?: boolean }): void;
  /** Fresh optimizer state for these parameters (default: all), counting their steps from 1 again. */
  resetOptimizer(params?: Selector): void;
}

/** What the Trainer gives its {@link TrainingHooks} for parameters and snapshots (sdk/trainer.ts). */
export type ParamControl = Omit<TrainingHooks, 'rt' | 'model' | 'on' | 'addLoss' | 'addMetric' | 'addState' | 'retrace'>;

/** A plugin that takes part in training. Every family's base class implements it. */
export interface TrainerPlugin {
  /**
   * Join the loop: called once when training starts (the first fit, or a resume), awaited.
   * Tensors the plugin holds from here on must be `keep()`ed: the fit may run inside an
   * `rt.scope()`, which frees everything made in it that is not kept.
   */
  attach(hooks: TrainingHooks): void | Promise<void>;
}
