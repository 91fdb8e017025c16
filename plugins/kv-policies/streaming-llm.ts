/**
 * StreamingLLM: keep the first `sinks` tokens (the attention sinks) and the most recent
 * `budget − sinks`, evicting the oldest token between them.
 *
 * Softmax attention must put its mass somewhere, and trained models dump it on the first
 * tokens whatever they say; dropping them (a plain sliding window) wrecks the distribution.
 * Keeping a few sinks plus a recent window lets a model generate far past its trained
 * context — provided positions are numbered inside the cache (`positions: 'cache'`, the
 * default here, rotary models only): the kept tokens are 0..n−1, so no query ever sits at a
 * position the model never saw in training. Scores: the position, +inf for the sinks.
 *
 * Paper: Xiao et al., "Efficient Streaming Language Models with Attention Sinks", ICLR 2024,
 * https://arxiv.org/abs/2309.17453.
 *
 * ```ts
 * model.setKVPolicy(streamingLLM({ budget: 256, sinks: 4 }));
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Tensor } from '../../bridge/index.js';
import { KVPolicyBase, KVPolicyFields, protect } from '../../sdk/families/kv-policies/base.js';
import type { KVInputs } from '../../sdk/families/kv-policies/types.js';
import { definePlugin, type PluginMeta } from '../../sdk/plugin.js';

/** Config of {@link StreamingLLM}. */
export const StreamingLLMConfig = Type.Object({
  ...KVPolicyFields,
  positions: Type.Union([Type.Literal('original'), Type.Literal('cache')], { default: 'cache', description: "'cache' (rotary models): positions inside the cache, which streams past the trained context; 'original': absolute positions" }),
  sinks: Type.Integer({ minimum: 0, default: 4, description: 'first tokens of the sequence always kept (attention sinks); fewer than budget' }),
}, { additionalProperties: false });
export type StreamingLLMConfig = Static<typeof StreamingLLMConfig>;

/** Score = position, +inf for the sinks: the oldest non-sink token goes first. No state. */
export class StreamingLLM extends KVPolicyBase<StreamingLLMConfig> {
  constructor(config: StreamingLLMConfig, meta: PluginMeta) {
    super(config, meta);
    if (config.sinks >= config.budget) throw new LiaisonError('E_ARG', `${this.id}: sinks (${config.sinks}) must be fewer than budget (${config.budget}), or no recent token fits`, { param: 'sinks' });
  }

  /** (B, H, C) i64 -> (B, H, C) f32; positions count from each row's first real token, so the sinks are pos < sinks. */
  score({ pos }: KVInputs): Tensor {
    return protect(pos.to('f32'), pos.lt(this.config.sinks));
  }
}

/** The `streaming-llm` registration: `streamingLLM({ budget, sinks })`. */
export const streamingLLM = definePlugin({
  name: 'streaming-llm',
  version: '1.0.0',
  family: 'kv-policy',
  schema: StreamingLLMConfig,
  description: 'attention sinks (the first tokens) plus a recent window; positions inside the cache to stream past the context',
  paper: 'https://arxiv.org/abs/2309.17453',
  create: (config, meta) => new StreamingLLM(config, meta),
});
