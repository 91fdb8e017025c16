/** Shared base of the Router family: the routing program and joining a Trainer. */
import { Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, type Tensor } from '../../../bridge/index.js';
import type { ModelLike, StepTrace, TrainingHooks } from '../../hooks.js';
import { PluginBase } from '../../plugin.js';
import { checkKeys, pluginName } from '../contract.js';
import { define, type Program } from '../../program.js';
import { FORM_FIELDS, type RouteForm, type RouteResult, type Router, type RouterDims, type RouterParamSpec, type RouterTraits } from './types.js';

/** Config fields every router has; spread them into a plugin's schema. */
export const RouterFields = {
  auxWeight: Type.Number({ minimum: 0, default: 0.01, description: 'weight of the auxiliary (load-balancing) loss in the training loss' }),
  zWeight: Type.Number({ minimum: 0, default: 0, description: 'weight of the router z-loss (mean of logsumexp(logits)², ST-MoE) in the training loss; 0: off' }),
};

/** The form of a router's route results: its traits' `form`, `'weights'` when it declares none. */
export function routeForm(router: Router): RouteForm {
  return router.traits?.form ?? 'weights';
}

const OPTIONAL: (keyof RouteResult)[] = ['aux', 'zloss', 'probs'];

/**
 * The routing program a model installs at its router hook point for `router` (any Router,
 * whether or not it extends {@link RouterBase}): inputs x (N, D) then the layer's
 * parameters in `params(dims)` order, each checked against its declared shape at every
 * run; outputs by the router's form ({@link routeForm}), at fixed positions:
 * - `'weights'`: weights (N, E), aux (), zloss (), probs;
 * - `'indices'`: indices (E, C) i64, gates (E, C), aux, zloss, probs;
 * - `'slots'`: dispatch (N, E, S), combine (N, E, S), aux, zloss, probs;
 * aux and zloss 0 when `route()` gives none, probs (N, E) or an empty (0,) when it gives none.
 * A field of another form is E_ARG naming it. Defined, not awaited: a trace error throws
 * here, a definition error surfaces at the next flush.
 */
export function routerProgram(rt: Runtime, router: Router, dims: RouterDims): Program {
  const specs = router.params(dims);
  const names = Object.keys(specs);
  const form = routeForm(router);
  const fields = FORM_FIELDS[form];
  if (!fields) throw new LiaisonError('E_ARG', `${pluginName(router)}: traits.form must be one of ${Object.keys(FORM_FIELDS).join(', ')}, got ${JSON.stringify(form)}`, { param: 'traits' });
  const inputs: Record<string, object> = { x: { shape: ['N', dims.dim] } };
  for (const n of names) inputs[`param:${n}`] = { shape: specs[n].shape };
  return define(rt, { name: `${router.meta.name}-router`, inputs }, (ins) => {
    const params = Object.fromEntries(names.map((n) => [n, ins[`param:${n}`]]));
    const r = router.route(ins.x, params, dims);
    if (r !== null && typeof r === 'object') {
      for (const [other, its] of Object.entries(FORM_FIELDS)) {
        const stray = its.find((f) => !fields.includes(f) && (r as Record<string, unknown>)[f] !== undefined);
        if (stray) throw new LiaisonError('E_ARG', `${pluginName(router)}: route()'s result has '${stray}', a field of form '${other}', but the router's traits declare form '${form}' (fields ${fields.map((f) => `'${f}'`).join(', ')}); declare traits.form '${other}' or leave it out`, { param: stray });
      }
    }
    // a misspelled 'aux' would train without the load-balancing loss, silently
    checkKeys(pluginName(router), "route()'s result", r, { expected: [...fields], optional: OPTIONAL });
    const probs = r.probs ?? rt.zeros([0]);
    return [...fields.map((f) => r[f] as Tensor), r.aux ?? rt.zeros([]), r.zloss ?? rt.zeros([]), probs];
  });
}

/** The router statistics of a model's MoE layers after the last forward (op `model_router_stats`), each (L, …) over its L MoE layers, detached. */
export interface RouterStats {
  /** (L, E): each expert's share of the routed (token, expert) mass. */
  load: Tensor;
  /** (L,): the fraction of tokens no expert served. */
  dropped: Tensor;
  /** (L,): the mean per-token entropy (nats) of the router's probs. */
  entropy: Tensor;
  /** (L,): the load-balancing losses. */
  aux: Tensor;
  /** (L,): the router z-losses. */
  zloss: Tensor;
}

/** {@link RouterStats} of `model`'s last forward; E_ARG when it has no MoE layer. */
export function routerStats(model: ModelLike): RouterStats {
  const [load, dropped, entropy, aux, zloss] = model.rt.call('model_router_stats', [model.handle], undefined, 5) as Tensor[];
  return { load, dropped, entropy, aux, zloss };
}

// one stats call per traced step, however many metrics read it
const statsOf = new WeakMap<StepTrace, RouterStats>();
const stepStats = (t: StepTrace): RouterStats => {
  let s = statsOf.get(t);
  if (!s) statsOf.set(t, (s = routerStats(t.model)));
  return s;
};

/**
 * The router metrics a Trainer reports (`progress` / `epoch` events, `metrics[name]`), each
 * over the model's MoE layers: `router.entropy` (mean per-token routing entropy, nats, the
 * mean over layers), `router.load` ((E,) each expert's share, the mean over layers),
 * `router.dropped` (the fraction of tokens no expert served, mean over layers), `router.aux`
 * and `router.zloss` (summed over layers, before their weights: what the loss terms add).
 */
export function addRouterMetrics(hooks: TrainingHooks): void {
  hooks.addMetric('router.entropy', (t) => stepStats(t).entropy.mean());
  hooks.addMetric('router.load', (t) => stepStats(t).load.mean(0));
  hooks.addMetric('router.dropped', (t) => stepStats(t).dropped.mean());
  hooks.addMetric('router.aux', (t) => stepStats(t).aux.sum());
  hooks.addMetric('router.zloss', (t) => stepStats(t).zloss.sum());
}

export abstract class RouterBase<C extends { auxWeight: number; zWeight?: number }> extends PluginBase<C> implements Router<C> {
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

  get zWeight(): number {
    return this.config.zWeight ?? 0;
  }

  /** This router's hook program for layers of `dims` ({@link routerProgram}). */
  program(rt: Runtime, dims: RouterDims): Program {
    return routerProgram(rt, this, dims);
  }

  /**
   * In training, the MoE layers' auxiliary losses join the loss, times `auxWeight`, and their
   * z-losses times `zWeight`; the router metrics ({@link addRouterMetrics}) are reported.
   */
  attach(hooks: TrainingHooks): void {
    addRouterMetrics(hooks);
    if (this.auxWeight > 0) hooks.addLoss(`${this.meta.name}.aux`, (t) => t.model.auxLoss().mul(this.auxWeight));
    if (this.zWeight > 0) hooks.addLoss(`${this.meta.name}.zloss`, (t) => t.model.auxLoss('zloss').mul(this.zWeight));
  }
}
