/**
 * The full cache: keep every token (no budget, no eviction) — the reference every
 * compressing policy is measured against. With `bits: 8` or `4` it is the quantized full
 * cache: every token kept, each key and value vector stored group-wise in 8 or 4 bits.
 *
 * The runtime preallocates the prompt's tokens plus the decoding steps (generate) or the
 * sequence (kv_eval) as slots, so nothing is concatenated per step. The score program
 * still runs (the hook point's contract) but its scores are never used: the cheapest
 * possible program, the positions as they are.
 *
 * Method: the standard KV cache of autoregressive decoding (Vaswani et al., "Attention Is
 * All You Need", 2017, https://arxiv.org/abs/1706.03762); quantized storage as in KIVI
 * (Liu et al., 2024, https://arxiv.org/abs/2402.02750, asymmetric group-wise).
 *
 * ```ts
 * model.setKVPolicy(full());              // the same as setKVPolicy(null), as a plugin
 * model.setKVPolicy(full({ bits: 4 }));   // every token, 4-bit entries
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { KVPolicyBase, KVPolicyFields } from '../../sdk/families/kv-policies/base.js';
import type { KVInputs } from '../../sdk/families/kv-policies/types.js';
import { definePlugin } from '../../sdk/plugin.js';

const { bits, group, positions } = KVPolicyFields;

/** Config of {@link Full}: storage only, no budget. */
export const FullConfig = Type.Object({ bits, group, positions }, { additionalProperties: false });
export type FullConfig = Static<typeof FullConfig>;

/** Keeps everything: budget null. */
export class Full extends KVPolicyBase<FullConfig> {
  override get budget(): null {
    return null;
  }

  /** (B, H, C) i64 -> (B, H, C) f32: never read (nothing is evicted). */
  score({ pos }: KVInputs): Tensor {
    return pos.to('f32');
  }
}

/** The `full` registration: `full({ bits? })`. */
export const full = definePlugin({
  name: 'full',
  version: '1.0.0',
  family: 'kv-policy',
  schema: FullConfig,
  description: 'keep every token (no budget): the reference cache, optionally with quantized entries',
  paper: 'https://arxiv.org/abs/1706.03762',
  create: (config, meta) => new Full(config, meta),
});
