/**
 * Conformance suite of the KVPolicy family (sdk/families/kv-policies/types.ts).
 *
 * The unit cases trace `score()` as the runtime replays it per layer, on prefill-shaped
 * (R query rows, left padding) and decode-shaped (R = 1, empty slots) inputs. The
 * end-to-end cases install the policy on a small rotary GPT (random weights: the checks
 * compare the model with itself) and decode through its slot cache. For a factory the
 * suite sets `budget`, `evict` and `bits` itself where the schema has them: small budgets
 * to force evictions, large ones to check that a policy with room for everything changes
 * nothing. For an instance, its own config is used.
 */
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { kvHookOptions, kvPolicyProgram } from '../families/kv-policies/base.js';
import type { KVPolicy } from '../families/kv-policies/types.js';
import { Model } from '../model.js';
import type { Program } from '../program.js';
import { type CaseContext, type CaseDef, check, ConformanceFailure, isFactory, registrationCases, type Subject, values } from './suite.js';

type K = KVPolicy;

const VOCAB = 32;
const SMALL = 8;
const PROMPT = 4;
/** The trained context of the streaming case's model; it decodes STREAM × that. */
const CONTEXT = 32;
const STREAM = 3;
/**
 * Mean NLL tolerances of quantized entries against f32, on the suite's sharpened GPT (NLL
 * ≈ 3.5): measured |Δ| up to 2e-5 (8-bit) and 3.4e-4 (4-bit) over six seeds, while a
 * 2-token window moves it by ~1e-2 — so a broken quantizer does not pass.
 */
const QUANT_TOL: Record<8 | 4, number> = { 8: 1e-3, 4: 5e-3 };

/**
 * Weight matrices are scaled by this after the seeded init: at the init's scale a 2-layer
 * GPT's attention is nearly uniform and its greedy tokens barely depend on the cache (a
 * window of 2 tokens decodes what the full cache does), so no case could tell a policy's
 * evictions apart. Sharpened, the cache matters.
 */
const SHARPEN = 6;

/** A 2-layer rotary GPT (no learned positions: cached decoding may pass `context`); random weights, seeded, sharpened. */
async function gpt(rt: Runtime, context: number, seed: number): Promise<Model> {
  const model = await Model.build(rt, { kind: 'gpt', vocab: VOCAB, context: Math.max(32, context), dim: 16, layers: 2, heads: 2, mlpRatio: 2, positions: 'rotary' }, { seed });
  await rt.scope(() => {
    for (const [name, t] of Object.entries(model.state())) if (/(wte|qkv|proj|fc)\.weight$/.test(name)) t.mul_(SHARPEN);
  });
  return model;
}

function ids(rt: Runtime, rows: number, len: number, seed: number): Tensor {
  return rt.randint(0, VOCAB, [rows, len], { seed });
}

/** Whether the subject is a factory whose schema has `field` (so the suite may set it). */
function hasField(subject: Subject<K>, field: string): boolean {
  return isFactory(subject) && field in (subject.schema.properties as object);
}

/** A policy with room for `length` tokens, and that length (clipped to an instance's own budget). */
function roomy(ctx: CaseContext<K>, length: number, extra: Record<string, unknown> = {}): { policy: K; length: number } {
  const policy = ctx.plugin(ctx.canOverride ? { ...(hasField(ctx.subject, 'budget') ? { budget: Math.max(length, 64) } : {}), ...extra } : undefined);
  return { policy, length: Math.min(length, policy.budget ?? length) };
}

/** A policy forced to evict: budget SMALL where the suite can set it. */
function tight(ctx: CaseContext<K>, extra: Record<string, unknown> = {}): K {
  return ctx.plugin(ctx.canOverride && hasField(ctx.subject, 'budget') ? { budget: SMALL, ...extra } : undefined);
}

const keepsAll = (p: K) => (p.budget === null ? 'keeps every token (budget null): nothing is evicted, so there is no budget to hold' : undefined);

/** Runs the policy's program on (B, H, R, C) inputs; checks shapes and NaNs of every output. */
async function runScore(rt: Runtime, prog: Program, policy: K, inputs: { attn: Tensor; pos: Tensor }, dims: number[], seed: number, what: string): Promise<void> {
  const [B, H, , C] = dims;
  const init = policy.state();
  const names = Object.keys(init);
  await rt.scope(async () => {
    const kv = () => rt.randn([B, H, C, 4], { seed: seed++ });
    const outs = prog.run([kv(), kv(), inputs.attn, inputs.pos, ...names.map((n) => rt.full([B, H, C], init[n]))]) as Tensor[];
    const want = `${B},${H},${C}`;
    for (const [i, t] of outs.entries()) {
      const label = i === 0 ? 'scores' : `state '${names[i - 1]}'`;
      const shape = (await t.info()).shape.join();
      check(shape === want, `${what}: ${label} has shape [${shape}], expected [${want}] (B, H, C)`);
      check((await values(t)).every((v) => !Number.isNaN(v)), `${what}: ${label} holds NaN`);
    }
  });
}

/** The KVPolicy cases. */
export function kvPolicyCases(): CaseDef<K>[] {
  return [
    ...registrationCases<K>(),
    {
      name: 'score() traces; scores and every state (B, H, C) at prefill (R rows, left padding) and decoding (R = 1, empty slots); budget and cache() valid',
      async run({ rt, plugin, seed }) {
        const policy = plugin();
        check(policy.budget === null || (Number.isInteger(policy.budget) && policy.budget >= 1), `budget is ${policy.budget}, expected a positive integer or null`);
        try {
          kvHookOptions(policy);
        } catch (e) {
          if (e instanceof LiaisonError && e.code === 'E_ARG') throw new ConformanceFailure(`cache() options refused: ${e.message}`);
          throw e;
        }
        const init = policy.state();
        Object.keys(init).forEach((n) => check(Number.isFinite(init[n]), `state '${n}' starts at ${init[n]}, expected a finite number`));
        let prog: Program;
        try {
          prog = kvPolicyProgram(rt, policy); // the very program a model installs at its kv hook point
          await rt.flush();
        } catch (e) {
          if (e instanceof LiaisonError && e.code === 'E_TRACE' && e.param === 'state') throw new ConformanceFailure(e.message);
          if (e instanceof LiaisonError && e.code === 'E_TRACE') throw new ConformanceFailure(`score() cannot be traced (tensor ops only, no reads or awaits): ${e.message}`);
          throw e;
        }
        try {
          const [B, H, T] = [2, 3, 7];
          // prefill: row 1 left-padded by 3 slots; causal attention over the tokens each query saw
          const pos = rt.tensor(BigInt64Array.from([0, 1, 2, 3, 4, 5, 6, -1, -1, -1, 0, 1, 2, 3].map(BigInt)), [B, 1, T]).expand([B, H, T]).contiguous();
          const mask = rt.tensor([...Array(T * T).keys()].map((k) => (k % T <= Math.floor(k / T) ? 1 : 0)), [1, 1, T, T]);
          const pad = rt.tensor([1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1], [B, 1, 1, T]);
          const attn = rt.randn([B, H, T, T], { seed }).exp().mul(mask).mul(pad).mul(pad.transpose(2, 3));
          const prefill = attn.div(attn.sum(-1, true).add(1e-30));
          await runScore(rt, prog, policy, { attn: prefill, pos }, [B, H, T, T], seed + 1, 'at prefill');
          // a decoding step after evictions: scattered positions, one empty slot
          const dpos = rt.tensor(BigInt64Array.from([9, 3, -1, 11, 0, 7, 10, 4, 12, 2, 8, 5, 6, 1].map(BigInt)), [B, 1, T]).expand([B, H, T]).contiguous();
          const occ = dpos.ge(0).to('f32').unsqueeze(2);
          const step = rt.randn([B, H, 1, T], { seed: seed + 2 }).exp().mul(occ);
          await runScore(rt, prog, policy, { attn: step.div(step.sum(-1, true)), pos: dpos }, [B, H, 1, T], seed + 3, 'at a decoding step');
        } finally {
          prog.free();
        }
      },
    },
    {
      name: 'two decoding steps\' attention rows given at once score and update state as the two steps one by one (the runtime runs a policy only when it needs scores)',
      skipFor: (p) => (Object.keys(p.state()).length ? undefined : 'state() declares no per-token state: its scores depend on the latest inputs only'),
      async run({ rt, plugin, seed }) {
        const policy = plugin();
        const init = policy.state();
        const names = Object.keys(init);
        const prog = kvPolicyProgram(rt, policy);
        try {
          await rt.scope(async () => {
            const [B, H, C] = [2, 2, 6];
            // slots hold positions 0..5 scrambled; the newest (5) was written between the two steps
            const order = [3, 0, 5, 1, 4, 2];
            const pos2 = rt.tensor(BigInt64Array.from(order.map(BigInt)), [1, 1, C]).expand([B, H, C]).contiguous();
            const newest = pos2.eq(5); // (B, H, C)
            const pos1 = pos2.where(newest.logicalNot(), -1); // before it was written: an empty slot
            const row = (k: number, mask: Tensor) => {
              const a = rt.randn([B, H, 1, C], { seed: seed + k }).mul(3).exp().mul(mask.to('f32').unsqueeze(2));
              return a.div(a.sum(-1, true));
            };
            const a1 = row(1, pos1.ge(0));
            const a2 = row(2, pos2.ge(0));
            const kv = rt.randn([B, H, C, 4], { seed: seed + 3 });
            // a state built up by earlier steps; the newest token's starts at its init value
            const built = names.map((n, i) => rt.rand([B, H, C], { seed: seed + 10 + i }).mul(3).where(newest.logicalNot(), init[n]));
            const one = prog.run([kv, kv, a1, pos1, ...built]) as Tensor[];
            const reset = one.slice(1).map((t, i) => t.where(newest.logicalNot(), init[names[i]]));
            const [scoresA, ...stateA] = prog.run([kv, kv, a2, pos2, ...reset]) as Tensor[];
            const [scoresB, ...stateB] = prog.run([kv, kv, rt.cat([a1, a2], 2), pos2, ...built]) as Tensor[];
            // compared on the tokens held at both steps (the newest one's state starts between them)
            const older = await values(newest.logicalNot().to('f32'));
            const close = (x: number[], y: number[]) => x.every((v, j) => !older[j] || v === y[j] || Math.abs(v - y[j]) <= 1e-4 * (1 + Math.abs(v)));
            const [sa, sb] = [await values(scoresA), await values(scoresB)];
            check(close(sa, sb), `scores after two one-row calls [${sa.slice(0, 6).map((v) => v.toFixed(4))}…] differ from one two-row call [${sb.slice(0, 6).map((v) => v.toFixed(4))}…]: the state update must be exact over R rows (the prefill passes R rows too)`);
            for (const [i, n] of names.entries()) {
              const [x, y] = [await values(stateA[i]), await values(stateB[i])];
              check(close(x, y), `state '${n}' after two one-row calls [${x.slice(0, 6).map((v) => v.toFixed(4))}…] differs from one two-row call [${y.slice(0, 6).map((v) => v.toFixed(4))}…]`);
            }
          });
        } finally {
          prog.free();
        }
      },
    },
    {
      name: 'score() returns its state under exactly the names state() declares (none missing, none unknown)',
      skipFor: (p) => (Object.keys(p.state()).length ? undefined : 'state() declares no per-token state'),
      async run({ rt, plugin }) {
        try {
          kvPolicyProgram(rt, plugin()).free();
          await rt.flush();
        } catch (e) {
          // a misspelled or missing key would keep the state's first values for ever
          if (e instanceof LiaisonError && e.param === 'state') throw new ConformanceFailure(e.message);
          throw e;
        }
      },
    },
    {
      name: 'installed on a small GPT, the cache never holds more than the budget while generating (prefill and steps)',
      skipFor: keepsAll,
      async run(ctx) {
        const { rt, seed } = ctx;
        const policy = tight(ctx);
        const budget = policy.budget!;
        const prompt = Math.min(budget, 48) + 2; // longer than the budget: the prefill evicts too
        const steps = Math.min(budget, 48) + 6;
        const model = await gpt(rt, prompt + steps, seed);
        try {
          model.setKVPolicy(policy);
          const out = model.generate(ids(rt, 2, prompt, seed), { steps });
          const [shape, toks] = [(await out.info()).shape, await values(out)];
          check(shape.join() === `2,${prompt + steps}`, `generate returned shape [${shape}], expected [2,${prompt + steps}]`);
          check(toks.every((t) => Number.isInteger(t) && t >= 0 && t < VOCAB), 'generate returned tokens outside the vocabulary');
          const { tokens } = await model.kvCacheSize();
          check(tokens.every((s) => s <= budget), `cache sizes per layer ${tokens} exceed the budget ${budget}`);
        } finally {
          model.free();
        }
      },
    },
    {
      name: 'with bulk eviction (evict m > 1), the cache stays within the budget and drops m at a time',
      skipFor: (p, s) => keepsAll(p) ?? (hasField(s, 'evict') ? undefined : 'no evict field the suite can set (evicts as configured; the case above holds it to the budget)'),
      async run(ctx) {
        const { rt, seed } = ctx;
        const policy = tight(ctx, { evict: 3 });
        const { evict } = policy.cache();
        const budget = policy.budget!;
        const model = await gpt(rt, 64, seed);
        try {
          model.setKVPolicy(policy);
          // each step count leaves the cache at another point of its evict-then-refill cycle
          const seen = new Set<number>();
          for (const steps of [budget + 1, budget + 2, budget + 3, budget + 4]) {
            model.generate(ids(rt, 2, PROMPT, seed), { steps }).free();
            const { tokens } = await model.kvCacheSize();
            check(tokens.every((s) => s <= budget && s > budget - evict), `after ${steps} steps with evict ${evict}: cache sizes per layer ${tokens}, expected in (${budget - evict}, ${budget}]`);
            tokens.forEach((s) => seen.add(s));
          }
          // dropping one token a step would hold the cache at the budget every time
          check([...seen].some((s) => s < budget), `with evict ${evict} the cache held ${[...seen].join(', ')} tokens after ${budget + 1}..${budget + 4} steps: always the budget, so it dropped fewer than ${evict} at a time`);
        } finally {
          model.free();
        }
      },
    },
    {
      name: 'with a budget of at least the sequence length, perplexity equals the full cache’s',
      async run(ctx) {
        const { rt, seed } = ctx;
        const { policy, length } = roomy(ctx, 20);
        const model = await gpt(rt, length, seed);
        try {
          const tokens = ids(rt, 2, length, seed + 1);
          const full = await model.perplexity(tokens);
          model.setKVPolicy(policy);
          const kept = await model.perplexity(tokens);
          const { bits } = policy.cache(); // an instance may store fewer bits
          const tol = bits === 32 ? 1e-5 * (1 + Math.abs(full.nll)) : QUANT_TOL[bits];
          check(Math.abs(kept.nll - full.nll) <= tol, `mean NLL ${kept.nll} with the policy, ${full.nll} with the full cache (tolerance ${tol})`);
        } finally {
          model.free();
        }
      },
    },
    {
      name: 'with a budget of at least the length, greedy generation equals the unhooked model’s (kept positions unchanged)',
      skipFor: (p) => (p.cache().bits !== 32 ? `stores ${p.cache().bits}-bit entries: greedy tokens may differ from f32's (the quantization case bounds the difference)` : undefined),
      async run(ctx) {
        const { rt, seed } = ctx;
        const { policy, length } = roomy(ctx, 24);
        const model = await gpt(rt, length, seed);
        try {
          const prompt = ids(rt, 2, Math.min(PROMPT, length - 1), seed + 2);
          const steps = length - Math.min(PROMPT, length - 1);
          const plain = await values(model.generate(prompt, { steps }));
          model.setKVPolicy(policy);
          const hooked = await values(model.generate(prompt, { steps }));
          check(hooked.join() === plain.join(), `generation with the policy differs from the unhooked model's: ${hooked.slice(0, 12)}… vs ${plain.slice(0, 12)}…`);
        } finally {
          model.free();
        }
      },
    },
    {
      name: 'scores and state ignore empty slots: left-padded rows (generate with lengths) give each row the tokens it gets alone',
      async run(ctx) {
        const { rt, seed } = ctx;
        const policy = tight(ctx);
        const T0 = SMALL + 2; // a full row is longer than a small budget: the prefill evicts
        const short = SMALL - 3;
        const steps = Math.min(policy.budget ?? SMALL, 48) + 5;
        const model = await gpt(rt, T0 + steps, seed);
        try {
          model.setKVPolicy(policy);
          await rt.scope(async () => {
            const prompt = ids(rt, 2, T0, seed + 3);
            const batch = await values(model.generate(prompt, { steps, lengths: [T0, short] }));
            const alone = [
              await values(model.generate(prompt.narrow(0, 0, 1), { steps })),
              await values(model.generate(prompt.narrow(0, 1, 1).narrow(1, T0 - short, short), { steps })),
            ];
            const rows = [batch.slice(0, T0 + steps), batch.slice(T0 + steps + T0 - short)];
            rows.forEach((row, b) => check(row.join() === alone[b].join(), `row ${b} (${b ? `${short} tokens after ${T0 - short} pad slots` : `${T0} tokens`}) decodes ${row.slice(-steps).slice(0, 10)}… in the padded batch but ${alone[b].slice(-steps).slice(0, 10)}… alone: an empty slot changed a score or a state`));
          });
        } finally {
          model.free();
        }
      },
    },
    {
      name: `streams past the trained context: a rotary GPT of context ${CONTEXT} decodes ${STREAM}× that within the budget, perplexity finite`,
      async run(ctx) {
        const { rt, seed } = ctx;
        const policy = ctx.plugin(ctx.canOverride && hasField(ctx.subject, 'budget') ? { budget: CONTEXT / 2 } : undefined);
        const length = CONTEXT * STREAM;
        const model = await gpt(rt, CONTEXT, seed);
        try {
          model.setKVPolicy(policy);
          const { perplexity } = await model.perplexity(ids(rt, 2, length, seed + 4));
          check(Number.isFinite(perplexity), `perplexity over ${length} tokens (context ${CONTEXT}) is ${perplexity}`);
          const { tokens } = await model.kvCacheSize();
          // a policy that keeps everything holds the whole stream, past the context: what applies to it
          const cap = policy.budget ?? length;
          check(tokens.every((s) => s <= cap && (policy.budget !== null || s >= length - 1)), `cache sizes per layer ${tokens} after ${length} tokens, expected ${policy.budget === null ? `the whole stream (${length - 1}..${length})` : `at most the budget ${cap}`}`);
        } finally {
          model.free();
        }
      },
    },
    {
      name: `quantized entries compose: bits 8 and 4 with a roomy budget keep the mean NLL within ${QUANT_TOL[8]} and ${QUANT_TOL[4]} of f32's, in fewer bytes`,
      skipFor: (_p, s) => (hasField(s, 'bits') ? undefined : 'no bits field the suite can set (an instance stores what its config says)'),
      async run(ctx) {
        const { rt, seed } = ctx;
        const length = 24;
        const model = await gpt(rt, length, seed);
        try {
          const tokens = ids(rt, 2, length, seed + 5);
          const at: Record<number, { nll: number; bytes: number }> = {};
          for (const bits of [32, 8, 4] as const) {
            model.setKVPolicy(roomy(ctx, length, { bits }).policy);
            const { nll } = await model.perplexity(tokens);
            at[bits] = { nll, bytes: (await model.kvCacheSize()).totalBytes };
          }
          for (const bits of [8, 4] as const) {
            check(Math.abs(at[bits].nll - at[32].nll) <= QUANT_TOL[bits], `mean NLL ${at[bits].nll} with ${bits}-bit entries, ${at[32].nll} with f32 (tolerance ${QUANT_TOL[bits]})`);
          }
          check(at[4].bytes < at[8].bytes && at[8].bytes < at[32].bytes, `bytes held: ${at[32].bytes} (f32), ${at[8].bytes} (8-bit), ${at[4].bytes} (4-bit): expected fewer with fewer bits`);
        } finally {
          model.free();
        }
      },
    },
  ];
}
