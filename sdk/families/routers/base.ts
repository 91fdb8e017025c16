/** Shared base of the Router family: the routing program and joining a Trainer. */
import { Type } from '@sinclair/typebox';
import type { Runtime, Tensor } from '../../../bridge/index.js';
import type { TrainingHooks } from '../../hooks.js';
import { PluginBase } from '../../plugin.js';
import { define, type Program } from '../../program.js';
import type { RouteResult, Router, RouterDims, RouterParamSpec } from './types.js';

/** Config fields every router has; spread them into a plugin's schema. */
export const RouterFields = {
  auxWeight: Type.Number({ minimum: 0, default: 0.01, description: 'weight of the auxiliary (load-balancing) loss in the training loss' }),
};

export abstract class RouterBase<C extends { auxWeight: number }> extends PluginBase<C> implements Router<C> {
  abstract params(dims: RouterDims): Record<string, RouterParamSpec>;
  abstract route(x: Tensor, params: Record<string, Tensor>, dims: RouterDims): RouteResult;

  get auxWeight(): number {
    return this.config.auxWeight;
  }

  /**
   * The routing program a model installs at its router hook point: inputs x (N, D) then
   * the layer's parameters in `params()` order; outputs weights (N, E) and aux ().
   */
  program(rt: Runtime, dims: RouterDims): Program {
    const names = Object.keys(this.params(dims));
    const inputs: Record<string, object> = { x: { shape: ['N', dims.dim] } };
    for (const n of names) inputs[`param:${n}`] = {};
    return define(rt, { name: `${this.meta.name}-router`, inputs }, (ins) => {
      const params = Object.fromEntries(names.map((n) => [n, ins[`param:${n}`]]));
      const { weights, aux } = this.route(ins.x, params, dims);
      return [weights, aux ?? rt.zeros([])];
    });
  }

  /** In training, the MoE layers' auxiliary losses join the loss, times `auxWeight`. */
  attach(hooks: TrainingHooks): void {
    if (this.auxWeight > 0) hooks.addLoss(`${this.meta.name}.aux`, (t) => (t.rt.call('model_aux_loss', [t.model.handle]) as Tensor).mul(this.auxWeight));
  }
}
