/**
 * Sliding window: keep the most recent `budget` tokens of every layer and head.
 *
 * The score of a cached token is its absolute position, so when the cache is full the
 * runtime drops the oldest `evict` tokens (and after prefill keeps the `budget` newest). It
 * ignores attention entirely, which makes it the baseline the importance-based policies
 * (Scissorhands, H2O) and StreamingLLM's attention sinks are compared with. With
 * `positions: 'original'` a kept token keeps its position embedding.
 *
 * Method: local (windowed) attention as in Beltagy et al., "Longformer", 2020,
 * https://arxiv.org/abs/2004.05150; compared against in Liu et al., "Scissorhands", NeurIPS
 * 2023, https://arxiv.org/abs/2305.17118.
 *
 * ```ts
 * model.setKVPolicy(slidingWindow({ budget: 64 }));
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { KVPolicyBase, KVPolicyFields } from '../../sdk/families/kv-policies/base.js';
import type { KVInputs } from '../../sdk/families/kv-policies/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link SlidingWindow}. */
export const SlidingWindowConfig = Type.Object({
  ...KVPolicyFields,
  evict: Type.Integer({ minimum: 1, default: 1, description: 'oldest tokens dropped at once when the cache is full (at most budget)' }),
}, { additionalProperties: false });
export type SlidingWindowConfig = Static<typeof SlidingWindowConfig>;

/** Score = position: newer tokens rank higher. No per-token state. */
export class SlidingWindow extends KVPolicyBase<SlidingWindowConfig> {
  /** (B, H, C) i64 positions -> (B, H, C) f32 scores; f32 is exact for positions below 2^24. */
  score({ pos }: KVInputs): Tensor {
    return pos.to('f32');
  }
}

/** The `sliding-window` registration: `slidingWindow({ budget })`. */
export const slidingWindow = definePlugin({
  name: 'sliding-window',
  version: '1.0.0',
  family: 'kv-policy',
  schema: SlidingWindowConfig,
  description: 'keep the most recent `budget` tokens per layer and head (score = position)',
  paper: 'https://arxiv.org/abs/2004.05150',
  create: (config, meta) => new SlidingWindow(config, meta),
});
