/**
 * Soft routing: every expert serves every token, weighted by a softmax over the experts.
 *
 * Router logits g(x) (N, E) are linear, `x · W` with W (D, E) (`hidden: 0`), or non-linear,
 * `act(x · W1) · W2` with W1 (D, h) and W2 (h, E) (`hidden: h > 0`); the combine weights
 * are `probs = softmax(g(x))`, so the layer's output is `Σ_e probs_e(x) · expert_e(x)` and
 * the router learns jointly with the experts by gradient descent: the soft-routed
 * mixture of experts whose training dynamics Liao & Kyrillidis analyse (a feature-learning
 * phase in which the router is "guided" by the experts, then pruning and fine-tuning).
 * Dense: no token is dropped and no expert skipped, so the MoE layer runs every expert on
 * every token.
 *
 * Auxiliary losses, both optional: Switch's load-balancing loss `E · Σ_e f_e · P_e` (f_e
 * the fraction of tokens whose most probable expert is e, P_e the mean probability of e;
 * off by default, `auxWeight: 0`, since soft routing serves every expert anyway) and the
 * router z-loss of ST-MoE, the mean over tokens of `logsumexp(g(x))²` (weighed by `zWeight`).
 *
 * Method: Liao & Kyrillidis, "Guided by the Experts: Provable Feature Learning Dynamic of
 * Soft-Routed Mixture-of-Experts", 2025, https://arxiv.org/abs/2510.07205; z-loss: Zoph et
 * al., "ST-MoE", 2022, https://arxiv.org/abs/2202.08906.
 *
 * ```ts
 * const router = soft({ hidden: 16 });
 * const model = await Model.build(rt, { kind: 'moe', inputs: 32, outputs: 1, experts: 8, hidden: 4, router });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Tensor } from '../../bridge/index.js';
import { RouterBase, RouterFields } from '../../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec, RouterTraits } from '../../sdk/families/routers/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link Soft}. */
export const SoftConfig = Type.Object({
  ...RouterFields,
  auxWeight: Type.Number({ minimum: 0, default: 0, description: 'weight of the Switch load-balancing loss in the training loss (0: off; soft routing serves every expert anyway)' }),
  hidden: Type.Integer({ minimum: 0, default: 0, description: 'width h of the non-linear router act(x·W1)·W2, W1 (D, h), W2 (h, E); 0: the linear router x·W, W (D, E)' }),
  activation: Type.Union([Type.Literal('tanh'), Type.Literal('relu'), Type.Literal('gelu'), Type.Literal('sigmoid')], { default: 'tanh', description: "the non-linear router's activation (applies when hidden > 0)" }),
  std: Type.Number({ exclusiveMinimum: 0, default: 0.02, description: 'standard deviation of the normal init of the router weights (W, or W1 and W2)' }),
}, { additionalProperties: false });
export type SoftConfig = Static<typeof SoftConfig>;

/** Router logits g(x) (N, E) from x (N, D): linear `x·W` or non-linear `act(x·W1)·W2`. */
export function softLogits(x: Tensor, params: Record<string, Tensor>, activation: SoftConfig['activation']): Tensor {
  if (params.gate) return x.matmul(params.gate);
  const h = x.matmul(params.w1); // (N, h)
  const a = activation === 'relu' ? h.relu() : activation === 'gelu' ? h.gelu() : activation === 'sigmoid' ? h.sigmoid() : h.tanh();
  return a.matmul(params.w2);
}

/** Switch's load-balancing loss E · Σ_e f_e · P_e from probs (N, E): 1 when balanced, up to E. */
export function switchAux(probs: Tensor, experts: number): Tensor {
  // f_e counts tokens by their most probable expert: a count, so no gradient flows through it
  const f = (probs.rt.call('one_hot', [probs.argmax(-1), experts]) as Tensor).to('f32').mean(0); // (E,)
  return f.mul(probs.mean(0)).sum().mul(experts); // ()
}

/** The router z-loss: mean over tokens of logsumexp(logits)², logits (N, E) -> (). */
export function zLoss(logits: Tensor): Tensor {
  return logits.logsumexp(-1).square().mean();
}

/** Softmax routing over all experts; parameters `gate` (D, E), or `w1` (D, h) and `w2` (h, E). */
export class Soft extends RouterBase<SoftConfig> {
  /** Dense combine weights: every expert weighs every token, none is dropped. */
  override get traits(): RouterTraits {
    return { form: 'weights', routing: 'dense', dropsTokens: false };
  }

  params(dims: RouterDims): Record<string, RouterParamSpec> {
    this.check(dims);
    const { hidden, std } = this.config;
    if (hidden === 0) return { gate: { shape: [dims.dim, dims.experts], init: 'normal', std } };
    return { w1: { shape: [dims.dim, hidden], init: 'normal', std }, w2: { shape: [hidden, dims.experts], init: 'normal', std } };
  }

  /** x (N, D) -> weights = probs (N, E), rows summing to 1; aux (), zloss (). */
  route(x: Tensor, params: Record<string, Tensor>, dims: RouterDims): RouteResult {
    this.check(dims);
    const logits = softLogits(x, params, this.config.activation); // (N, E)
    const probs = logits.softmax(-1); // (N, E)
    return { weights: probs, probs, aux: switchAux(probs, dims.experts), zloss: zLoss(logits) };
  }

  private check(dims: RouterDims): void {
    if (!(Number.isInteger(dims.experts) && dims.experts >= 1)) {
      throw new LiaisonError('E_ARG', `${this.id}: the layer has ${dims.experts} experts; soft routing needs at least 1`, { param: 'experts' });
    }
  }
}

/** The `soft` registration: `soft({ hidden, activation, std, auxWeight, zWeight })`. */
export const soft = definePlugin({
  name: 'soft',
  version: '1.0.0',
  family: 'router',
  schema: SoftConfig,
  description: 'soft routing: softmax over all experts of a linear or non-linear (one hidden layer) router, trained jointly with the experts',
  paper: 'https://arxiv.org/abs/2510.07205',
  create: (config, meta) => new Soft(config, meta),
});
