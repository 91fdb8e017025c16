/**
 * Soft MoE: every expert slot takes a weighted average of all tokens, every token a
 * weighted average of all slot outputs — fully differentiable, nothing dropped.
 *
 * Logits `z = x · Φ` (N, E·S) for E experts with S slots each; `dispatch` is the softmax of
 * z over tokens (each slot's mix of the N tokens: slot_in[e, s] = Σ_n dispatch[n, e, s]·x_n),
 * `combine` its softmax over the E·S slots (each token's mix of the slot outputs) — form
 * 'slots'. With `normalize` (the paper's recipe for stable training at large widths) x is
 * l2-normalised over D, each column of Φ over D, and the logits scaled by a learnt scalar
 * `scale` (init 1). Every expert runs on S slots, whatever N: its compute is fixed per batch.
 *
 * Causality: a slot mixes every token of the batch, later positions of a sequence included,
 * so in a decoder a token's output depends on the tokens after it. The paper leaves
 * auto-regressive decoding open for this reason; a language model trained with it sees its
 * future, and its perplexity is not comparable with a causal model's.
 *
 * Method: Puigcerver, Riquelme, Mustafa & Houlsby, "From Sparse to Soft Mixtures of
 * Experts", ICLR 2024, https://arxiv.org/abs/2308.00951. The router z-loss (ST-MoE,
 * https://arxiv.org/abs/2202.08906) over each token's slot logits is given, × `zWeight`.
 *
 * ```ts
 * const router = softMoe({ slots: 2 });
 * const model = await Model.build(rt, { kind: 'gpt', vocab: 128, context: 64, moe: { experts: 4, hidden: 64, router } });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { RouterBase, RouterFields } from '../../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec, RouterTraits } from '../../sdk/families/routers/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link SoftMoe}. */
export const SoftMoeConfig = Type.Object({
  ...RouterFields,
  auxWeight: Type.Number({ minimum: 0, default: 0, description: 'weight of the auxiliary loss: Soft MoE has none (every slot is a full mix of tokens), so this only scales a zero' }),
  slots: Type.Integer({ minimum: 1, default: 1, description: 'S: slots per expert; each expert runs on S mixed tokens per batch' }),
  normalize: Type.Boolean({ default: true, description: "l2-normalise the tokens and Φ's columns over D and scale the logits by a learnt scalar (the paper's recipe)" }),
  std: Type.Number({ exclusiveMinimum: 0, default: 0.02, description: 'standard deviation of the normal init of Φ (D, E·S)' }),
}, { additionalProperties: false });
export type SoftMoeConfig = Static<typeof SoftMoeConfig>;

/** Soft MoE slots; parameters per MoE layer: `phi` (D, E·S), and `scale` (1,) with `normalize`. */
export class SoftMoe extends RouterBase<SoftMoeConfig> {
  /** Form 'slots', S per expert; dense and never dropping (every token is in every slot). */
  override get traits(): RouterTraits {
    return { form: 'slots', routing: 'dense', slots: this.config.slots, dropsTokens: false };
  }

  params(dims: RouterDims): Record<string, RouterParamSpec> {
    const phi: RouterParamSpec = { shape: [dims.dim, dims.experts * this.config.slots], init: 'normal', std: this.config.std };
    return this.config.normalize ? { phi, scale: { shape: [1], init: 'ones' } } : { phi };
  }

  /** x (N, D) -> dispatch, combine (N, E, S); zloss (); probs (N, E), each token's combine mass per expert. */
  route(x: Tensor, { phi, scale }: Record<string, Tensor>, dims: RouterDims): RouteResult {
    const { slots } = this.config;
    // the small eps keeps a zero token (or column) at 0 rather than NaN
    const logits = this.config.normalize
      ? x.div(x.norm(2, -1, true).add(1e-6)).matmul(phi.div(phi.norm(2, 0, true).add(1e-6)).mul(scale)) // (N, E·S)
      : x.matmul(phi); // (N, E·S)
    const dispatch = logits.softmax(0).reshape([-1, dims.experts, slots]); // (N, E, S), columns sum to 1 over N
    const combine = logits.softmax(-1).reshape([-1, dims.experts, slots]); // (N, E, S), rows sum to 1 over E·S
    const zloss = logits.logsumexp(-1).square().mean(); // ()
    return { dispatch, combine, zloss, probs: combine.sum(-1) };
  }
}

/** The `soft-moe` registration: `softMoe({ slots, normalize, std, zWeight })`. */
export const softMoe = definePlugin({
  name: 'soft-moe',
  version: '1.0.0',
  family: 'router',
  schema: SoftMoeConfig,
  description: 'Soft MoE: slots that mix all tokens (softmax over tokens) and tokens that mix all slot outputs (softmax over slots); never drops',
  paper: 'https://arxiv.org/abs/2308.00951',
  create: (config, meta) => new SoftMoe(config, meta),
});
