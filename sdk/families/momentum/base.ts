/** Shared base of the MomentumOptimizer family: plugins write `update()` and maybe `init()`. */
import { type Static, Type } from '@sinclair/typebox';
import type { Runtime, Tensor } from '../../../bridge/index.js';
import type { ParamInfo } from '../../hooks.js';
import { PluginBase } from '../../plugin.js';
import { checkStateKept, pluginName } from '../contract.js';
import { type ScheduleConfig, ScheduleFields, scheduledRate } from './schedule.js';
import type { MomentumOptimizer, StepHyper } from './types.js';

/** Config fields every optimizer has — the step size and its schedule; spread them into a plugin's schema. */
export const OptimizerFields = {
  lr: Type.Number({ exclusiveMinimum: 0, default: 0.1, description: 'learning rate (step size η)' }),
  ...ScheduleFields,
};
const OptimizerObject = Type.Object(OptimizerFields);
/** The config an optimizer gets from {@link OptimizerFields}: `lr` and its schedule. */
export type OptimizerConfig = Static<typeof OptimizerObject>;

/** L2 weight decay, added to the gradient as λ·param before the update (PyTorch's SGD `weight_decay`). */
export const WeightDecayField = {
  weightDecay: Type.Number({ minimum: 0, default: 0, description: 'L2 weight decay λ added to the gradient as λ·param (0: none)' }),
};

/**
 * Base of the family. `P` is what {@link prepare} returns once per step and every
 * `update()` receives as `prepared` (default: nothing).
 */
export abstract class MomentumOptimizerBase<C extends ScheduleConfig, P = void> extends PluginBase<C> implements MomentumOptimizer<C, P> {
  init(_param: Tensor, _info: ParamInfo, _rt: Runtime): Record<string, Tensor> {
    return {};
  }

  abstract update(param: Tensor, grad: Tensor, state: Record<string, Tensor>, hp: StepHyper, prepared?: P): void;

  prepare(_hp: StepHyper): P {
    return undefined as P;
  }

  /** `config.lr` under the configured schedule and warm-up (sdk/families/momentum/schedule.ts). */
  learningRate(step: number): number {
    return scheduledRate(this.config, step);
  }

  /**
   * The gradient with L2 weight decay λ·param added (`config.weightDecay`, when the plugin has
   * that field): decay is a config constant known at trace time, so with none the program
   * has no extra op.
   */
  protected decayed(param: Tensor, grad: Tensor): Tensor {
    const wd = (this.config as { weightDecay?: number }).weightDecay ?? 0;
    return wd > 0 ? grad.add(param.mul(wd)) : grad;
  }
}

/**
 * `optimizer.update()` traced for one parameter (`name`), as the Trainer's step and the
 * conformance suite trace it: on a copy of the state record, so that an entry the update
 * replaces instead of changing in place stays out of the caller's record, then checked
 * (sdk/families/contract.ts {@link checkStateKept}: E_TRACE naming the entry). `prepared`
 * is what `optimizer.prepare?.(hp)` returned for this step.
 */
export function traceUpdate(optimizer: MomentumOptimizer, name: string, param: Tensor, grad: Tensor, state: Record<string, Tensor>, hp: StepHyper, prepared?: unknown): void {
  const own = { ...state };
  optimizer.update(param, grad, own, hp, prepared);
  checkStateKept(pluginName(optimizer), name, own, state);
}
