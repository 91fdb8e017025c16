/**
 * H2O (Heavy-Hitter Oracle): keep the tokens that received the most attention so far, plus
 * a window of the most recent `recent`, evicting one token per step.
 *
 * Each cached token accumulates the attention every query paid it — at prefill the column
 * sums over the prompt's rows (`attn.sum(2)`), then one row per decoding step; the token
 * with the smallest sum outside the recent window is dropped. The sum favours old tokens
 * (they were looked at by more queries), which is the paper's greedy oracle as stated;
 * Scissorhands counts low-attention events instead.
 *
 * Paper: Zhang et al., "H2O: Heavy-Hitter Oracle for Efficient Generative Inference of
 * Large Language Models", NeurIPS 2023, https://arxiv.org/abs/2306.14048.
 *
 * ```ts
 * model.setKVPolicy(h2o({ budget: 256, recent: 128 }));
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError } from '../../bridge/index.js';
import { KVPolicyBase, KVPolicyFields, latest, protect } from '../../sdk/families/kv-policies/base.js';
import type { KVInputs, KVScore } from '../../sdk/families/kv-policies/types.js';
import { definePlugin, type PluginMeta } from '../../sdk/plugin.js';

/** Config of {@link H2O}. */
export const H2OConfig = Type.Object({
  ...KVPolicyFields,
  recent: Type.Optional(Type.Integer({ minimum: 0, description: 'most recent tokens always kept, fewer than budget; default budget / 2 (the paper\'s even split)' })),
}, { additionalProperties: false });
export type H2OConfig = Static<typeof H2OConfig>;

/** Accumulated attention, the recent window protected. State: `acc`, starting at 0. */
export class H2O extends KVPolicyBase<H2OConfig> {
  /** The recent window, its default resolved. */
  readonly recent: number;

  constructor(config: H2OConfig, meta: PluginMeta) {
    super(config, meta);
    this.recent = config.recent ?? Math.floor(config.budget / 2);
    if (this.recent >= config.budget) throw new LiaisonError('E_ARG', `${this.id}: recent (${this.recent}) must be fewer than budget (${config.budget}), or no heavy hitter fits`, { param: 'recent' });
  }

  override state(): Record<string, number> {
    return { acc: 0 };
  }

  /** acc (B, H, C) += the column sums of attn (B, H, R, C); scores = acc, +inf for the recent window. */
  score({ attn, pos, state }: KVInputs): KVScore {
    const acc = state.acc.add(attn.sum(2));
    // the recent window: positions p_max − recent + 1 .. p_max (empty slots' scores are ignored)
    return { scores: protect(acc, pos.gt(latest(pos).sub(this.recent))), state: { acc } };
  }
}

/** The `h2o` registration: `h2o({ budget, recent })`. */
export const h2o = definePlugin({
  name: 'h2o',
  version: '1.0.0',
  family: 'kv-policy',
  schema: H2OConfig,
  description: 'heavy hitters (the most accumulated attention, prefill included) plus a recent window',
  paper: 'https://arxiv.org/abs/2306.14048',
  create: (config, meta) => new H2O(config, meta),
});
