/** Shared base of the Router family: the routing program and joining a Trainer. */
import { Type } from '@sinclair/typebox';
import type { Runtime, Tensor } from '../../../bridge/index.js';
import type { TrainingHooks } from '../../hooks.js';
import { PluginBase } from '../../plugin.js';
import { checkKeys, pluginName } from '../contract.js';
import { define, type Program } from '../../program.js';
import type { RouteResult, Router, RouterDims, RouterParamSpec, RouterTraits } from './types.js';

/** Config fields every router has; spread them into a plugin's schema. */
export const RouterFields = {
  auxWeight: Type.Number({ minimum: 0, default: 0.01, description: 'weight of the auxiliary (load-balancing) loss in the training loss' }),
};

/**
 * The routing program a model installs at its router hook point for `router` (any Router,
 * whether or not it extends {@link RouterBase}): inputs x (N, D) then the layer's
 * parameters in `params(dims)` order, each checked against its declared shape at every
 * run; outputs weights (N, E) and aux () (0 when `route()` gives none). Defined, not
 * awaited: a trace error throws here, a definition error surfaces at the next flush.
 */
export function routerProgram(rt: Runtime, router: Router, dims: RouterDims): Program {
  const specs = router.params(dims);
  const names = Object.keys(specs);
  const inputs: Record<string, object> = { x: { shape: ['N', dims.dim] } };
  for (const n of names) inputs[`param:${n}`] = { shape: specs[n].shape };
  return define(rt, { name: `${router.meta.name}-router`, inputs }, (ins) => {
    const params = Object.fromEntries(names.map((n) => [n, ins[`param:${n}`]]));
    const r = router.route(ins.x, params, dims);
    // a misspelled 'aux' would train without the load-balancing loss, silently
    checkKeys(pluginName(router), "route()'s result", r, { expected: ['weights'], optional: ['aux'] });
    return [r.weights, r.aux ?? rt.zeros([])];
  });
}

export abstract class RouterBase<C extends { auxWeight: number }> extends PluginBase<C> implements Router<C> {
  abstract params(dims: RouterDims): Record<string, RouterParamSpec>;
  abstract route(x: Tensor, params: Record<string, Tensor>, dims: RouterDims): RouteResult;

  /**
   * What the weights promise ({@link RouterTraits}); override it. The default is only for
   * routers written before traits existed: sparse with k = `config.k` when the config has an
   * integer `k`, else dense, never dropping tokens. The conformance suite fails a router
   * that leaves it to this default, naming the fix.
   */
  get traits(): RouterTraits {
    const k = (this.config as Record<string, unknown>).k;
    return typeof k === 'number' && Number.isInteger(k) ? { routing: 'sparse', k, dropsTokens: false } : { routing: 'dense', dropsTokens: false };
  }

  get auxWeight(): number {
    return this.config.auxWeight;
  }

  /** This router's hook program for layers of `dims` ({@link routerProgram}). */
  program(rt: Runtime, dims: RouterDims): Program {
    return routerProgram(rt, this, dims);
  }

  /** In training, the MoE layers' auxiliary losses join the loss, times `auxWeight`. */
  attach(hooks: TrainingHooks): void {
    if (this.auxWeight > 0) hooks.addLoss(`${this.meta.name}.aux`, (t) => t.model.auxLoss().mul(this.auxWeight));
  }
}
