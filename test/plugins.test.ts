// What each reference plugin computes, beyond its family's contract (test/conformance.test.ts):
// the update rule, the global threshold, the eigenpairs and their signs, the gating and its
// load-balancing loss, the window.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { exact, gd, magnitude, slidingWindow, topk } from '../plugins/index.js';
import { knownCovariance, normalizeColumns, rayleigh } from '../sdk/families/deflators/base.js';
import { kvHookOptions, kvPolicyProgram } from '../sdk/families/kv-policies/base.js';
import type { KVPolicy } from '../sdk/families/kv-policies/types.js';
import { routerProgram } from '../sdk/families/routers/base.js';
import type { Router } from '../sdk/families/routers/types.js';
import type { ModelLike, StepTrace, TrainingHooks } from '../sdk/hooks.js';
import { Model } from '../sdk/model.js';
import type { PluginMeta } from '../sdk/plugin.js';
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

describe('pruning rounds', () => {
  it('leave the runtime\'s object count flat: masks() and its intermediates are freed each round', async () => {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [16, 32, 8, 4] }, { seed: 0 });
    const pruner = magnitude({ sparsity: 0.9, rounds: 4 });
    pruner.setup(model);
    await pruner.prune(rt);
    const counts = [(await rt.stats()).objects];
    for (let r = 1; r < 4; r++) {
      await pruner.prune(rt);
      counts.push((await rt.stats()).objects);
    }
    expect(pruner.rounds).toBe(4);
    expect(Math.max(...counts)).toBeLessThanOrEqual(counts[0]); // was +17 per round
    // a pruner set up again drops the masks it held
    pruner.setup(model);
    expect((await rt.stats()).objects).toBeLessThanOrEqual(counts[0]);
    // and the four rounds did their work: 90% of the 800 selected entries are zero
    const zeros = await Promise.all(['layers.0.weight', 'layers.1.weight', 'layers.2.weight'].map((n) => model.param(n).eq(0).sum().item()));
    expect(zeros.reduce((x, y) => x + y, 0)).toBe(720);
    pruner.free();
    model.free();
  });
});

describe('deflator helpers', () => {
  it('rayleigh: vᵀΣv per column; normalizeColumns: unit columns, zero columns left at zero', async () => {
    const cov = rt.tensor([2, 1, 0, 1, 3, 0, 0, 0, 4], [3, 3]);
    const v = rt.tensor([1, 0, 3, 1, 0, 4], [3, 2]); // columns (1, 3, 0) and (0, 1, 4)
    // c0ᵀΣc0 = 2·1 + 2·(1·3·1) + 3·9 = 35; c1ᵀΣc1 = 3·1 + 4·16 = 67
    near(await list(rayleigh(cov, v)), [35, 67]);
    const n = normalizeColumns(v);
    near(await list(n.norm(2, 0)), [1, 1]);
    near(await list(n), [1 / Math.sqrt(10), 0, 3 / Math.sqrt(10), 1 / Math.sqrt(17), 0, 4 / Math.sqrt(17)]);
    near(await list(normalizeColumns(rt.zeros([3, 1]))), [0, 0, 0]);
  });
});

describe('family programs, for any plugin of the contract', () => {
  const meta = (name: string, family: 'kv-policy' | 'router'): PluginMeta => ({ name, version: '1.0.0', family, schema: {} as never, description: 'a plain object' });

  it('kvPolicyProgram / kvHookOptions: a policy that does not extend the base, with state', async () => {
    const policy: KVPolicy = {
      meta: meta('plain-kv', 'kv-policy'), config: {}, budget: 2,
      cache: () => ({ evict: 2, history: 3, positions: 'original', bits: 8, group: null }),
      state: () => ({ seen: 0.5 }),
      score: ({ pos, state }) => ({ scores: pos.to('f32').neg(), state: { seen: state.seen.add(1) } }),
    };
    // group null is left out: the runtime's default, min(32, D)
    expect(kvHookOptions(policy)).toEqual({ budget: 2, evict: 2, history: 3, positions: 'original', bits: 8, state: [0.5] });
    expect(() => kvHookOptions({ ...policy, cache: () => ({ evict: 3, history: null, positions: 'original', bits: 32, group: null }) })).toThrow(/evict .* \[1, budget = 2\], got 3/);
    const prog = kvPolicyProgram(rt, policy);
    expect(prog.inputNames).toEqual(['keys', 'values', 'attn', 'pos', 'state:seen']);
    const kv = rt.zeros([1, 1, 3, 2]);
    const [scores, seen] = prog.run([kv, kv, rt.full([1, 1, 1, 3], 1 / 3), rt.tensor(new BigInt64Array([4n, 5n, 6n]), [1, 1, 3]), rt.full([1, 1, 3], 0.5)]) as Tensor[];
    expect(await list(scores)).toEqual([-4, -5, -6]);
    expect(await list(seen)).toEqual([1.5, 1.5, 1.5]);
  });

  it('routerProgram: a router that does not extend the base; each parameter checked against its declared shape', async () => {
    const router: Router = {
      meta: meta('plain-router', 'router'), config: {}, auxWeight: 0,
      params: (d) => ({ gate: { shape: [d.dim, d.experts], init: 'zeros' } }),
      route: (x, { gate }) => ({ weights: x.matmul(gate).softmax(-1) }),
      attach: () => undefined,
    };
    const prog = routerProgram(rt, router, { dim: 3, experts: 4 });
    const [w, aux] = prog.run([rt.ones([2, 3]), rt.zeros([3, 4])]) as Tensor[];
    expect(await list(w)).toEqual(Array(8).fill(0.25));
    expect(await aux.item()).toBe(0);
    await expect((prog.run([rt.ones([2, 3]), rt.zeros([4, 3])]) as Tensor[])[0].toArray()).rejects.toThrow(/input param:gate must have shape \(3, 4\), got \[4, 3\]/);
  });

  it('RouterBase.attach adds the model\'s auxLoss() times auxWeight, through ModelLike', async () => {
    const losses: { name: string; fn: (t: StepTrace) => Tensor }[] = [];
    const model = { auxLoss: () => rt.full([], 3) } as unknown as ModelLike; // no handle: only the contract's method
    const hooks = { rt, model, addLoss: (name: string, fn: (t: StepTrace) => Tensor) => { losses.push({ name, fn }); }, addMetric: () => undefined } as unknown as TrainingHooks;
    topk({ auxWeight: 0.5 }).attach(hooks);
    expect(losses.map((l) => l.name)).toEqual(['topk.aux']);
    expect(await losses[0].fn({ rt, model, lr: rt.full([], 0.1), step: rt.full([], 1), finite: rt.full([], 1).gt(0) }).item()).toBeCloseTo(1.5, 6);
  });
});

describe('exact', () => {
  it('returns the top eigenpairs, descending, with the largest |entry| of each vector positive', async () => {
    const { cov, q } = knownCovariance(rt, [5, 4, 3, 2, 1, 0.5], { seed: 3 });
    const rounds: number[] = [];
    const r = await exact().fit({ cov, d: 6, k: 3 }, { rt, seed: 0, onRound: (i) => { rounds.push(i); } });
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
    const [scores] = prog.run([kv, kv, rt.full([1, 1, 1, 3], 1 / 3), pos]) as Tensor[];
    expect(await list(scores)).toEqual([3, 7, 5]);
  });
});
