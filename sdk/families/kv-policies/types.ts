/**
 * The `KVPolicy` family: which cached keys and values a decoder keeps under a memory
 * budget (Scissorhands, H2O, StreamingLLM, sliding window, the full cache;
 * docs/architecture.md, "Plugins and families"; docs/protocol.md, "Hook points").
 *
 * The cache of one attention layer is a fixed buffer of C slots per (batch row b, head h):
 * keys and values (B, H, C, D) — stored f32, or quantized group-wise to 8 or 4 bits —, the
 * absolute position of the token in each slot `pos` (B, H, C) i64, -1 for an empty slot,
 * and the policy's per-token state (B, H, C) f32. A plugin writes `score()`: one number per
 * cached token, per layer and head, traced once into a program the runtime replays at its
 * `kv` hook point.
 *
 * When `score()` runs (per attention layer):
 * - once at the end of prefill, after the prompt's attention: C = T0 (the prompt's tokens,
 *   empty slots for left padding), R = min(T0, history) query rows;
 * - while decoding, only when its scores are needed, given the attention rows of every step
 *   since it last ran (R >= 1, oldest first; C = the slots in use): when a row holds `budget`
 *   tokens and must evict before the next token, or when its row buffer is full: min(evict, 64)
 *   rows, fewer (at least 4) where more would pass 1/8 of the cache's bytes (64 for budget
 *   null, so a policy that never evicts still sees every row; a policy with neither a
 *   budget nor state runs at the prefill only, as nothing uses its later scores). Between two runs no
 *   slot is freed, so the R rows are over the tokens held now (0 where a slot was empty), and
 *   `visible()` excludes from each row the tokens written after its query. A policy whose
 *   state update is exact over R rows — the prefill demands it anyway: a sum of the rows, a
 *   count decayed by each row's age and the old state decayed R times — computes exactly what
 *   running at every step would.
 *
 * Eviction (the runtime's, from the latest scores, per (b, h): each head keeps its own tokens):
 * - after prefill, a row holding more than `budget` tokens keeps its `budget` highest-scoring;
 * - at a decoding step, before the new token is written, a row holding `budget` tokens drops
 *   its `evict` lowest-scoring (bulk eviction); the new token takes a freed slot.
 * So the cache never holds more than `budget` tokens, attention included. Scores at empty
 * slots are ignored. Protecting tokens (a recent window, attention sinks) is the policy's
 * job: give them +inf scores (`protect()` in base.ts). A kept token keeps its absolute
 * position (`positions: 'original'`) or, for rotary models, is renumbered inside the cache
 * (`positions: 'cache'`, as StreamingLLM does).
 */
import type { Tensor } from '../../../bridge/index.js';
import type { PluginInstance } from '../../plugin.js';

/** What `score()` sees, per layer, after the newest token(s) were attended to. */
export interface KVInputs {
  /**
   * (B, H, C, D): the cached keys, as the attention uses them (rotated for rotary models;
   * dequantized when stored quantized); empty slots hold zeros.
   */
  keys: Tensor;
  /** (B, H, C, D): the cached values (dequantized when stored quantized); empty slots hold zeros. */
  values: Tensor;
  /**
   * (B, H, R, C): softmax attention weights of the R newest queries over the C slots. Row i
   * is the query at position p_max − R + 1 + i, p_max = max(pos) of that (b, h). 0 at an
   * empty slot and at a token after the query (at prefill, and while decoding at the tokens
   * written after an older row's step); a left-padding query's row is all zeros. At prefill
   * R = min(T0, history), so `attn.sum(2)` is the column sums over the prefill (H2O's
   * starting statistics); while decoding R is the steps since the policy last ran (>= 1).
   */
  attn: Tensor;
  /** (B, H, C) i64: absolute position of the token in each slot, −1 for an empty slot. */
  pos: Tensor;
  /**
   * Per-token state declared by `state()`, each (B, H, C) f32, in declaration order: a new
   * token's slot starts at the declared value; evicted with its token.
   */
  state: Record<string, Tensor>;
}

/** What `score()` returns when the policy keeps per-token state. */
export interface KVScore {
  /** (B, H, C): higher is kept first; values at empty slots are ignored. */
  scores: Tensor;
  /**
   * New per-token state (B, H, C) under exactly the names `state()` declares — all of
   * them, an unchanged one as it came in, no other (refused at trace time otherwise); it
   * is evicted along with its tokens. Required when `state()` declares any.
   */
  state?: Record<string, Tensor>;
}

/** How the runtime stores and evicts a policy's cache (besides the budget). */
export interface KVCacheOptions {
  /** Tokens dropped at once when a row's cache is full at a decoding step: an integer in [1, budget]. Default 1. */
  evict: number;
  /** Query rows given to the policy at prefill (the last `history` of the prompt); null: all of them. */
  history: number | null;
  /** `'original'`: a kept token keeps its absolute position; `'cache'` (rotary models only): positions inside the cache. */
  positions: 'original' | 'cache';
  /** Stored bits of keys and values: 32 (the model's dtype), or 8 / 4 (group-wise asymmetric, f16 scale and minimum). */
  bits: 32 | 8 | 4;
  /** Quantization group along the head dim (must divide it); null: min(32, D). Ignored at 32 bits. */
  group: number | null;
}

export interface KVPolicy<C = unknown> extends PluginInstance<C> {
  /** Tokens kept per layer, batch row and head; null keeps everything (the `full` policy: no eviction). */
  readonly budget: number | null;
  /** How the runtime stores and evicts this policy's cache. Base: from the config's fields, defaults as in {@link KVCacheOptions}. */
  cache(): KVCacheOptions;
  /** Setup hook: per-token state the runtime keeps beside the cache, by name, with the value new tokens start at. Default: none. */
  state(): Record<string, number>;
  /** Required: a score per cached token (traced once: tensor ops only, no reads or awaits). */
  score(inputs: KVInputs): Tensor | KVScore;
}
