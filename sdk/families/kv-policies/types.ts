/**
 * The `KVPolicy` family: which cached keys and values a decoder keeps under a memory
 * budget (Scissorhands, sliding window, StreamingLLM, H2O; docs/architecture.md, "Plugins and families").
 *
 * A plugin writes `score()`: one number per cached token, per layer and head. The runtime
 * keeps the `budget` highest-scoring tokens of each head, in their original order, every
 * time the cache grows past the budget. `score()` is traced once into a program that the
 * runtime replays per layer per decoding step. Positions are absolute, so evicting a token
 * never moves the others.
 */
import type { Tensor } from '../../../bridge/index.js';
import type { PluginInstance } from '../../plugin.js';

/** What `score()` sees, per layer, after the newest token joined the cache. */
export interface KVInputs {
  /** (B, H, T, D): cached keys of this layer. */
  keys: Tensor;
  /** (B, H, T, D): cached values. */
  values: Tensor;
  /** (B, H, T): the newest query's attention weights over the T cached tokens (rows sum to 1). */
  attn: Tensor;
  /** (B, H, T) i64: absolute positions of the cached tokens. */
  pos: Tensor;
  /** Per-token state declared by `state()`, each (B, H, T) f32; new tokens start at the declared value. */
  state: Record<string, Tensor>;
}

export interface KVScore {
  /** (B, H, T): higher is kept first. */
  scores: Tensor;
  /**
   * New per-token state (B, H, T) under exactly the names `state()` declares — all of
   * them, an unchanged one as it came in, no other (refused at trace time otherwise); it
   * is evicted along with its tokens. Required when `state()` declares any.
   */
  state?: Record<string, Tensor>;
}

export interface KVPolicy<C = unknown> extends PluginInstance<C> {
  /** Tokens kept per layer and head. */
  readonly budget: number;
  /** Setup hook: per-token state the runtime keeps beside the cache, by name, with the value new tokens start at. Default: none. */
  state(): Record<string, number>;
  /** Required: a score per cached token (traced: tensor ops only). */
  score(inputs: KVInputs): Tensor | KVScore;
}
