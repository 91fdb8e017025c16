// The Deflator family's methods beyond their contract (test/conformance.test.ts): the error
// metric, the shared result helpers, what each of hotelling, parallel-deflation and
// eigengame-mu computes and counts, Parallel Deflation's worker boundary (the batched path
// equals the workers run alone; worker k joins at round k; predecessors' estimates come from
// the previous round), its Hebbian mode, and config errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { eigengameMu, exact, hotelling, parallelDeflation } from '../plugins/index.js';
import { canonicalSigns, knownCovariance, randomStarts, sortedResult } from '../sdk/families/deflators/base.js';
import { componentErrors, errorSummary, errorTracker } from '../sdk/families/deflators/errors.js';
import type { DeflationProblem } from '../sdk/families/deflators/types.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);
/** (d, k) read back as k columns. */
const columns = async (t: Tensor): Promise<number[][]> => {
  const rows = (await t.tolist()) as number[][];
  return rows[0].map((_, j) => rows.map((r) => r[j]));
};

const SPECTRUM = [10, 6, 3.5, 2, 1.2, ...Array.from({ length: 27 }, (_, i) => 0.5 * 0.85 ** i)]; // d = 32
const D = SPECTRUM.length;

/** Σ = Q diag(λ) Qᵀ with known eigenvectors Q (seeded), in `dtype`. */
function known(seed: number, dtype: 'f32' | 'f64' = 'f32'): { problem: DeflationProblem; q: Tensor } {
  const { cov, q } = knownCovariance(rt, SPECTRUM, { seed, dtype });
  return { problem: { cov, d: D, k: 5 }, q };
}

describe('error metric', () => {
  it('componentErrors is √(2 − 2|⟨u, v⟩|) per column, sign-blind, and renormalizes so f32 gives no false floor', async () => {
    const th = 0.3;
    const u = rt.tensor([1, 0, 0, 1, 0, 0], [3, 2]); // columns e0, e1
    const v = rt.tensor([Math.cos(th), 0, Math.sin(th), -2, 0, 0], [3, 2]); // (cos, sin, 0) and −2·e1
    const e = await list(componentErrors(u, v));
    expect(e[0]).toBeCloseTo(Math.sqrt(2 - 2 * Math.cos(th)), 6);
    expect(e[1]).toBe(0); // opposite sign and norm 2: the same direction
    const [q] = rt.randn([50, 50], { seed: 4 }).qr(); // f32: unit only to ~1e-7
    const same = await errorSummary(q, q.clone());
    expect(same.max).toBeLessThan(1e-7);
    expect(same.errors.every(Number.isFinite)).toBe(true);
  });

  it('errorSummary gives max and RMS; errorTracker records every round with its matvecs', async () => {
    const u = rt.eye(3);
    const s = await errorSummary(u, rt.tensor([1, 0, 0, 0, 0, 1, 0, 1, 0], [3, 3])); // e0, e2, e1
    expect(s.errors.map((x) => +x.toFixed(6))).toEqual([0, +Math.SQRT2.toFixed(6), +Math.SQRT2.toFixed(6)]);
    expect(s.max).toBeCloseTo(Math.SQRT2, 6);
    expect(s.rms).toBeCloseTo(Math.sqrt(4 / 3), 6);
    const { problem, q } = known(1);
    const tr = errorTracker(q.narrow(1, 0, 5));
    const r = await hotelling({ steps: 200 }).fit(problem, { rt, seed: 0, onRound: tr.onRound });
    expect(tr.history.map((h) => h.round)).toEqual([1, 2, 3, 4, 5]);
    expect(tr.history.map((h) => h.matvecs)).toEqual([201, 402, 603, 804, 1005]);
    expect(tr.history[0].max).toBeGreaterThan(0.5); // components 2..5 are still random starts
    expect(tr.history[4].max).toBeLessThan(1e-3);
    expect(r.matvecs).toBe(1005 + 5);
  });
});

describe('result helpers', () => {
  it('sortedResult orders by value descending; canonicalSigns makes the largest |entry| positive', async () => {
    const v = rt.tensor([0.6, 0, 0.8, -1, 0, 0], [3, 2]); // columns (0.6, 0.8, 0) and (0, −1, 0)
    const out = sortedResult(v, rt.tensor([1, 3]));
    expect(await list(out.values)).toEqual([3, 1]);
    expect((await columns(out.vectors)).map((c) => c.map((x) => x + 0))).toEqual([[0, 1, 0], [0.6, 0.8, 0].map((x) => Math.fround(x))]); // + 0: −0 is 0
    expect((await list(canonicalSigns(rt.tensor([0.1, -0.9, 0], [3, 1])))).map((x) => x + 0)).toEqual([-0.1, 0.9, 0].map(Math.fround));
  });
});

describe('each method on a known spectrum', () => {
  for (const [name, make] of [
    ['hotelling', () => hotelling({ steps: 150 })],
    ['parallel-deflation', () => parallelDeflation({ localSteps: 10, rounds: 20 })],
    ['eigengame-mu', () => eigengameMu({ steps: 600 })],
  ] as const) {
    it(`${name}: every component within 1e-3 of Q's columns, values within 1e-3 of λ`, async () => {
      const { problem, q } = known(2);
      const r = await make().fit(problem, { rt, seed: 7 });
      const s = await errorSummary(q.narrow(1, 0, 5), r.vectors);
      expect(s.max, s.errors.join(', ')).toBeLessThan(1e-3);
      (await list(r.values)).forEach((x, j) => expect(Math.abs(x - SPECTRUM[j])).toBeLessThan(1e-3 * SPECTRUM[0]));
    });
  }
});

describe('parallel-deflation', () => {
  it('the batched path computes what each worker computes alone, and counts the same matvecs', async () => {
    const { problem } = known(3, 'f64');
    for (const mode of ['power', 'hebbian'] as const) {
      const data = mode === 'hebbian' ? rt.randn([400, D], { seed: 9, dtype: 'f64' }) : undefined;
      const p = { ...problem, ...(data ? { data } : {}) };
      const trail: Record<string, number[][][]> = { batched: [], 'per-worker': [] };
      const res: Record<string, { matvecs: number; v: number[] }> = {};
      for (const execution of ['batched', 'per-worker'] as const) {
        const r = await parallelDeflation({ mode, execution, localSteps: 3, rounds: 7, batchSize: 16 }).fit(p, {
          rt, seed: 5, onRound: async (_r, v) => { trail[execution].push(await columns(v)); },
        });
        res[execution] = { matvecs: r.matvecs, v: await list(r.vectors) };
      }
      expect(res.batched.matvecs).toBe(res['per-worker'].matvecs);
      const worst = Math.max(...res.batched.v.map((x, i) => Math.abs(x - res['per-worker'].v[i])));
      expect(worst, mode).toBeLessThan(1e-10);
      trail.batched.forEach((round, r) => round.forEach((col, j) => col.forEach((x, i) => expect(Math.abs(x - trail['per-worker'][r][j][i])).toBeLessThan(1e-10))));
    }
  });

  it('worker k joins at round k; until then its column is its untouched start', async () => {
    const { problem } = known(4);
    const starts = await columns(randomStarts(rt, D, 5, 11, 'f32'));
    const seen: number[][][] = [];
    await parallelDeflation({ localSteps: 2, rounds: 6 }).fit(problem, { rt, seed: 11, onRound: async (_r, v) => { seen.push(await columns(v)); } });
    expect(seen).toHaveLength(6);
    for (let r = 1; r <= 6; r++) {
      for (let k = 1; k <= 5; k++) {
        const same = seen[r - 1][k - 1].every((x, i) => x === starts[k - 1][i]);
        expect(same, `round ${r}, worker ${k}`).toBe(r < k);
      }
    }
  });

  it('deflates the original Σ with the predecessors\' estimates of the previous round', async () => {
    // k = 2, T = 1, L = 2, written out by hand: round 1 moves worker 1 only; in round 2,
    // worker 2 deflates with worker 1's round-1 estimate and its Rayleigh value
    const { problem } = known(6, 'f64');
    const cov = (await problem.cov.tolist()) as number[][];
    const mv = (x: number[]) => cov.map((row) => row.reduce((s, a, i) => s + a * x[i], 0));
    const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0);
    const unit = (x: number[]) => { const n = Math.sqrt(dot(x, x)); return x.map((e) => e / n); };
    const [s1, s2] = await columns(randomStarts(rt, D, 2, 3, 'f64'));
    const v1 = unit(mv(s1));
    const lam1 = dot(v1, mv(v1));
    const c1 = dot(v1, s2);
    const want2 = unit(mv(s2).map((e, i) => e - lam1 * v1[i] * c1));
    const want1 = unit(mv(v1));
    const seen: number[][][] = [];
    const r = await parallelDeflation({ localSteps: 1, rounds: 2 }).fit({ ...problem, k: 2 }, { rt, seed: 3, onRound: async (_r, v) => { seen.push(await columns(v)); } });
    seen[0][0].forEach((x, i) => expect(x).toBeCloseTo(v1[i], 10));
    seen[1][0].forEach((x, i) => expect(x).toBeCloseTo(want1[i], 10));
    seen[1][1].forEach((x, i) => expect(x).toBeCloseTo(want2[i], 10));
    // T per joined worker per round, +1 when a worker joins: (1 + 1) + (2·1 + 1)
    expect(r.matvecs).toBe(5);
  });

  it('counts T·Σ_r min(r, k) + k matvecs in power mode, reported round by round', async () => {
    const { problem } = known(1);
    const at: number[] = [];
    const r = await parallelDeflation({ localSteps: 4, rounds: 8 }).fit(problem, { rt, seed: 0, onRound: (_r, _v, m) => { at.push(m); } });
    const want = [1, 2, 3, 4, 5, 5, 5, 5].map((a, i, all) => 4 * all.slice(0, i + 1).reduce((s, x) => s + x, 0) + Math.min(i + 1, 5));
    expect(at).toEqual(want);
    expect(r.matvecs).toBe(want[7]);
    expect(r.rounds).toBe(8);
    expect((await parallelDeflation().fit(problem, { rt, seed: 0 })).rounds).toBe(10); // default L = 2k
  });

  it('hebbian mode converges on data rows (to the sample covariance\'s eigenvectors) and refuses a problem without data', async () => {
    const n = 4000;
    const [q] = rt.randn([D, D], { seed: 8 }).qr();
    const x = rt.randn([n, D], { seed: 12 }).mul(rt.tensor(SPECTRUM.map(Math.sqrt), [1, D])).matmul(q.T);
    const data = x.sub(x.mean(0, true)); // (n, d) centered
    const cov = data.T.matmul(data).div(n);
    const ref = await exact().fit({ cov, d: D, k: 3 }, { rt, seed: 0 });
    const p = { cov, d: D, k: 3, data };
    const tr = errorTracker(ref.vectors);
    const r = await parallelDeflation({ mode: 'hebbian', localSteps: 20, rounds: 60 }).fit(p, { rt, seed: 1, onRound: tr.onRound });
    const s = await errorSummary(ref.vectors, r.vectors);
    expect(s.max, s.errors.join(', ')).toBeLessThan(0.05);
    expect(tr.history[5].max).toBeGreaterThan(s.max); // it improved along the way
    // minibatch products are counted as multiply–add equivalents: 2·B/d per worker step
    const steps = 20 * [1, 2, 3].reduce((a, b) => a + b, 0) + 20 * 3 * 57;
    expect(r.matvecs).toBeCloseTo((steps * 2 * 64) / D + 3, 6);
    await expect(parallelDeflation({ mode: 'hebbian' }).fit({ cov, d: D, k: 3 }, { rt, seed: 0 })).rejects.toMatchObject({ code: 'E_ARG', param: 'data' });
  });
});

describe('eigengame-mu', () => {
  it('one step is v_i + η·Δ_i (tangent part of Cv_i − Σ_{j<i} (v_iᵀCv_j) v_j), η = lr / max Rayleigh, normalized', async () => {
    const { problem } = known(5, 'f64');
    const cov = (await problem.cov.tolist()) as number[][];
    const mv = (x: number[]) => cov.map((row) => row.reduce((s, a, i) => s + a * x[i], 0));
    const dot = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0);
    const v = await columns(randomStarts(rt, D, 3, 2, 'f64'));
    const cv = v.map(mv);
    const eta = 0.7 / Math.max(...v.map((x, i) => dot(x, cv[i])));
    const want = v.map((vi, i) => {
      let delta = cv[i].map((e, m) => e - v.slice(0, i).reduce((s, vj) => s + dot(vi, mv(vj)) * vj[m], 0));
      const along = dot(vi, delta);
      delta = delta.map((e, m) => e - along * vi[m]);
      const next = vi.map((e, m) => e + eta * delta[m]);
      const norm = Math.sqrt(dot(next, next));
      return next.map((e) => e / norm);
    });
    const seen: number[][][] = [];
    const r = await eigengameMu({ lr: 0.7, steps: 1, roundSteps: 1 }).fit({ ...problem, k: 3 }, { rt, seed: 2, onRound: async (_r, x) => { seen.push(await columns(x)); } });
    want.forEach((col, j) => col.forEach((x, i) => expect(seen[0][j][i]).toBeCloseTo(x, 10)));
    expect(r.matvecs).toBe(3 * 2); // k per step, k for the values
  });

  it('rounds are blocks of roundSteps (the last one shorter), matvecs k per step', async () => {
    const { problem } = known(1);
    const at: [number, number][] = [];
    const r = await eigengameMu({ steps: 25, roundSteps: 10 }).fit(problem, { rt, seed: 0, onRound: (round, _v, m) => { at.push([round, m]); } });
    expect(at).toEqual([[1, 50], [2, 100], [3, 125]]);
    expect(r).toMatchObject({ rounds: 3, matvecs: 130 });
  });
});

describe('config and argument errors name the field', () => {
  it('refuses bad configs and a rounds below k', async () => {
    expect(() => hotelling({ steps: 0 })).toThrow(/'steps'/);
    expect(() => parallelDeflation({ mode: 'oja' as never })).toThrow(/'mode'/);
    expect(() => parallelDeflation({ localSteps: 1.5 })).toThrow(/'localSteps'/);
    expect(() => eigengameMu({ lr: 2 })).toThrow(/'lr'/);
    const { problem } = known(1);
    await expect(parallelDeflation({ rounds: 3 }).fit(problem, { rt, seed: 0 })).rejects.toMatchObject({ code: 'E_ARG', param: 'rounds' });
    await expect(hotelling().fit({ ...problem, k: 0 }, { rt, seed: 0 })).rejects.toMatchObject({ code: 'E_ARG', param: 'k' });
  });
});
