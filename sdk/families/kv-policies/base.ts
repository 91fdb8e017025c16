/**
 * Shared base of the KVPolicy family (types.ts): the config fields every policy has, the
 * scoring program the runtime replays at a model's `kv` hook point, the hook's options, and
 * the mask helpers policies build their scores from (all traced: tensor ops only).
 */
import { Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, Tensor } from '../../../bridge/index.js';
import { PluginBase } from '../../plugin.js';
import { checkKeys, pluginName } from '../contract.js';
import { define, type Program } from '../../program.js';
import type { KVCacheOptions, KVInputs, KVPolicy, KVScore } from './types.js';

/** Config fields every budgeted KV policy has; spread them into a plugin's schema. */
export const KVPolicyFields = {
  budget: Type.Integer({ minimum: 1, default: 256, description: 'cached tokens kept per layer, batch row and head' }),
  bits: Type.Union([Type.Literal(32), Type.Literal(8), Type.Literal(4)], { default: 32, description: 'stored bits of kept keys and values: 32, or 8 / 4 (group-wise, f16 scale and minimum)' }),
  group: Type.Optional(Type.Integer({ minimum: 1, description: 'quantization group along the head dim (must divide it); default min(32, head dim)' })),
  positions: Type.Union([Type.Literal('original'), Type.Literal('cache')], { default: 'original', description: "'original': kept tokens keep their positions; 'cache' (rotary models): positions inside the cache" }),
};

/** What {@link KVPolicyBase} reads from a config: every field optional (`full` has no budget). */
export interface KVConfig {
  budget?: number;
  bits?: 32 | 8 | 4;
  group?: number;
  positions?: 'original' | 'cache';
  evict?: number;
  history?: number | null;
}

/** The options `model_hook(model, 'kv', program, opts)` takes (besides `layers`). */
export interface KVHookOptions {
  budget: number | null;
  evict: number;
  history: number | null;
  positions: 'original' | 'cache';
  bits: 32 | 8 | 4;
  /** Omitted when the policy leaves it to the runtime (min(32, D)). */
  group?: number;
  /** Each state's starting value, in `state()` order. */
  state: number[];
}

const isInt = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min;

/**
 * `budget` and `cache()` checked against each other: E_ARG naming the field. Run for every
 * policy a model installs (a third-party one need not extend the base).
 */
export function checkKVOptions(who: string, budget: unknown, cache: KVCacheOptions): void {
  const fail = (param: string, msg: string) => new LiaisonError('E_ARG', `${who}: ${msg}`, { param });
  if (budget !== null && !isInt(budget, 1)) throw fail('budget', `budget must be an integer >= 1 or null (keep everything), got ${String(budget)}`);
  const { evict, history, positions, bits, group } = cache;
  if (!isInt(evict, 1) || (budget !== null && evict > (budget as number))) throw fail('evict', `evict (tokens dropped at once) must be an integer in [1, budget = ${String(budget)}], got ${String(evict)}`);
  if (history !== null && !isInt(history, 1)) throw fail('history', `history must be an integer >= 1 or null (every prompt row), got ${String(history)}`);
  if (positions !== 'original' && positions !== 'cache') throw fail('positions', `positions must be 'original' or 'cache', got ${String(positions)}`);
  if (bits !== 32 && bits !== 8 && bits !== 4) throw fail('bits', `bits must be 32, 8 or 4, got ${String(bits)}`);
  if (group !== null && !isInt(group, 1)) throw fail('group', `group must be an integer >= 1 or null (min(32, head dim)), got ${String(group)}`);
}

/**
 * The program a model runs at its KV hook point for `policy` (any KVPolicy, whether or not
 * it extends {@link KVPolicyBase}). Inputs, in wire order: keys, values (B, H, C, D), attn
 * (B, H, R, C), pos (B, H, C) i64, then the per-token state (B, H, C) f32 in `state()`
 * order; outputs scores (B, H, C), then the new state. C and R are symbolic: the one trace
 * serves the prefill (C = T0, R = min(T0, history)) and the decoding fires (R >= 1: the
 * steps since the last fire; types.ts says when).
 * Defined, not awaited: a trace error throws here, a definition error surfaces at the next
 * flush. A policy that declares state must return all of it, under its names and no other
 * (E_TRACE with param 'state', naming the keys): a misspelled or missing key would
 * otherwise keep the first values for ever.
 */
export function kvPolicyProgram(rt: Runtime, policy: KVPolicy): Program {
  const names = Object.keys(policy.state());
  const inputs: Record<string, object> = {
    keys: { shape: ['B', 'H', 'C', 'D'] }, values: { shape: ['B', 'H', 'C', 'D'] },
    attn: { shape: ['B', 'H', 'R', 'C'] }, pos: { dtype: 'i64', shape: ['B', 'H', 'C'] },
  };
  for (const n of names) inputs[`state:${n}`] = { dtype: 'f32', shape: ['B', 'H', 'C'] };
  const who = pluginName(policy);
  return define(rt, { name: `${policy.meta.name}-kv`, inputs }, (ins) => {
    const state = Object.fromEntries(names.map((n) => [n, ins[`state:${n}`]]));
    const r = policy.score({ keys: ins.keys, values: ins.values, attn: ins.attn, pos: ins.pos, state });
    if (r instanceof Tensor) {
      // a state the policy declares but never returns would keep its first values forever
      if (names.length) throw new LiaisonError('E_TRACE', `${who}: score() returned only scores, but state() declares ${names.map((n) => `'${n}'`).join(', ')}; return { scores, state: { ${names.join(', ')} } } with every state tensor (an unchanged one as it came in)`, { param: 'state' });
      return [r];
    }
    checkKeys(who, "score()'s result", r, { expected: ['scores'], optional: names.length ? ['state'] : [], tensors: ['scores'], param: 'state' });
    const declared = names.map((n) => `'${n}'`).join(', ');
    if (names.length) checkKeys(who, "score()'s state", r.state, { expected: names, fix: `state() declares ${declared}; return each (an unchanged one as it came in)`, param: 'state' });
    return [r.scores, ...names.map((n) => r.state![n])];
  });
}

/** Options for the runtime's `model_hook(model, 'kv', program, opts)`, checked ({@link checkKVOptions}). */
export function kvHookOptions(policy: KVPolicy): KVHookOptions {
  const cache = policy.cache();
  checkKVOptions(pluginName(policy), policy.budget, cache);
  const { evict, history, positions, bits, group } = cache;
  return { budget: policy.budget, evict, history, positions, bits, ...(group === null ? {} : { group }), state: Object.values(policy.state()) };
}

// ---- mask helpers (traced; bool masks, true = 1) ----

/** (B, H, 1) i64: p_max, the newest position held by each (b, h) (−1 when empty). */
export function latest(pos: Tensor): Tensor {
  return pos.amax(-1, true);
}

/** (B, H, C) bool: the slots holding a token. */
export function occupied(pos: Tensor): Tensor {
  return pos.ge(0);
}

/**
 * (B, H, R, 1) i64: each query row's age in steps, R − 1 − i for row i (0 for the newest
 * query). R is symbolic in the one trace, so it is counted from a column of `attn`.
 */
export function queryAges(attn: Tensor): Tensor {
  return attn.narrow(-1, 0, 1).ge(-1).cumsum(2).flip(2).sub(1);
}

/**
 * (B, H, R, C) bool: the slots each query row could see — a token at a position no later
 * than the row's query, p_max − R + 1 + i for row i. For the newest row that is every
 * occupied slot; older rows (prefill, or decoding steps since the last fire) exclude the
 * tokens after their query, and left padding.
 */
export function visible(attn: Tensor, pos: Tensor, top: Tensor = latest(pos), ages: Tensor = queryAges(attn)): Tensor {
  // row i sees pos <= p_max − age_i  <=>  p_max − pos >= age_i (and the slot is occupied)
  return top.sub(pos).unsqueeze(2).ge(ages).logicalAnd(pos.ge(0).unsqueeze(2));
}

/** (B, H, C) bool: the `r` most recent tokens of each (b, h) (positions p_max − r + 1 .. p_max, those held). */
export function newest(pos: Tensor, r: number, top: Tensor = latest(pos)): Tensor {
  return pos.gt(top.sub(r)).logicalAnd(pos.ge(0));
}

/** (B, H, C): `scores` with +inf where `mask` (bool, broadcastable) is true — never evicted while there is another choice. */
export function protect(scores: Tensor, mask: Tensor): Tensor {
  return scores.maskedFill(mask, Infinity);
}

/**
 * Base class of the family: `budget` and `cache()` from the config's fields (defaults as in
 * {@link KVCacheOptions}), no state, and `evict <= budget` checked at construction — so an
 * override of `cache()` or `budget` may read only `this.config` (the subclass's own fields
 * are not set yet when the base constructor calls it).
 */
export abstract class KVPolicyBase<C extends KVConfig> extends PluginBase<C> implements KVPolicy<C> {
  constructor(config: Readonly<C>, meta: KVPolicy['meta']) {
    super(config, meta);
    checkKVOptions(this.id, this.budget, this.cache());
  }

  get budget(): number | null {
    return this.config.budget ?? null;
  }

  cache(): KVCacheOptions {
    const c = this.config;
    return { evict: c.evict ?? 1, history: c.history ?? null, positions: c.positions ?? 'original', bits: c.bits ?? 32, group: c.group ?? null };
  }

  state(): Record<string, number> {
    return {};
  }

  abstract score(inputs: KVInputs): Tensor | KVScore;

  /** This policy's hook program ({@link kvPolicyProgram}). */
  program(rt: Runtime): Program {
    return kvPolicyProgram(rt, this);
  }

  /** Options for the runtime's `model_hook(model, 'kv', program, opts)` ({@link kvHookOptions}). */
  hookOptions(): KVHookOptions {
    return kvHookOptions(this);
  }
}
