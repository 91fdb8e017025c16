/**
 * Scissorhands: drop the tokens most often unimportant over a history window, `evict` at
 * a time, never the `recent` newest — per layer and per head.
 *
 * The persistence of importance hypothesis: a token that drew little attention over the
 * last steps will draw little later too. So each cached token counts its low-attention
 * events — its attention weight below a threshold (1/T by default, T the tokens that query
 * saw: below a uniform share) — and when the cache holds `budget` tokens the `evict` with
 * the highest count (outside the recent window) go.
 *
 * The paper counts over a sliding history window of w steps, which needs w numbers per
 * token. Here the count is exponentially weighted with horizon w instead — count ←
 * (1 − 1/w)·count + [low] — so the state stays one number per token (and a token that was
 * low long ago is forgiven gradually rather than all at once). Each call consumes all R
 * query rows it is given at once — the prompt's at prefill, then the steps' since the
 * runtime's last call while decoding —, each row's threshold from the tokens it saw, older
 * rows weighted by the decay, and the count carried in decayed R times: exactly what R
 * one-row calls would compute. The program is O(R·C) elementwise work: no sort.
 *
 * Paper: Liu et al., "Scissorhands: Exploiting the Persistence of Importance Hypothesis for
 * LLM KV Cache Compression at Test Time", NeurIPS 2023, https://arxiv.org/abs/2305.17118.
 *
 * ```ts
 * model.setKVPolicy(scissorhands({ budget: 128, window: 64, recent: 16, evict: 8 }));
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError } from '../../bridge/index.js';
import { KVPolicyBase, KVPolicyFields, latest, protect, queryAges, visible } from '../../sdk/families/kv-policies/base.js';
import type { KVInputs, KVScore } from '../../sdk/families/kv-policies/types.js';
import { definePlugin, type PluginMeta } from '../../sdk/plugin.js';

/** Config of {@link Scissorhands}. */
export const ScissorhandsConfig = Type.Object({
  ...KVPolicyFields,
  window: Type.Integer({ minimum: 1, default: 64, description: 'history window w: the count decays by 1 − 1/w per step (horizon w steps)' }),
  threshold: Type.Union([Type.Literal('uniform'), Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1 })], { default: 'uniform', description: "attention below this is a low-importance event: 'uniform' (1/T, T the tokens the query saw) or a number in (0, 1)" }),
  recent: Type.Optional(Type.Integer({ minimum: 0, description: 'most recent tokens never dropped, fewer than budget; default budget / 8' })),
  evict: Type.Optional(Type.Integer({ minimum: 1, description: 'tokens dropped at once when the cache is full, at most budget − recent; default max(1, budget / 16)' })),
}, { additionalProperties: false });
export type ScissorhandsConfig = Static<typeof ScissorhandsConfig>;

/** The resolved window sizes of a config (defaults relative to the budget), checked. */
function windows(who: string, c: ScissorhandsConfig): { recent: number; evict: number } {
  const recent = c.recent ?? Math.floor(c.budget / 8);
  if (recent >= c.budget) throw new LiaisonError('E_ARG', `${who}: recent (r = ${recent}) must be fewer than budget (${c.budget})`, { param: 'recent' });
  const evict = c.evict ?? Math.min(Math.max(1, Math.floor(c.budget / 16)), c.budget - recent);
  if (evict > c.budget - recent) throw new LiaisonError('E_ARG', `${who}: evict (m = ${evict}) must be at most budget − recent = ${c.budget - recent}: only those tokens may be dropped`, { param: 'evict' });
  return { recent, evict };
}

/** Score = −(decayed count of low-attention events), +inf for the recent window. State: `count`, starting at 0. */
export class Scissorhands extends KVPolicyBase<ScissorhandsConfig> {
  readonly recent: number;
  readonly evict: number;
  /** 1 − 1/w: the per-step decay of the count. */
  readonly decay: number;

  constructor(config: ScissorhandsConfig, meta: PluginMeta) {
    super({ ...config, ...windows(`kv-policy '${meta.name}'`, config) }, meta);
    ({ recent: this.recent, evict: this.evict } = this.config as Required<ScissorhandsConfig>);
    this.decay = 1 - 1 / config.window;
  }

  override state(): Record<string, number> {
    return { count: 0 };
  }

  /**
   * count (B, H, C) ← decay^R · count + Σ_i decay^age_i · [attn_i < threshold_i and visible],
   * over the R query rows (age_i = R − 1 − i): R one-row updates folded into one (R = 1:
   * decay · count + [low]).
   */
  score({ attn, pos, state }: KVInputs): KVScore {
    const top = latest(pos); // (B, H, 1)
    const ages = queryAges(attn); // (B, H, R, 1)
    const seen = visible(attn, pos, top, ages); // (B, H, R, C)
    const { threshold } = this.config;
    // below 1/T, T the tokens the row saw: attn·T < 1 (a padding row sees none; `seen` masks it)
    const below = threshold === 'uniform' ? attn.mul(seen.sum(-1, true)).lt(1) : attn.lt(threshold);
    const low = below.logicalAnd(seen); // (B, H, R, C) bool
    // decay^age (B, H, R, 1); at w = 1 (decay 0) only the newest row counts
    const weight = this.decay > 0 ? ages.to('f32').mul(Math.log(this.decay)).exp() : ages.eq(0).to('f32');
    // the count is R steps old: decay^R = decay · the oldest row's weight (the smallest; 0 at w = 1)
    const count = state.count.mul(weight.amin(2).mul(this.decay)).add(low.mul(weight).sum(2));
    // the recent window: positions p_max − recent + 1 .. p_max (empty slots' scores are ignored)
    return { scores: protect(count.neg(), pos.gt(top.sub(this.recent))), state: { count } };
  }
}

/** The `scissorhands` registration: `scissorhands({ budget, window, threshold, recent, evict })`. */
export const scissorhands = definePlugin({
  name: 'scissorhands',
  version: '1.0.0',
  family: 'kv-policy',
  schema: ScissorhandsConfig,
  description: 'drop the tokens most often below the attention threshold over a history window, m at a time, never the r newest',
  paper: 'https://arxiv.org/abs/2305.17118',
  create: (config, meta) => new Scissorhands(config, meta),
});
