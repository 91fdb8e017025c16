// The adapter family: AdaLoRA's allocation math against plain references, the family's
// conformance suite failing adapters that break the contract, and adalora's allocation
// driven by the Trainer alone (test/conformance.test.ts runs the suite over every
// registered adapter plugin).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { budgetAt, checkSchedule, maskToBudget, orthogonality, scheduleTables, smoothImportance, tripletScores } from '../sdk/families/adapters/allocation.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);

describe('adalora allocation math', () => {
  const s = { initBudget: 24, targetBudget: 16, tinit: 2, tfinal: 3, totalSteps: 12, deltaT: 2 };

  it('budget schedule: full through tinit, cubic fall reallocating every deltaT, the target forced at T − tfinal, then fixed', () => {
    // by hand: b(t) = ⌊8·(1 − (t − 2)/7)³ + 16⌋ for 2 < t < 9
    const want = [[24, 0, 1], [24, 0, 1], [21, 0, 1], [18, 1, 1], [17, 0, 1], [16, 1, 1], [16, 0, 1], [16, 1, 1], [16, 1, 0], [16, 0, 0], [16, 0, 0], [16, 0, 0]];
    for (let t = 1; t <= 12; t++) {
      const p = budgetAt(t, s);
      expect([p.budget, +p.reallocate, +p.update], `step ${t}`).toEqual(want[t - 1]);
    }
    const tab = scheduleTables(s);
    expect(tab.budget.length).toBe(14);
    expect(tab.budget.slice(1, 13)).toEqual(want.map((w) => w[0]));
    expect(tab.reallocate.slice(1, 13)).toEqual(want.map((w) => w[1]));
    expect([tab.budget[13], tab.reallocate[13], tab.update[13]]).toEqual([16, 0, 0]);
  });

  it('a schedule that cannot run is E_ARG naming the field', () => {
    const refused = (o: Partial<typeof s>) => { try { checkSchedule({ ...s, ...o }, 'adalora'); } catch (e) { return e instanceof LiaisonError && e.code === 'E_ARG' ? e.param : 'other'; } return null; };
    expect(refused({})).toBe(null);
    expect(refused({ tinit: 6, tfinal: 6 })).toBe('totalSteps');
    expect(refused({ targetBudget: 30 })).toBe('targetR');
    expect(refused({ deltaT: 0 })).toBe('deltaT');
  });

  it('importance: smoothed |θ·∇θ| and its uncertainty as PEFT computes them; a step with on = 0 changes nothing', async () => {
    const th = [0.5, -2, 1.5, 0], g = [1, 0.25, -2, 3];
    const theta = rt.tensor(th, [4]), grad = rt.tensor(g, [4]);
    const ipt = rt.tensor([0.1, 0.2, 0.3, 0.4], [4]), unc = rt.tensor([0, 0.1, 0, 0.1], [4]);
    smoothImportance(theta, grad, ipt, unc, 0.85, 0.9, rt.full([], 1));
    const I = th.map((v, i) => Math.abs(v * g[i]));
    const ev = [0.1, 0.2, 0.3, 0.4].map((v, i) => 0.85 * v + 0.15 * I[i]);
    const eu = [0, 0.1, 0, 0.1].map((v, i) => 0.9 * v + 0.1 * Math.abs(I[i] - ev[i]));
    (await list(ipt)).forEach((v, i) => expect(v).toBeCloseTo(ev[i], 6));
    (await list(unc)).forEach((v, i) => expect(v).toBeCloseTo(eu[i], 6));
    smoothImportance(theta, grad, ipt, unc, 0.85, 0.9, rt.full([], 0));
    (await list(ipt)).forEach((v, i) => expect(v).toBeCloseTo(ev[i], 6));
    (await list(unc)).forEach((v, i) => expect(v).toBeCloseTo(eu[i], 6));
  });

  it('triplet scores: S(E_k) + mean S(A_k) + mean S(B_·k), linear and conv shapes', async () => {
    const r = 2;
    const sA = rt.tensor([1, 2, 3, 4, 5, 6], [2, 3]), sE = rt.tensor([10, 20], [2]), sB = rt.tensor([1, 0, 3, 2], [2, 2]);
    expect(await list(tripletScores(sA, sE, sB, r))).toEqual([10 + 2 + 2, 20 + 5 + 1]);
    // conv: A (r, in, kh, kw), B (out, r, 1, 1)
    const cA = rt.tensor([1, 1, 1, 1, 2, 2, 2, 2], [2, 1, 2, 2]), cB = rt.tensor([4, 0, 0, 2], [2, 2, 1, 1]);
    expect(await list(tripletScores(cA, sE, cB, r))).toEqual([10 + 1 + 2, 20 + 2 + 1]);
  });

  it('mask to budget keeps exactly the budget highest scores, ties broken by position', async () => {
    const scores = rt.tensor([0.3, 0.9, 0.1, 0.5, 0.5, 0.7], [6]);
    for (const [b, want] of [[1, [0, 1, 0, 0, 0, 0]], [3, [0, 1, 0, 1, 0, 1]], [4, [0, 1, 0, 1, 1, 1]], [6, [1, 1, 1, 1, 1, 1]]] as const) {
      const m = await list(maskToBudget(scores, rt.tensor(BigInt64Array.of(BigInt(b)), [1])));
      expect(m, `budget ${b}`).toEqual(want);
    }
  });

  it('orthogonality: ‖A·Aᵀ − I‖² + ‖Bᵀ·B − I‖², zero for orthonormal factors', async () => {
    const A = rt.tensor([1, 0, 0, 0, 1, 0], [2, 3]), B = rt.tensor([0, 1, 1, 0, 0, 0], [3, 2]);
    expect(await orthogonality(rt, A, B, 2).item()).toBeCloseTo(0, 6);
    const A2 = rt.tensor([2, 0, 0, 1, 1, 0], [2, 3]); // AAᵀ = [[4, 2], [2, 2]]: (3² + 2² + 2² + 1²) = 18
    const B2 = rt.tensor([1, 0, 0, 0], [2, 2, 1, 1]); // BᵀB = [[1, 0], [0, 0]]: 1
    expect(await orthogonality(rt, A2, B2, 2).item()).toBeCloseTo(19, 5);
  });
});
