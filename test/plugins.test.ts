// What each reference plugin computes, beyond its family's contract (test/conformance.test.ts):
// the update rule, the global threshold, the eigenpairs and their signs, the gating and its
// load-balancing loss, the window.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { exact, gd, magnitude, slidingWindow, topk } from '../plugins/index.js';
import { trace } from '../sdk/program.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);
const near = (a: number[], b: number[], tol = 1e-5) => a.forEach((x, i) => expect(x).toBeCloseTo(b[i], -Math.log10(tol)));

describe('gd', () => {
  it('moves a parameter by −lr·(grad + weightDecay·param)', async () => {
    const opt = gd({ lr: 0.5, weightDecay: 0.1 });
    const p = rt.tensor([1, -2, 3]);
    const g = rt.tensor([0.5, 0.5, -1]);
    const step = await trace(rt, { name: 'gd', inputs: { lr: { shape: [] }, step: { shape: [] } } }, ({ lr, step: s }) => { opt.update(p, g, {}, { lr, step: s }); });
    step.run({ lr: rt.full([], opt.learningRate(1)), step: rt.full([], 1) });
    near(await list(p), [1 - 0.5 * (0.5 + 0.1), -2 - 0.5 * (0.5 - 0.2), 3 - 0.5 * (-1 + 0.3)]);
  });
});

describe('magnitude', () => {
  const pruner = magnitude();
  it('keeps the largest |w| over all weights at once, so a layer of small weights loses more', async () => {
    const small = rt.tensor([0.1, -0.2, 0.3, -0.4], [2, 2]);
    const large = rt.tensor([5, -1, 2, -7, 0.5, 3], [2, 3]);
    const masks = pruner.masks(
      [{ name: 'a.weight', weight: small, shape: [2, 2] }, { name: 'b.weight', weight: large, shape: [2, 3] }],
      { rt, round: 0, current: [rt.ones([2, 2]), rt.ones([2, 3])], sparsity: 0.5 },
    );
    // 10 entries, 5 kept: 7, 5, 3, 2, 1 — all in the large layer
    expect(await list(masks[0])).toEqual([0, 0, 0, 0]);
    expect(await list(masks[1])).toEqual([1, 1, 1, 1, 0, 1]);
  });

  it('never revives an entry already pruned, and ties cannot keep extra entries', async () => {
    const w = rt.tensor([9, 0, 0, 0, 1, 2], [2, 3]);
    const current = rt.tensor([0, 1, 1, 1, 1, 1], [2, 3]); // the 9 was pruned earlier
    const [m] = pruner.masks([{ name: 'w', weight: w, shape: [2, 3] }], { rt, round: 1, current: [current], sparsity: 0.5 });
    const kept = await list(m);
    expect(kept[0]).toBe(0);
    expect(kept.reduce((a, b) => a + b, 0)).toBe(3); // the 2, the 1 and one of the tied zeros
    expect(kept.slice(4)).toEqual([1, 1]);
  });
});

describe('exact', () => {
  it('returns the top eigenpairs, descending, with the largest |entry| of each vector positive', async () => {
    const [q] = rt.randn([6, 6], { seed: 3 }).qr();
    const lam = [5, 4, 3, 2, 1, 0.5];
    const a = q.mul(rt.tensor(lam).reshape([1, 6])).matmul(q.T);
    const rounds: number[] = [];
    const r = await exact().fit({ cov: a.add(a.T).mul(0.5), d: 6, k: 3 }, { rt, seed: 0, onRound: (i) => { rounds.push(i); } });
    near(await list(r.values), [5, 4, 3], 1e-4);
    expect(rounds).toEqual([1]);
    expect(r.rounds).toBe(1);
    const v = (await r.vectors.tolist()) as number[][];
    for (let j = 0; j < 3; j++) {
      const col = v.map((row) => row[j]);
      const top = col.reduce((b, x) => (Math.abs(x) > Math.abs(b) ? x : b), 0);
      expect(top).toBeGreaterThan(0);
    }
    const dots = await list(q.slice(1, 0, 3).mul(r.vectors).sum(0).abs());
    near(dots, [1, 1, 1], 1e-4);
  });

  it('refuses k outside 1..d, naming k', async () => {
    await expect(exact().fit({ cov: rt.eye(3), d: 3, k: 4 }, { rt, seed: 0 })).rejects.toThrow(/k must be an integer in 1\.\.d \(3\), got 4/);
  });
});

describe('topk', () => {
  const dims = { dim: 3, experts: 4 };
  const run = async (k: number, normalize = true) => {
    const router = topk({ k, normalize });
    const prog = router.program(rt, dims);
    const x = rt.tensor([1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0.5, -1, 2], [5, 3]);
    const gate = rt.tensor([2, 0, 0, 1, 0, 3, 1, 0, 0, 0, 2, 1], [3, 4]);
    const [w, aux] = prog.run([x, gate]) as Tensor[];
    const probs = (await x.matmul(gate).softmax(-1).tolist()) as number[][];
    return { w: (await w.tolist()) as number[][], aux: await aux.item(), probs };
  };

  it('k = 1 (Switch): the top probability itself, not renormalised, and aux = E·Σ f_e·P_e', async () => {
    const { w, aux, probs } = await run(1);
    const f = [0, 0, 0, 0];
    const P = [0, 0, 0, 0];
    probs.forEach((p, i) => {
      const e = p.indexOf(Math.max(...p));
      f[e] += 1 / probs.length;
      p.forEach((v, j) => { P[j] += v / probs.length; });
      near(w[i], p.map((v, j) => (j === e ? v : 0)));
    });
    expect(aux).toBeCloseTo(4 * f.reduce((s, fe, e) => s + fe * P[e], 0), 5);
  });

  it('k = 2: two experts per token, weights renormalised to sum to 1 (or the raw probabilities)', async () => {
    const { w, probs } = await run(2);
    w.forEach((row) => {
      expect(row.filter((v) => v > 0)).toHaveLength(2);
      expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    });
    const raw = await run(2, false);
    raw.w.forEach((row, i) => {
      const top2 = [...probs[i]].sort((a, b) => b - a).slice(0, 2);
      expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(top2[0] + top2[1], 5);
    });
  });

  it('declares one gate (D, E) with the configured init, and refuses k > E naming k', () => {
    expect(topk({ std: 0.1 }).params(dims)).toEqual({ gate: { shape: [3, 4], init: 'normal', std: 0.1 } });
    const err = (() => { try { topk({ k: 5 }).params(dims); } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).param).toBe('k');
  });
});

describe('sliding-window', () => {
  it('scores each token by its position, so the newest are kept', async () => {
    const prog = slidingWindow({ budget: 2 }).program(rt);
    const pos = rt.tensor(new BigInt64Array([3n, 7n, 5n]), [1, 1, 3]);
    const kv = rt.zeros([1, 1, 3, 2]);
    const [scores] = prog.run([kv, kv, rt.full([1, 1, 3], 1 / 3), pos]) as Tensor[];
    expect(await list(scores)).toEqual([3, 7, 5]);
  });
});
