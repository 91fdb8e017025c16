/**
 * Top-k gating with a load-balancing loss: the sparse mixture-of-experts baseline.
 *
 * Router probabilities `p = softmax(x · W_gate)` (N, E); each token goes to its k most
 * probable experts with those probabilities as combine weights, renormalised over the k
 * chosen when `normalize` is on and k > 1 (with k = 1 renormalising would make every weight
 * 1 and cut the router off from the task's gradient, so Switch keeps the raw probability).
 * The auxiliary loss is Switch's `E · Σ_e f_e · P_e`, with f_e the fraction of tokens whose
 * top-1 expert is e and P_e the mean router probability of e: 1 when the load is uniform,
 * up to E when one expert takes everything. No capacity limit: no token is dropped.
 *
 * Method: Fedus, Zoph & Shazeer, "Switch Transformers", JMLR 2022,
 * https://arxiv.org/abs/2101.03961 (k = 1); Shazeer et al., "Outrageously Large Neural
 * Networks", ICLR 2017, https://arxiv.org/abs/1701.06538 (top-k gating).
 *
 * ```ts
 * const router = topk({ k: 2 });
 * const model = await Model.build(rt, { kind: 'gpt', vocab: 128, context: 64, moe: { experts: 4, hidden: 64, router } });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Tensor } from '../../bridge/index.js';
import { RouterBase, RouterFields } from '../../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec, RouterTraits } from '../../sdk/families/routers/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link TopK}. */
export const TopKConfig = Type.Object({
  ...RouterFields,
  k: Type.Integer({ minimum: 1, default: 1, description: 'experts per token (1: Switch, 2: GShard-style top-2); at most the number of experts' }),
  normalize: Type.Boolean({ default: true, description: 'renormalise the k chosen probabilities to sum to 1 (applies when k > 1)' }),
  std: Type.Number({ exclusiveMinimum: 0, default: 0.02, description: 'standard deviation of the normal init of the gate weights W_gate (D, E)' }),
}, { additionalProperties: false });
export type TopKConfig = Static<typeof TopKConfig>;

/** Top-k softmax gating; one parameter per MoE layer, `gate` (D, E). */
export class TopK extends RouterBase<TopKConfig> {
  /** Sparse, k experts per token; no capacity, so no token is dropped. */
  override get traits(): RouterTraits {
    return { routing: 'sparse', k: this.config.k, dropsTokens: false };
  }

  params(dims: RouterDims): Record<string, RouterParamSpec> {
    this.check(dims);
    return { gate: { shape: [dims.dim, dims.experts], init: 'normal', std: this.config.std } };
  }

  /** x (N, D) -> weights (N, E), nonzero only at each token's k chosen experts; aux (). */
  route(x: Tensor, { gate }: Record<string, Tensor>, dims: RouterDims): RouteResult {
    this.check(dims);
    const { k, normalize } = this.config;
    const probs = x.matmul(gate).softmax(-1); // (N, E)
    const [top, idx] = probs.topk(k, -1); // (N, k) each, most probable first
    const chosen = normalize && k > 1 ? top.div(top.sum(-1, true)) : top;
    // scatter keeps autograd into the chosen probabilities, hence into W_gate
    const weights = probs.mul(0).scatter(1, idx, chosen); // (N, E)
    // f_e: fraction of tokens whose top-1 is e (no gradient); P_e: mean probability of e
    const first = idx.slice(1, 0, 1).squeeze(1); // (N,)
    const f = (x.rt.call('one_hot', [first, dims.experts]) as Tensor).to('f32').mean(0); // (E,)
    const p = probs.mean(0); // (E,)
    const aux = f.mul(p).sum().mul(dims.experts); // ()
    return { weights, aux };
  }

  private check(dims: RouterDims): void {
    if (this.config.k > dims.experts) {
      throw new LiaisonError('E_ARG', `${this.id}: config field 'k' (experts per token) is ${this.config.k}, more than the layer's ${dims.experts} experts`, { param: 'k' });
    }
  }
}

/** The `topk` registration: `topk({ k, normalize, std, auxWeight })`. */
export const topk = definePlugin({
  name: 'topk',
  version: '1.0.0',
  family: 'router',
  schema: TopKConfig,
  description: 'top-k softmax gating (k = 1: Switch) with the Switch load-balancing loss E·Σ f_e·P_e',
  paper: 'https://arxiv.org/abs/2101.03961',
  create: (config, meta) => new TopK(config, meta),
});
