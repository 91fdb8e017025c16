/** Shared base of the MomentumOptimizer family: plugins write `update()` and maybe `init()`. */
import { Type } from '@sinclair/typebox';
import type { Runtime, Tensor } from '../../../bridge/index.js';
import type { ParamInfo } from '../../hooks.js';
import { PluginBase } from '../../plugin.js';
import type { MomentumOptimizer, StepHyper } from './types.js';

/** Config fields every optimizer has; spread them into a plugin's schema. */
export const OptimizerFields = {
  lr: Type.Number({ exclusiveMinimum: 0, default: 0.1, description: 'learning rate (step size η)' }),
};

export abstract class MomentumOptimizerBase<C extends { lr: number }> extends PluginBase<C> implements MomentumOptimizer<C> {
  init(_param: Tensor, _info: ParamInfo, _rt: Runtime): Record<string, Tensor> {
    return {};
  }

  abstract update(param: Tensor, grad: Tensor, state: Record<string, Tensor>, hp: StepHyper): void;

  learningRate(_step: number): number {
    return this.config.lr;
  }
}
