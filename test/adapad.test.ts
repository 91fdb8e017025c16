// AdaPaD (plugins/adapters/adapad.ts) and its math (sdk/families/adapters/deflation.ts,
// growth.ts): the deflation loss's gradient is the deflated objective's, growth follows its
// rule and stops at the budget, ghosts train without changing the forward, a resumed run
// equals a straight one, and the self-correction example's fast variant shows errors decaying.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { adapad, type Adapad } from '../plugins/adapters/adapad.js';
import { adam } from '../plugins/momentum/adam.js';
import { Dataset } from '../sdk/data.js';
import { componentSlope, curvatureOf, curvatureState, updateCurvature } from '../sdk/families/adapters/curvature.js';
import { deflationCoefficients, deflationLoss, deflationMasks } from '../sdk/families/adapters/deflation.js';
import { advanceGrowth, componentSensitivity, type GrowthState, growthChoice, UNBORN, updateImportance } from '../sdk/families/adapters/growth.js';
import { Model } from '../sdk/model.js';
import { noGrad, trace } from '../sdk/program.js';
import { Trainer, type TrainerOptions } from '../sdk/trainer.js';
import { runExample, startRuntime } from './helpers.js';

let rt: Runtime;
let digits: Dataset;
const dirs: string[] = [];
beforeAll(async () => {
  rt = await startRuntime();
  digits = await Dataset.builtin(rt, 'digits');
});
afterAll(async () => {
  await rt?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});
const tempDir = () => { const d = mkdtempSync(join(tmpdir(), 'liaison-adapad-')); dirs.push(d); return d; };

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
const mapValues = <T extends Record<string, Tensor>>(o: T, f: (t: Tensor) => Tensor) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)])) as T;
const addTo = (acc: number[][], x: number[][], w = 1) => acc.forEach((row, i) => row.forEach((_, j) => { row[j] += w * x[i][j]; }));

describe('the deflation loss (sdk/families/adapters/deflation.ts)', () => {
  it('gives component k the gradient of the deflated objective: G + c·D_k = c·(Σ_{j<k} P̂_j + P_k − T), two modules batched', async () => {
    // Per module, the loss is (c/2)‖ΔW − T‖² with ΔW the live sum (its Hessian is c·I), a ghost
    // in the forward as ghost·(P − sg(P)) (value 0, its gradient), plus the deflation loss.
    // Module 0: K = 4 on (3, 5), components 0 and 1 in the sum, 2 a ghost, 3 not born yet;
    // module 1: (4, 2), component 0 in the sum, 1 a ghost. Scales differ, so the weights are (M, 1, 1).
    const K = 4, c = 1.3;
    const mods = [
      { m: 3, n: 5, scale: 0.7, exists: [1, 1, 1, 0], inSum: [1, 1, 0, 0], seed: 1 },
      { m: 4, n: 2, scale: 1.1, exists: [1, 1, 0, 0], inSum: [1, 0, 0, 0], seed: 9 },
    ].map((d) => ({ ...d, A: matrix(K, d.n, d.seed), B: matrix(d.m, K, d.seed + 1), Ah: matrix(K, d.n, d.seed + 2), Bh: matrix(d.m, K, d.seed + 3), T: matrix(d.m, d.n, d.seed + 4) }));
    const rows = (key: 'exists' | 'inSum') => rt.tensor(mods.flatMap((d) => d[key]), [2, K], 'f64');
    const [e, s] = [rows('exists'), rows('inSum')];
    const g = e.sub(s); // the ghosts
    const coef = deflationCoefficients(mapValues(deflationMasks(rt, K), (t) => t.to('f64')), e, s, g);
    const live = mods.map((d) => {
      const t = { A: upload(d.A).keep(), B: upload(d.B).keep() };
      for (const x of [t.A, t.B]) rt.call('set_requires_grad', [x, true], undefined, 0);
      return t;
    });
    const weights = rt.tensor(mods.map((d) => c * d.scale ** 2), [2, 1, 1], 'f64');
    const prog = await trace(rt, { name: 'deflation-grad' }, () => {
      let loss = deflationLoss(rt, mods.map((d, i) => ({ live: live[i], hat: { A: upload(d.Ah), B: upload(d.Bh) } })), coef, weights);
      mods.forEach((d, i) => {
        const sumOf = (w: Tensor) => live[i].B.mul(w.narrow(0, i, 1)).matmul(live[i].A).mul(d.scale);
        const ghost = sumOf(g);
        const dW = sumOf(s).add(ghost.sub(noGrad(rt, () => ghost.clone())));
        loss = loss.add(dW.sub(upload(d.T)).square().sum().mul(c / 2));
      });
      rt.call('backward', [loss], undefined, 0);
      return live.flatMap((t) => [rt.call('grad_of', [t.A]) as Tensor, rt.call('grad_of', [t.B]) as Tensor]);
    });
    const grads = await Promise.all((prog.run({}) as Tensor[]).map(async (t) => Array.from(await t.toArray() as Float64Array)));
    mods.forEach(({ m, n, scale, exists, A, B, Ah, Bh, T }, mi) => {
      const [gotA, gotB] = [grads[2 * mi], grads[2 * mi + 1]];
      for (let k = 0; k < K; k++) {
        // the deflated objective's gradient with respect to P_k, then through P_k = scale·b_k a_kᵀ
        const Gk = T.map((row) => row.map((t) => -t));
        addTo(Gk, rankOne(A, B, k, scale));
        for (let j = 0; j < k; j++) addTo(Gk, rankOne(Ah, Bh, j, scale), exists[j]);
        for (let i = 0; i < m; i++) {
          const want = exists[k] ? c * scale * Gk[i].reduce((acc, v, q) => acc + v * A[k][q], 0) : 0;
          expect(gotB[i * K + k], `module ${mi} B[${i}, ${k}]`).toBeCloseTo(want, 10);
        }
        for (let q = 0; q < n; q++) {
          const want = exists[k] ? c * scale * Gk.reduce((acc, row, i) => acc + row[q] * B[i][k], 0) : 0;
          expect(gotA[k * n + q], `module ${mi} A[${k}, ${q}]`).toBeCloseTo(want, 10);
        }
      }
    });
    prog.free();
    for (const t of live) { t.A.free(); t.B.free(); }
  });
});

describe("per-component curvature ('auto': sdk/families/adapters/curvature.ts, deflation.ts)", () => {
  const read = async (t: Tensor) => Array.from(await t.to('f64').toArray() as Float64Array);

  it('weights each term of D_k by its own component\'s curvature: the gradient of component k is Σ_j c_j·coef[k, j]·X_j', async () => {
    // one module (3, 4), K = 3: components 0, 1 in the sum, 2 a ghost; c_j = 0.5, 2, 3
    const K = 3, m = 3, n = 4, scale = 0.8, cs = [0.5, 2, 3], exists = [1, 1, 1], inSum = [1, 1, 0];
    const [A, B, Ah, Bh] = [matrix(K, n, 3), matrix(m, K, 4), matrix(K, n, 5), matrix(m, K, 6)];
    const row = (v: number[]) => rt.tensor(v, [1, K], 'f64');
    const coef = deflationCoefficients(mapValues(deflationMasks(rt, K), (t) => t.to('f64')), row(exists), row(inSum), row(exists.map((e, k) => e - inSum[k])));
    const live = { A: upload(A).keep(), B: upload(B).keep() };
    for (const x of [live.A, live.B]) rt.call('set_requires_grad', [x, true], undefined, 0);
    const weights = rt.tensor(cs.map((c) => c * scale ** 2), [1, 1, K], 'f64');
    const prog = await trace(rt, { name: 'deflation-per-component' }, () => {
      const loss = deflationLoss(rt, [{ live, hat: { A: upload(Ah), B: upload(Bh) } }], coef, weights);
      rt.call('backward', [loss], undefined, 0);
      return [rt.call('grad_of', [live.A]) as Tensor, rt.call('grad_of', [live.B]) as Tensor];
    });
    const [gotA, gotB] = await Promise.all((prog.run({}) as Tensor[]).map(read));
    for (let k = 0; k < K; k++) {
      // D_k with every P_j (and P̂_j) weighted by c_j: predecessors' copies minus their live values, the
      // successors' live values out, a ghost's own P_k back
      const D = Array.from({ length: m }, () => new Array<number>(n).fill(0));
      for (let j = 0; j < K; j++) {
        if (j < k) { addTo(D, rankOne(Ah, Bh, j, scale), cs[j]); addTo(D, rankOne(A, B, j, scale), -cs[j] * inSum[j]); }
        if (j > k) addTo(D, rankOne(A, B, j, scale), -cs[j] * inSum[j]);
        if (j === k) addTo(D, rankOne(A, B, j, scale), cs[j] * (1 - inSum[j]));
      }
      for (let q = 0; q < n; q++) expect(gotA[k * n + q], `A[${k}, ${q}]`).toBeCloseTo(scale * D.reduce((acc, r, i) => acc + r[q] * B[i][k], 0), 10);
      for (let i = 0; i < m; i++) expect(gotB[i * K + k], `B[${i}, ${k}]`).toBeCloseTo(scale * D[i].reduce((acc, v, q) => acc + v * A[k][q], 0), 10);
    }
    prog.free();
    live.A.free();
    live.B.free();
  });

  it('measures the gradient along each unit component, u_kᵀG, from A and its gradient; undefined while B is zero', async () => {
    const K = 2, m = 3, n = 4, scale = 0.5;
    const [A, B, G] = [matrix(K, n, 11), matrix(m, K, 12), matrix(m, n, 13)];
    B.forEach((r) => { r[1] = 0; }); // component 1 has no direction yet
    // ∇a_k = scale·Gᵀ b_k
    const gA = A.map((_, k) => Array.from({ length: n }, (_, q) => scale * G.reduce((acc, r, i) => acc + r[q] * B[i][k], 0)));
    const { y, valid } = componentSlope(upload(A), upload(gA), upload(B), scale);
    const P = rankOne(A, B, 0, scale);
    const norm = Math.sqrt(P.flat().reduce((a, v) => a + v * v, 0));
    const want = P.flat().reduce((acc, v, i) => acc + v * G.flat()[i], 0) / norm;
    const got = await read(y);
    expect(got[0]).toBeCloseTo(want, 10);
    expect(got[1]).toBe(0);
    expect(Array.from(await valid.toArray() as Uint8Array, Boolean)).toEqual([true, false]);
  });

  it('estimates N·Var(y) from successive differences, bias-corrected, clipped; unmeasured and skipped steps change nothing', async () => {
    // component 0 alternates ±1 (each difference squared over 2: 2, so N·2 = 8 at once, bias
    // corrected); component 1 drifts by 0.1 a step (0.005: the drift barely counts); component 2 is
    // never valid (0); component 3 alternates ±3 (N·18 = 72, clipped to 50)
    const st = curvatureState(rt, 1, 4);
    const N = 4, beta = 0.9, finite = rt.full([], 1).gt(0);
    for (let t = 0; t < 6; t++) {
      const s = t % 2 ? -1 : 1;
      updateCurvature(st, rt.tensor([s, 0.1 * t, 5, 3 * s], [1, 4]), rt.tensor([1, 1, 0, 1], [1, 4]).gt(0), finite, beta);
    }
    const c = await read(curvatureOf(st, N, beta, 50));
    [8, N * 0.005, 0, 50].forEach((v, i) => expect(c[i], `component ${i}`).toBeCloseTo(v, 5));
    expect(await read(st.count)).toEqual([5, 5, 0, 5]);
    // a skipped step (NaN gradients) leaves everything as it was
    const before = await Promise.all([st.prev, st.ema, st.count, st.seen].map(read));
    updateCurvature(st, rt.full([1, 4], NaN), rt.tensor([1, 1, 1, 1], [1, 4]).gt(0), rt.full([], 0).gt(0), beta);
    expect(await Promise.all([st.prev, st.ema, st.count, st.seen].map(read))).toEqual(before);
  });
});

describe('growth (sdk/families/adapters/growth.ts)', () => {
  const read = async (t: Tensor) => Array.from(await t.to('f32').toArray() as Float32Array);

  it('grows the module with the highest importance per active component, only on growth steps and within the budget', async () => {
    const imp = rt.tensor([0.9, 1.2, 0.5]);
    const active = rt.tensor([1, 2, 1]);
    const modules = rt.arange(0, 3, 1, 'i64');
    const choice = (born: number[], step: number, budget = 7, caps = [3, 3, 3]) => read(growthChoice(imp, active, rt.tensor(born, [3, 1]), rt.tensor(caps, [3, 1]), rt.full([], step), modules, { growEvery: 5, budget }));
    expect(await choice([1, 2, 1], 10)).toEqual([1, 0, 0]); // 0.9 > 1.2 / 2 > 0.5
    expect(await choice([1, 2, 1], 9)).toEqual([0, 0, 0]); // not a growth step
    expect(await choice([3, 2, 1], 10)).toEqual([0, 1, 0]); // module 0 is full (capacity 3)
    expect(await choice([1, 2, 1], 10, 7, [1, 3, 3])).toEqual([0, 1, 0]); // module 0 at its own capacity, 1
    expect(await choice([1, 2, 1], 10, 7, [1, 2, 3])).toEqual([0, 0, 1]);
    expect(await choice([3, 2, 1], 10, 6)).toEqual([0, 0, 0]); // 6 born: the budget is spent
    expect(await choice([3, 3, 3], 10, 20)).toEqual([0, 0, 0]); // every module full
  });

  it('a module that grows gets its next unborn component, a ghost for `advance` steps, then in the sum', async () => {
    // two modules, K = 3, advance 2: module 0 holds one component (in the sum), module 1 two
    const st: GrowthState = {
      age: rt.tensor([2, UNBORN, UNBORN, 9, 5, UNBORN], [2, 3]), born: rt.tensor([1, 0, 0, 1, 1, 0], [2, 3]),
      gate: rt.tensor([1, 0, 0, 1, 1, 0], [2, 3]), ghost: rt.zeros([2, 3]), importance: rt.zeros([2]),
    };
    const slots = rt.arange(0, 3, 1, 'f32').reshape([1, 3]);
    const step = (grows: boolean[]) => advanceGrowth(st, rt.tensor(grows.map(Number), [2, 1]).gt(0), st.born.sum(1, true), slots, 2);
    step([true, false]);
    expect(await read(st.born)).toEqual([1, 1, 0, 1, 1, 0]);
    expect(await read(st.gate)).toEqual([1, 0, 0, 1, 1, 0]);
    expect(await read(st.ghost)).toEqual([0, 1, 0, 0, 0, 0]);
    step([false, false]);
    expect(await read(st.ghost)).toEqual([0, 1, 0, 0, 0, 0]); // a ghost for the two steps after its birth
    step([false, true]);
    expect(await read(st.gate)).toEqual([1, 1, 0, 1, 1, 0]);
    expect(await read(st.ghost)).toEqual([0, 0, 0, 0, 0, 1]);
    expect(await read(st.age)).toEqual([5, 2, UNBORN, 12, 8, 0]);
  });

  it("scores a component by the means of |θ·∇θ| over its A row and its B column; the module's importance sums its active ones", async () => {
    const A = rt.tensor([1, -2, 0, 3], [2, 2]), gA = rt.tensor([1, 1, 5, 2], [2, 2]);
    const B = rt.tensor([2, 0, 1, 1, -1, 4], [3, 2]), gB = rt.tensor([1, 9, 3, 1, 2, 1], [3, 2]);
    // row 0: (1 + 2)/2 = 1.5, column 0: (2 + 3 + 2)/3; row 1: 6/2 = 3, column 1: (0 + 1 + 4)/3
    const sens = componentSensitivity(A, gA, B, gB);
    const got = await read(sens);
    expect(got[0]).toBeCloseTo(1.5 + 7 / 3, 5);
    expect(got[1]).toBeCloseTo(3 + 5 / 3, 5);
    const st = { importance: rt.tensor([1]), gate: rt.tensor([1, 0], [1, 2]) } as GrowthState;
    updateImportance(st, sens.unsqueeze(0), 0.75, rt.full([], 1).gt(0)); // 0.75·1 + 0.25·(the active component's score)
    expect((await read(st.importance))[0]).toBeCloseTo(0.75 + 0.25 * (1.5 + 7 / 3), 5);
    // a step the Trainer skipped (nonFinite 'skip'): NaN gradients, the EMA kept exactly
    const before = (await read(st.importance))[0];
    updateImportance(st, rt.full([1, 2], NaN), 0.75, rt.full([], 0).gt(0));
    expect((await read(st.importance))[0]).toBe(before);
  });
});

/** An MLP 64-32-16-10 on the digits: adapad sits on layers.0 and layers.1 (the head is left out). Batches of 600: 3 steps an epoch. */
async function setup(plugin: Adapad, seed = 0): Promise<TrainerOptions> {
  const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 32, 16, 10] }, { seed });
  return { model, optimizer: adam({ lr: 0.01 }), plugins: [plugin], batchSize: 600, shuffle: true, seed: 1, progress: 'none' };
}
const sum = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);

describe('adapad (plugins/adapters/adapad.ts)', () => {
  it('grows one component every growEvery steps until the budget is spent, never past it, and reports the rank pattern', async () => {
    // two modules start with one component each; growths at steps 3, 6, 9 spend the budget of 5;
    // each new component is a ghost for 2 steps, so the sum holds it from the epoch end after
    const plugin = adapad({ maxRank: 3, budget: 5, growEvery: 3, advance: 2, localSteps: 2 });
    const trainer = new Trainer(await setup(plugin));
    await trainer.fit(digits, { epochs: 6 });
    expect(plugin.rankHistory.map((h) => h.step)).toEqual([3, 6, 9, 12, 15, 18]);
    expect(plugin.rankHistory.map((h) => sum(h.ranks))).toEqual([2, 3, 4, 5, 5, 5]);
    const phases = await plugin.phases();
    const born = Object.fromEntries(Object.entries(phases).map(([m, p]) => [m, p.filter((x) => x !== 'unborn').length]));
    expect(sum(born)).toBe(5);
    const ranks = await plugin.rankPattern();
    expect(ranks).toEqual(born); // every born component has joined the sum
    for (const p of Object.values(phases)) expect(p.indexOf('unborn') === -1 || p.slice(p.indexOf('unborn')).every((x) => x === 'unborn')).toBe(true); // born in index order
    expect(Object.keys(ranks)).toEqual(['layers.0', 'layers.1']);
    for (const r of Object.values(ranks)) expect(r).toBeGreaterThanOrEqual(1);
    for (const r of Object.values(ranks)) expect(r).toBeLessThanOrEqual(3);
    expect(plugin.rankHistory.at(-1)!.ranks).toEqual(ranks);
    // the export holds what the pattern says: A (r_m, in) per module
    const { tensors } = await plugin.set!.peftTensors();
    expect((await tensors['base_model.model.layers.0.lora_A.weight'].info()).shape).toEqual([ranks['layers.0'], 64]);
    expect(await plugin.parameterCount()).toBe(ranks['layers.0'] * (64 + 32) + ranks['layers.1'] * (32 + 16));
    trainer.free();
    plugin.free();
  }, 30_000);

  it('a ghost adds nothing to the forward but trains: its B column leaves zero', async () => {
    const plugin = adapad({ targets: 'layers\\.1', maxRank: 2, budget: 2, growEvery: 1, advance: 1000 });
    const opts = await setup(plugin);
    const trainer = new Trainer(opts);
    await trainer.fit(digits, { epochs: 2 });
    const f = plugin.set!.factors['layers.1'];
    expect(await plugin.phases()).toEqual({ 'layers.1': ['sum', 'ghost'] });
    expect([...await f.gate.toArray() as Float32Array]).toEqual([1, 0]);
    const B = Array.from(await f.B.toArray() as Float32Array); // (16, 2)
    expect(Math.max(...B.filter((_, i) => i % 2 === 1).map(Math.abs))).toBeGreaterThan(1e-4); // born at 0, it got gradients
    const x = digits.x.narrow(0, 0, 50);
    const forward = async () => Array.from(await opts.model.forward(x, { train: false }).toArray() as Float32Array);
    const moved = (a: number[], b: number[]) => Math.max(...a.map((v, i) => Math.abs(v - b[i])));
    const before = await forward();
    // the ghost's column zeroed: the forward moves by f32 rounding at most (the side path adds
    // B·diag(gate + ghost)·A x and takes the ghost's share back out, one rounding each)
    f.B.narrow(1, 1, 1).zero_();
    expect(moved(await forward(), before)).toBeLessThan(1e-6);
    f.B.narrow(1, 0, 1).zero_(); // the component in the sum: the forward moves
    expect(moved(await forward(), before)).toBeGreaterThan(1e-3);
    trainer.free();
    plugin.free();
  }, 30_000);

  it.each([1, 'auto'] as const)('resumed mid-run it trains as a straight run: from growth under way, and from past its end (where the straight run has dropped the growth ops and the ghost term); curvature %s', async (curvature) => {
    // growths at steps 2, 4, 6, 8 spend the budget of 6; the last ghost joins at step 11, so the
    // straight run finds growth over at the end of epoch 4 (step 12) and traces a leaner step;
    // resumed from epoch 2 growth is under way, resumed from epoch 4 the fresh plugin still runs
    // the full step for an epoch: every path must train the same
    const dir = tempDir();
    const make = () => adapad({ maxRank: 3, budget: 6, growEvery: 2, advance: 3, localSteps: 2, curvature, curvatureSamples: 600 }); // the deflation's copies (and estimates) resumed too
    const straight = new Trainer({ ...(await setup(make())), checkpointDir: dir, checkpointEvery: 2 });
    const full = await straight.fit(digits, { epochs: 6 });
    const want = (straight.plugins[0] as Adapad);
    for (const from of [2, 4]) {
      const plugin = make();
      const resumed = await Trainer.resume(join(dir, `epoch-${from}.safetensors`), await setup(plugin, 7));
      const rest = await resumed.fit(digits, { epochs: 6 - from });
      rest.forEach((r, i) => expect(r.loss, `from epoch ${from}`).toBeCloseTo(full[i + from].loss, 5));
      for (const m of ['layers.0', 'layers.1']) {
        for (const k of ['A', 'B', 'gate'] as const) {
          const [x, y] = await Promise.all([want.set!.factors[m][k].toArray(), plugin.set!.factors[m][k].toArray()]);
          Array.from(x as Float32Array).forEach((v, i) => expect((y as Float32Array)[i], `from epoch ${from}: ${m} ${k}[${i}]`).toBeCloseTo(v, 5));
        }
      }
      expect(await plugin.phases()).toEqual(await want.phases());
      resumed.free();
    }
    expect(want.set!.factors['layers.0'].ghost).toBeUndefined(); // the straight run did drop the ghost term
    straight.free();
  }, 30_000);

  it("stops a module at the rank its update can have, min(out, in): the budget goes to the others", async () => {
    // MLP 64-3-16-10: layers.0 (3 × 64) and layers.1 (16 × 3) have updates of rank ≤ 3; maxRank 6
    const plugin = adapad({ maxRank: 6, budget: 12, growEvery: 1, advance: 0 });
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 3, 16, 10] }, { seed: 0 });
    const trainer = new Trainer({ model, optimizer: adam({ lr: 0.01 }), plugins: [plugin], batchSize: 600, seed: 1, progress: 'none' });
    await trainer.fit(digits, { epochs: 4 });
    expect(await plugin.rankPattern()).toEqual({ 'layers.0': 3, 'layers.1': 3 }); // 6 of the 12 born: both full
    trainer.free();
    plugin.free();
  }, 30_000);

  it('refuses a budget below the number of modules, naming the field', async () => {
    const trainer = new Trainer(await setup(adapad({ budget: 1 })));
    const err = await trainer.fit(digits, { epochs: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).param).toBe('budget');
    trainer.free();
  });
});

describe('examples/adapad-self-correction.ts', () => {
  it('runs its fast variant: every component\'s error against its exact deflation target decays after warm-up, and not without the deflation', async () => {
    const out = tempDir();
    const { code, out: text, err } = await runExample(['examples/adapad-self-correction.ts', '--out', out], { LIAISON_ADAPAD_ROUNDS: '20', LIAISON_ADAPAD_K: '3' });
    expect(code, `${text}\n${err}`).toBe(0);
    expect(text).toMatch(/Self-correction, adapad: yes — 3 of 3 components/);
    // the control (curvature 0, the same components trained jointly): the first two stay mixed
    expect(text).toMatch(/Self-correction, control \(curvature 0\): no — 1 of 3 components.*; not: 1, 2\./);
    expect(text).toMatch(/\| 3 \| 9 \| /); // the third component joined at round 9 (born at step 80, a ghost for 10 steps)
    expect(text).toMatch(/wrote .*adapad-self-correction\.png, .*adapad-self-correction-pairs\.png/);
  }, 120_000);
});
