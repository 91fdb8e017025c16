/**
 * Expert choice: each expert picks its tokens, rather than each token its experts.
 *
 * Router probabilities `p = softmax(x · W_gate)` over experts (N, E), as in token choice;
 * then every expert e takes the C tokens with the largest p[:, e] (C = ⌈c·N/E⌉ with c the
 * capacity factor, at most N), and weighs its output for each by that probability (form
 * 'indices': indices (E, C), gates (E, C)). Every expert is exactly full — the load is
 * balanced by construction, so there is no auxiliary loss — while a token may be taken by
 * several experts or by none (dropped: it passes through the residual only). On average a
 * token is served by c experts, so c plays the part of top-k's k in the compute budget.
 *
 * Causality: whether an expert takes a token depends on the other tokens of the batch, the
 * later ones of its sequence included; the paper names this limit for auto-regressive
 * decoding. Ties between equal probabilities go to whichever `topk` puts first.
 *
 * Method: Zhou et al., "Mixture-of-Experts with Expert Choice Routing", NeurIPS 2022,
 * https://arxiv.org/abs/2202.09368 (its EC-CF2 is capacity 2, the default here). The router
 * z-loss (ST-MoE, https://arxiv.org/abs/2202.08906) is given, weighted by `zWeight`.
 *
 * ```ts
 * const router = expertChoice({ capacity: 2 });
 * const model = await Model.build(rt, { kind: 'gpt', vocab: 128, context: 64, moe: { experts: 4, hidden: 64, router } });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { RouterBase, RouterFields } from '../../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec, RouterTraits } from '../../sdk/families/routers/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link ExpertChoice}. */
export const ExpertChoiceConfig = Type.Object({
  ...RouterFields,
  auxWeight: Type.Number({ minimum: 0, default: 0, description: 'weight of the auxiliary loss: expert choice has none (every expert is full by construction), so this only scales a zero' }),
  capacity: Type.Number({ exclusiveMinimum: 0, default: 2, description: 'capacity factor c: each expert takes C = ⌈c·N/E⌉ of N tokens (at most N); the mean number of experts per token' }),
  std: Type.Number({ exclusiveMinimum: 0, default: 0.02, description: 'standard deviation of the normal init of the gate weights W_gate (D, E)' }),
}, { additionalProperties: false });
export type ExpertChoiceConfig = Static<typeof ExpertChoiceConfig>;

/**
 * Each expert's top C tokens by its column of `probs` (N, E): indices (E, C) i64 and their
 * probabilities (E, C), C = min(N, ⌈c·N/E⌉). C follows N at every run, so the top-k is the
 * runtime's `topk_frac`, whose k is that share of the size its input has when it runs (the
 * traced program never sees N).
 */
export function expertTopTokens(probs: Tensor, capacity: number, experts: number): { indices: Tensor; gates: Tensor } {
  const [gates, indices] = probs.rt.call('topk_frac', [probs.transpose(0, 1), capacity, experts], undefined, 2) as Tensor[]; // (E, C) each
  return { indices, gates };
}

/** Expert-choice routing; one parameter per MoE layer, `gate` (D, E). */
export class ExpertChoice extends RouterBase<ExpertChoiceConfig> {
  /** Form 'indices': C = ⌈c·N/E⌉ tokens per expert, so a token may get none. */
  override get traits(): RouterTraits {
    return { form: 'indices', routing: 'sparse', capacity: this.config.capacity, dropsTokens: true };
  }

  params(dims: RouterDims): Record<string, RouterParamSpec> {
    return { gate: { shape: [dims.dim, dims.experts], init: 'normal', std: this.config.std } };
  }

  /** x (N, D) -> indices (E, C) i64, gates (E, C); zloss (); probs (N, E). */
  route(x: Tensor, { gate }: Record<string, Tensor>, dims: RouterDims): RouteResult {
    const logits = x.matmul(gate); // (N, E)
    const probs = logits.softmax(-1); // (N, E)
    const { indices, gates } = expertTopTokens(probs, this.config.capacity, dims.experts);
    const zloss = logits.logsumexp(-1).square().mean(); // ()
    return { indices, gates, zloss, probs };
  }
}

/** The `expert-choice` registration: `expertChoice({ capacity, std, zWeight })`. */
export const expertChoice = definePlugin({
  name: 'expert-choice',
  version: '1.0.0',
  family: 'router',
  schema: ExpertChoiceConfig,
  description: 'expert choice: each expert takes its top ⌈c·N/E⌉ tokens by router probability (balanced by construction; a token may get no expert)',
  paper: 'https://arxiv.org/abs/2202.09368',
  create: (config, meta) => new ExpertChoice(config, meta),
});
