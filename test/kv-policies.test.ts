// What each KV policy's score program computes, against a plain TypeScript reference on
// hand-made inputs (the family's contract is checked by test/conformance.test.ts), the
// base's mask helpers, and config errors naming the field.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { full, h2o, scissorhands, slidingWindow, streamingLLM } from '../plugins/index.js';
import { kvPolicyProgram, newest, occupied, protect, visible } from '../sdk/families/kv-policies/base.js';
import type { KVPolicy } from '../sdk/families/kv-policies/types.js';
import { trace } from '../sdk/program.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);
const i64 = (xs: number[], shape: number[]) => rt.tensor(BigInt64Array.from(xs.map(BigInt)), shape);

/** One (b, h) of a cache: positions per slot (−1 empty) and R query rows over those slots. */
interface Case { pos: number[]; attn: number[][] }

/**
 * Runs `policy`'s program on cases stacked as (B = cases, H = 1, R, C); each state at its
 * init, or `state[name]` per case. Returns per case the scores and each state's new values.
 */
async function runPolicy(policy: KVPolicy, cases: Case[], state: Record<string, number[][]> = {}): Promise<{ scores: number[][]; state: Record<string, number[][]> }> {
  const [B, R, C] = [cases.length, cases[0].attn.length, cases[0].pos.length];
  const init = policy.state();
  const names = Object.keys(init);
  const prog = kvPolicyProgram(rt, policy);
  try {
    const kv = rt.zeros([B, 1, C, 2]);
    const ins = [kv, kv, rt.tensor(cases.flatMap((c) => c.attn.flat()), [B, 1, R, C]), i64(cases.flatMap((c) => c.pos), [B, 1, C])];
    for (const n of names) ins.push(rt.tensor(state[n]?.flat() ?? Array(B * C).fill(init[n]), [B, 1, C]));
    const outs = prog.run(ins) as Tensor[];
    const rows = async (t: Tensor) => { const v = await list(t); return cases.map((_, b) => v.slice(b * C, (b + 1) * C)); };
    const after = await Promise.all(outs.slice(1).map(rows));
    return { scores: await rows(outs[0]), state: Object.fromEntries(names.map((n, k) => [n, after[k]])) };
  } finally {
    prog.free();
  }
}

/** The plain reference of `visible`: row i's query is at p_max − R + 1 + i. */
function visibleRef({ pos, attn }: Case): number[][] {
  const top = Math.max(...pos);
  return attn.map((_, i) => pos.map((p) => (p >= 0 && p <= top - attn.length + 1 + i ? 1 : 0)));
}

describe('kv-policies base helpers', () => {
  const cases: Case[] = [
    // a prefill of 4 tokens, 3 query rows
    { pos: [0, 1, 2, 3], attn: [[0.5, 0.5, 0, 0], [0.2, 0.3, 0.5, 0], [0.1, 0.2, 0.3, 0.4]] },
    // a left-padded row: 2 pad slots, 2 tokens; the first query row is padding
    { pos: [-1, -1, 0, 1], attn: [[0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0.4, 0.6]] },
  ];
  const decode: Case = { pos: [7, -1, 3, 9, 5], attn: [[0.1, 0, 0.2, 0.3, 0.4]] }; // after evictions

  it('visible, occupied, newest, protect against plain loops', async () => {
    const prog = await trace(rt, { name: 'helpers', inputs: { attn: { shape: ['B', 'H', 'R', 'C'] }, pos: { dtype: 'i64', shape: ['B', 'H', 'C'] } } }, ({ attn, pos }) => [
      visible(attn, pos).to('f32'), occupied(pos).to('f32'), newest(pos, 2).to('f32'), protect(pos.to('f32'), newest(pos, 1)),
    ]);
    for (const group of [cases, [decode]]) {
      const [R, C] = [group[0].attn.length, group[0].pos.length];
      const [vis, occ, recent, prot] = prog.run([rt.tensor(group.flatMap((c) => c.attn.flat()), [group.length, 1, R, C]), i64(group.flatMap((c) => c.pos), [group.length, 1, C])]) as Tensor[];
      expect(await list(vis)).toEqual(group.flatMap((c) => visibleRef(c).flat()));
      expect(await list(occ)).toEqual(group.flatMap((c) => c.pos.map((p) => (p >= 0 ? 1 : 0))));
      const top = (c: Case) => Math.max(...c.pos);
      expect(await list(recent)).toEqual(group.flatMap((c) => c.pos.map((p) => (p >= 0 && p > top(c) - 2 ? 1 : 0))));
      expect(await list(prot)).toEqual(group.flatMap((c) => c.pos.map((p) => (p === top(c) ? Infinity : p))));
    }
    prog.free();
  });
});

/** Values at the occupied slots only (the runtime ignores the rest). */
const held = (c: Case, xs: number[]) => xs.filter((_, j) => c.pos[j] >= 0);
const near = (a: number[], b: number[]) => { expect(a.length).toBe(b.length); a.forEach((x, i) => (Number.isFinite(b[i]) ? expect(x).toBeCloseTo(b[i], 5) : expect(x).toBe(b[i]))); };
const top = (c: Case) => Math.max(...c.pos);

// a prefill (R = 3 rows over 5 slots, one left-padding slot) and decoding steps (R = 1) after evictions
const prefill: Case[] = [
  { pos: [0, 1, 2, 3, 4], attn: [[0.3, 0.3, 0.4, 0, 0], [0.1, 0.5, 0.1, 0.3, 0], [0.05, 0.6, 0.05, 0.1, 0.2]] },
  { pos: [-1, 0, 1, 2, 3], attn: [[0, 0.5, 0.5, 0, 0], [0, 0.2, 0.7, 0.1, 0], [0, 0.1, 0.3, 0.5, 0.1]] },
];
const step: Case[] = [
  { pos: [0, 9, 4, 7, 8], attn: [[0.5, 0.1, 0.04, 0.3, 0.06]] },
  { pos: [6, -1, 1, 3, 5], attn: [[0.2, 0, 0.1, 0.6, 0.1]] },
];
// the same caches when the runtime calls the policy once for two steps: the older row (query at p_max − 1) did not see p_max
const twoSteps: Case[] = [
  { pos: step[0].pos, attn: [[0.4, 0, 0.1, 0.3, 0.2], ...step[0].attn] },
  { pos: step[1].pos, attn: [[0, 0, 0.3, 0.3, 0.4], ...step[1].attn] },
];

/** Scissorhands written out: decayed counts of attention below the row's threshold, over the rows each saw. */
function scissorhandsRef(c: Case, count: number[], o: { window: number; recent: number; threshold: 'uniform' | number }): { scores: number[]; count: number[] } {
  const d = 1 - 1 / o.window;
  const R = c.attn.length;
  const vis = visibleRef(c);
  const next = count.map((n, j) => d ** R * n + c.attn.reduce((sum, row, i) => {
    const T = vis[i].reduce((a, b) => a + b, 0);
    const bar = o.threshold === 'uniform' ? 1 / T : o.threshold;
    return sum + (vis[i][j] && row[j] < bar ? d ** (R - 1 - i) : 0);
  }, 0));
  return { count: next, scores: next.map((n, j) => (c.pos[j] > top(c) - o.recent ? Infinity : -n)) };
}

describe('scissorhands', () => {
  it('counts low-attention events over every prefill row (decayed by age), then one row a step, or several at once (the count decayed by each); protects the recent window', async () => {
    for (const o of [{ window: 4, recent: 1, threshold: 'uniform' as const }, { window: 2, recent: 2, threshold: 0.15 }, { window: 1, recent: 0, threshold: 'uniform' as const }]) {
      const policy = scissorhands({ budget: 8, ...o });
      const a = await runPolicy(policy, prefill);
      const countsA: number[][] = [];
      prefill.forEach((c, b) => {
        const ref = scissorhandsRef(c, Array(5).fill(0), o);
        countsA.push(ref.count);
        near(held(c, a.scores[b]), held(c, ref.scores));
        near(held(c, a.state.count[b]), held(c, ref.count));
      });
      // a decoding step carries the counts on (the runtime moves them with their tokens; here they stay put)
      const s = await runPolicy(policy, step, { count: countsA });
      step.forEach((c, b) => {
        const ref = scissorhandsRef(c, countsA[b], o);
        near(held(c, s.scores[b]), held(c, ref.scores));
        near(held(c, s.state.count[b]), held(c, ref.count));
      });
      // two steps' rows at once = two one-row calls (the count decayed twice)
      const two = await runPolicy(policy, twoSteps, { count: countsA });
      twoSteps.forEach((c, b) => {
        const first = scissorhandsRef({ pos: c.pos.map((p) => (p === top(c) ? -1 : p)), attn: [c.attn[0]] }, countsA[b], o);
        const ref = scissorhandsRef({ pos: c.pos, attn: [c.attn[1]] }, first.count, o);
        near(held(c, two.scores[b]), held(c, ref.scores));
        near(held(c, two.state.count[b]), held(c, ref.count));
      });
    }
  });

  it('the defaults scale with the budget; the hook options carry evict; bad configs name their field', () => {
    const p = scissorhands({ budget: 64 });
    expect([p.recent, p.evict, p.decay]).toEqual([8, 4, 1 - 1 / 64]);
    expect(p.hookOptions()).toEqual({ budget: 64, evict: 4, history: null, positions: 'original', bits: 32, state: [0] });
    expect(scissorhands({ budget: 2 }).hookOptions()).toMatchObject({ budget: 2, evict: 1 });
    expect(scissorhands({ budget: 16, bits: 4, group: 8 }).hookOptions()).toMatchObject({ bits: 4, group: 8 });
    const param = (f: () => unknown) => { try { f(); } catch (e) { expect(e).toBeInstanceOf(LiaisonError); return [(e as LiaisonError).code, (e as LiaisonError).param]; } return 'no error'; };
    expect(param(() => scissorhands({ budget: 8, recent: 8 }))).toEqual(['E_ARG', 'recent']);
    expect(param(() => scissorhands({ budget: 8, recent: 4, evict: 5 }))).toEqual(['E_ARG', 'evict']);
    expect(param(() => scissorhands({ threshold: 1 }))).toEqual(['E_ARG', 'threshold']);
    expect(param(() => scissorhands({ window: 0 }))).toEqual(['E_ARG', 'window']);
    expect(param(() => scissorhands({ bits: 16 as 8 }))).toEqual(['E_ARG', 'bits']);
    expect(param(() => h2o({ budget: 4, recent: 4 }))).toEqual(['E_ARG', 'recent']);
    expect(param(() => streamingLLM({ budget: 4 }))).toEqual(['E_ARG', 'sinks']);
    expect(param(() => slidingWindow({ budget: 4, evict: 5 }))).toEqual(['E_ARG', 'evict']);
    expect(param(() => full({ budget: 4 } as never))).toEqual(['E_ARG', 'budget']);
  });
});

describe('h2o, streaming-llm, sliding-window, full', () => {
  it('h2o accumulates attention: the prefill\'s column sums, then each step\'s row; the recent window protected', async () => {
    const policy = h2o({ budget: 8, recent: 2 });
    const a = await runPolicy(policy, prefill);
    const sums = prefill.map((c) => c.pos.map((_, j) => c.attn.reduce((s, row) => s + row[j], 0)));
    prefill.forEach((c, b) => {
      near(held(c, a.state.acc[b]), held(c, sums[b]));
      near(held(c, a.scores[b]), held(c, sums[b].map((v, j) => (c.pos[j] > top(c) - 2 ? Infinity : v))));
    });
    const s = await runPolicy(policy, step, { acc: sums });
    step.forEach((c, b) => {
      const acc = sums[b].map((v, j) => v + c.attn[0][j]);
      near(held(c, s.state.acc[b]), held(c, acc));
      near(held(c, s.scores[b]), held(c, acc.map((v, j) => (c.pos[j] > top(c) - 2 ? Infinity : v))));
    });
    expect(h2o({ budget: 10 }).recent).toBe(5);
  });

  it('streaming-llm keeps the sinks (+inf) and then the newest; sliding-window scores the position; full keeps everything', async () => {
    const cases = [...step, { pos: [2, 0, 3, 1, 4], attn: [[0.2, 0.2, 0.2, 0.2, 0.2]] }];
    const sl = await runPolicy(streamingLLM({ budget: 8, sinks: 2 }), cases);
    cases.forEach((c, b) => near(held(c, sl.scores[b]), held(c, c.pos.map((p) => (p < 2 ? Infinity : p)))));
    expect(streamingLLM().hookOptions()).toMatchObject({ budget: 256, evict: 1, positions: 'cache' });
    const sw = await runPolicy(slidingWindow({ budget: 8, evict: 3 }), cases);
    cases.forEach((c, b) => near(held(c, sw.scores[b]), held(c, c.pos)));
    expect(slidingWindow({ budget: 8, evict: 3 }).hookOptions()).toMatchObject({ budget: 8, evict: 3, positions: 'original' });
    const f = full({ bits: 8 });
    expect(f.budget).toBeNull();
    expect(f.hookOptions()).toEqual({ budget: null, evict: 1, history: null, positions: 'original', bits: 8, state: [] });
  });
});
