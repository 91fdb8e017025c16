/**
 * Top-k gating with a load-balancing loss: the sparse mixture-of-experts baseline.
 *
 * Router logits `z = x · W_gate` and probabilities `p = softmax(z)` (N, E); each token goes
 * to its k most probable experts with those probabilities as combine weights (form
 * 'weights'), renormalised over the k chosen when `normalize` is on and k > 1 (with k = 1
 * renormalising would make every weight 1 and cut the router off from the task's gradient,
 * so Switch keeps the raw probability). The auxiliary loss is Switch's `E · Σ_e f_e · P_e`,
 * with f_e the fraction of tokens whose top-1 expert is e and P_e the mean router
 * probability of e: 1 when the load is uniform, up to E when one expert takes everything.
 * The router z-loss (ST-MoE) is the mean over tokens of logsumexp(z)², weighted by `zWeight`.
 *
 * Capacity (`capacity` = c, off by default): each expert takes at most ⌈c·N·k/E⌉ of a
 * batch's N tokens; the rest are dropped (their weight for that expert is 0, so a top-1
 * token that loses its expert has a row of zeros and passes through the residual only).
 * Priority is GShard's: every token's first choice before any token's second choice, and
 * within one choice rank first come, first served by position in the batch (row order,
 * sequence by sequence) — not by probability. Weights renormalised over the k chosen stay
 * as they were when one of them is dropped (GShard's order: normalise, then drop).
 *
 * Method: Fedus, Zoph & Shazeer, "Switch Transformers", JMLR 2022,
 * https://arxiv.org/abs/2101.03961 (k = 1, capacity); Shazeer et al., "Outrageously Large
 * Neural Networks", ICLR 2017, https://arxiv.org/abs/1701.06538 (top-k gating); Lepikhin et
 * al., "GShard", ICLR 2021, https://arxiv.org/abs/2006.16668 (the dispatch priority); Zoph et
 * al., "ST-MoE", 2022, https://arxiv.org/abs/2202.08906 (router z-loss).
 *
 * ```ts
 * const router = topk({ k: 2, capacity: 1.25, zWeight: 1e-3 });
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
  capacity: Type.Optional(Type.Number({ exclusiveMinimum: 0, description: 'capacity factor c: an expert takes at most ⌈c·N·k/E⌉ of N tokens, first choices first, then by position; the rest are dropped (unset: no limit, nothing dropped)' })),
  std: Type.Number({ exclusiveMinimum: 0, default: 0.02, description: 'standard deviation of the normal init of the gate weights W_gate (D, E)' }),
}, { additionalProperties: false });
export type TopKConfig = Static<typeof TopKConfig>;

/**
 * 0/1 (N, E): which of the (token, choice) pairs `idx` (N, k) an expert keeps within its
 * ⌈c·N·k/E⌉ slots, choice rank first, then position.
 */
export function capacityMask(idx: Tensor, k: number, experts: number, capacity: number): Tensor {
  const rt = idx.rt;
  const choice = (j: number) => (rt.call('one_hot', [idx.slice(1, j, j + 1).squeeze(1), experts]) as Tensor).to('f32'); // (N, E)
  const first = choice(0);
  // the limit in f64, in the order the suite computes it ((c·N)·k / E), so both agree exactly
  const n = first.sum().to('f64');
  const limit = rt.call('ceil', [n.mul(capacity).mul(k).div(experts)]) as Tensor; // ()
  let keep = first.mul(0);
  let used = first.sum(0).mul(0); // (E,) slots taken by earlier choice ranks
  for (let j = 0; j < k; j++) {
    const oh = j === 0 ? first : choice(j);
    const place = oh.cumsum(0).add(used); // (N, E): 1-based arrival order at each expert
    const kept = oh.mul(place.le(limit).to('f32'));
    used = used.add(kept.sum(0));
    keep = keep.add(kept);
  }
  return keep;
}

/** Top-k softmax gating; one parameter per MoE layer, `gate` (D, E). */
export class TopK extends RouterBase<TopKConfig> {
  /** Sparse (form 'weights', the default), k experts per token; drops tokens only with a capacity. */
  override get traits(): RouterTraits {
    const { k, capacity } = this.config;
    return { routing: 'sparse', k, ...(capacity === undefined ? {} : { capacity }), dropsTokens: capacity !== undefined };
  }

  params(dims: RouterDims): Record<string, RouterParamSpec> {
    this.check(dims);
    return { gate: { shape: [dims.dim, dims.experts], init: 'normal', std: this.config.std } };
  }

  /** x (N, D) -> weights (N, E), nonzero only at each token's kept chosen experts; aux, zloss (); probs (N, E). */
  route(x: Tensor, { gate }: Record<string, Tensor>, dims: RouterDims): RouteResult {
    this.check(dims);
    const { k, normalize, capacity } = this.config;
    const logits = x.matmul(gate); // (N, E)
    const probs = logits.softmax(-1); // (N, E)
    const [top, idx] = probs.topk(k, -1); // (N, k) each, most probable first
    const chosen = normalize && k > 1 ? top.div(top.sum(-1, true)) : top;
    // scatter keeps autograd into the chosen probabilities, hence into W_gate
    let weights = probs.mul(0).scatter(1, idx, chosen); // (N, E)
    if (capacity !== undefined) weights = weights.mul(capacityMask(idx, k, dims.experts, capacity));
    // f_e: fraction of tokens whose top-1 is e (no gradient); P_e: mean probability of e
    const first = idx.slice(1, 0, 1).squeeze(1); // (N,)
    const f = (x.rt.call('one_hot', [first, dims.experts]) as Tensor).to('f32').mean(0); // (E,)
    const aux = f.mul(probs.mean(0)).sum().mul(dims.experts); // ()
    const zloss = logits.logsumexp(-1).square().mean(); // ()
    return { weights, aux, zloss, probs };
  }

  private check(dims: RouterDims): void {
    if (this.config.k > dims.experts) {
      throw new LiaisonError('E_ARG', `${this.id}: config field 'k' (experts per token) is ${this.config.k}, more than the layer's ${dims.experts} experts`, { param: 'k' });
    }
  }
}

/** The `topk` registration: `topk({ k, normalize, capacity, std, auxWeight, zWeight })`. */
export const topk = definePlugin({
  name: 'topk',
  version: '1.1.0',
  family: 'router',
  schema: TopKConfig,
  description: 'top-k softmax gating (k = 1: Switch) with the Switch load-balancing loss E·Σ f_e·P_e, a capacity factor that drops overflow tokens, and the router z-loss',
  paper: 'https://arxiv.org/abs/2101.03961',
  create: (config, meta) => new TopK(config, meta),
});
