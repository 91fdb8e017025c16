/**
 * The `MomentumOptimizer` family: the optimizer step of a training loop.
 *
 * A plugin writes `update()` — how one parameter moves given its gradient and its own
 * state — and, when it keeps state, `init()`. The loop traces `update()` once over every
 * parameter into the step program; the runtime replays it every step, so the step costs
 * no round trip. Paper of the family: Liao & Kyrillidis, "Provable Accelerated
 * Convergence of Nesterov's Momentum for Deep ReLU Neural Networks" (docs/architecture.md, "Plugins and families").
 */
import type { Runtime, Tensor } from '../../../bridge/index.js';
import type { ParamInfo } from '../../hooks.js';
import type { PluginInstance } from '../../plugin.js';

/** Per-step values, as placeholders inside the traced step. */
export interface StepHyper {
  /** () f32: the learning rate of this step, from {@link MomentumOptimizer.learningRate}. */
  lr: Tensor;
  /** () f32: the step number, counting from 1 (bias corrections, warm-ups). */
  step: Tensor;
}

export interface MomentumOptimizer<C = unknown, P = unknown> extends PluginInstance<C> {
  /**
   * Setup hook: the state this optimizer keeps for one parameter, made once before the
   * first step — e.g. `{ velocity: rt.zeros(info.shape) }` — each tensor shaped as it
   * needs. These tensors are captured by the step program and updated in place there;
   * checkpoints save them. Default (the base class): no state.
   */
  init(param: Tensor, info: ParamInfo, rt: Runtime): Record<string, Tensor>;
  /**
   * Required: move `param` in place (`param.sub_(…)`, `state.v.mul_(…)`), given `grad`
   * (same shape as the parameter) and this parameter's `state` from `init()`. Traced:
   * only tensor ops, no reads of values (E_TRACE otherwise).
   *
   * `prepared` is what {@link prepare} returned for this step (`hp`'s placeholders), made
   * once and shared by every parameter's update. It is optional because a caller may trace
   * `update()` alone (a one-parameter test): an optimizer whose prepare() makes values
   * computes them itself then (`prepared ?? this.prepare(hp)`). Nothing is kept on the
   * instance between the two, so one instance can serve several step programs.
   */
  update(param: Tensor, grad: Tensor, state: Record<string, Tensor>, hp: StepHyper, prepared?: P): void;
  /**
   * Traced once per step before the per-parameter `update()` calls: values every parameter's
   * update shares (Adam's bias corrections from `hp.step`, () tensors), returned to the
   * caller, which passes them to each `update()` as `prepared`. Keeping them out of
   * `update()` lets the runtime replay the updates of all parameters side by side
   * (`traceEach`). Default (the base class): nothing (`undefined`).
   *
   * An optimizer written before `prepared` existed (prepare() returning nothing and keeping
   * its values on the instance) still works: the loop calls prepare() then update() in that
   * order, as it always did.
   */
  prepare?(hp: StepHyper): P;
  /**
   * The learning rate at `step` (from 1), read by the loop in TypeScript before each step
   * and passed in as `hp.lr`: schedules live here. Default (the base class): `config.lr`.
   */
  learningRate(step: number): number;
}
