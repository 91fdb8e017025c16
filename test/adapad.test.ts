// AdaPaD (plugins/adapters/adapad.ts) and its math (sdk/families/adapters/deflation.ts,
// growth.ts): the deflation loss's gradient is the deflated objective's, growth follows its
// rule and stops at the budget, ghosts train without changing the forward, a resumed run
// equals a straight one, and the self-correction example's fast variant shows errors decaying.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { deflationLoss } from '../sdk/families/adapters/deflation.js';
import { componentPhases, componentSensitivity, growModule, growthChoice } from '../sdk/families/adapters/growth.js';
import { noGrad, trace } from '../sdk/program.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

/** A seeded (r, c) matrix as rows of numbers. */
function matrix(r: number, c: number, seed: number): number[][] {
  let s = seed * 7919 + 13;
  const next = () => { s = (s * 1103515245 + 12345) % 2147483648; return s / 2147483648 - 0.5; };
  return Array.from({ length: r }, () => Array.from({ length: c }, next));
}
const flat = (m: number[][]) => m.flat();
const upload = (m: number[][]) => rt.tensor(flat(m), [m.length, m[0].length], 'f64');
/** scale · b_k a_kᵀ as an (m, n) matrix: b_k = B[:, k], a_k = A[k]. */
const rankOne = (A: number[][], B: number[][], k: number, scale: number) => B.map((row) => A[k].map((a) => scale * row[k] * a));
const addTo = (acc: number[][], x: number[][], w = 1) => acc.forEach((row, i) => row.forEach((_, j) => { row[j] += w * x[i][j]; }));

describe('the deflation loss (sdk/families/adapters/deflation.ts)', () => {
  it('gives component k the gradient of the deflated objective: G + c·D_k = c·(Σ_{j<k} P̂_j + P_k − T)', async () => {
    // K = 4 components on a (3, 5) module: 0 and 1 in the sum, 2 a ghost, 3 not born yet.
    // The loss is (c/2)‖ΔW − T‖² with ΔW the live sum (its Hessian is c·I), the ghost in the
    // forward as ghost·(P − sg(P)) (value 0, its gradient), plus the deflation loss.
    const [K, m, n, scale, c] = [4, 3, 5, 0.7, 1.3];
    const A = matrix(K, n, 1), B = matrix(m, K, 2), Ah = matrix(K, n, 3), Bh = matrix(m, K, 4), T = matrix(m, n, 5);
    const exists = [1, 1, 1, 0], inSum = [1, 1, 0, 0];
    const tA = upload(A).keep(), tB = upload(B).keep();
    rt.call('set_requires_grad', [tA, true], undefined, 0);
    rt.call('set_requires_grad', [tB, true], undefined, 0);
    const hat = { A: upload(Ah), B: upload(Bh) };
    const [e, s, target] = [rt.tensor(exists, [K], 'f64'), rt.tensor(inSum, [K], 'f64'), upload(T)];
    const g = s.neg().add(e); // the ghost
    const prog = await trace(rt, { name: 'deflation-grad' }, () => {
      const sumOf = (w: Tensor) => tB.mul(w.reshape([1, K])).matmul(tA).mul(scale);
      const ghost = sumOf(g);
      const dW = sumOf(s).add(ghost.sub(noGrad(rt, () => ghost.clone())));
      const loss = dW.sub(target).square().sum().mul(c / 2).add(deflationLoss(rt, { A: tA, B: tB }, hat, e, s, { scale, curvature: c, K }));
      rt.call('backward', [loss], undefined, 0);
      return [rt.call('grad_of', [tA]) as Tensor, rt.call('grad_of', [tB]) as Tensor];
    });
    const [gA, gB] = prog.run({}) as Tensor[];
    const [gotA, gotB] = [Array.from(await gA.toArray() as Float64Array), Array.from(await gB.toArray() as Float64Array)];
    for (let k = 0; k < K; k++) {
      // the deflated objective's gradient with respect to P_k, then through P_k = scale·b_k a_kᵀ
      const Gk = T.map((row) => row.map((t) => -t));
      addTo(Gk, rankOne(A, B, k, scale));
      for (let j = 0; j < k; j++) addTo(Gk, rankOne(Ah, Bh, j, scale), exists[j]);
      for (let i = 0; i < m; i++) {
        const want = exists[k] ? c * scale * Gk[i].reduce((acc, v, q) => acc + v * A[k][q], 0) : 0;
        expect(gotB[i * K + k]).toBeCloseTo(want, 10);
      }
      for (let q = 0; q < n; q++) {
        const want = exists[k] ? c * scale * Gk.reduce((acc, row, i) => acc + row[q] * B[i][k], 0) : 0;
        expect(gotA[k * n + q]).toBeCloseTo(want, 10);
      }
    }
    prog.free();
    tA.free();
    tB.free();
  });
});

describe('growth (sdk/families/adapters/growth.ts)', () => {
  const read = async (t: Tensor) => Array.from(await t.toArray() as Float32Array);

  it('grows the module with the highest importance per active component, only on growth steps and within the budget', async () => {
    const imp = rt.tensor([0.9, 1.2, 0.5]);
    const active = rt.tensor([1, 2, 1]);
    const choice = (born: number[], step: number, budget = 7) => read(growthChoice(rt, imp, active, rt.tensor(born), rt.full([], step), { growEvery: 5, budget, maxRank: 3 }));
    expect(await choice([1, 2, 1], 10)).toEqual([1, 0, 0]); // 0.9 > 1.2 / 2 > 0.5
    expect(await choice([1, 2, 1], 9)).toEqual([0, 0, 0]); // not a growth step
    expect(await choice([3, 2, 1], 10)).toEqual([0, 1, 0]); // module 0 is full (maxRank 3)
    expect(await choice([3, 2, 1], 10, 6)).toEqual([0, 0, 0]); // 6 born: the budget is spent
    expect(await choice([3, 3, 3], 10, 20)).toEqual([0, 0, 0]); // every module full
  });

  it('a module that grows gets its next unborn component, a ghost for `advance` steps, then in the sum', async () => {
    const born = rt.tensor([1, 1, 0, 0]), birth = rt.tensor([-4, 10, 0, 0]);
    const grown = growModule(rt, born, birth, rt.full([], 1), rt.full([], 20), 4);
    expect(await read(grown.born)).toEqual([1, 1, 1, 0]);
    expect(await read(grown.birth)).toEqual([-4, 10, 20, 0]);
    const still = growModule(rt, born, birth, rt.full([], 0), rt.full([], 20), 4);
    expect(await read(still.born)).toEqual([1, 1, 0, 0]);
    const at = async (step: number) => {
      const p = componentPhases(grown.born, grown.birth, rt.full([], step), 4);
      return [await read(p.gate), await read(p.ghost)];
    };
    expect(await at(23)).toEqual([[1, 1, 0, 0], [0, 0, 1, 0]]); // born at 20: a ghost for steps 21-24
    expect(await at(24)).toEqual([[1, 1, 1, 0], [0, 0, 0, 0]]); // in the sum from step 25
  });

  it("scores a component by the means of |θ·∇θ| over its A row and its B column", async () => {
    const A = rt.tensor([1, -2, 0, 3], [2, 2]), gA = rt.tensor([1, 1, 5, 2], [2, 2]);
    const B = rt.tensor([2, 0, 1, 1, -1, 4], [3, 2]), gB = rt.tensor([1, 9, 3, 1, 2, 1], [3, 2]);
    // row 0: (1 + 2)/2 = 1.5, column 0: (2 + 3 + 2)/3; row 1: 6/2 = 3, column 1: (0 + 1 + 4)/3
    const got = await read(componentSensitivity(A, gA, B, gB));
    expect(got[0]).toBeCloseTo(1.5 + 7 / 3, 5);
    expect(got[1]).toBeCloseTo(3 + 5 / 3, 5);
  });
});
