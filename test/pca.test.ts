// sdk/pca.ts: the scikit-learn-shaped PCA on top of a deflator. The reference is computed
// here independently of the implementation under test: an analytic case, and scikit-learn's
// "full" solver (the SVD of the centered rows, S²/(n − 1), svd_flip on the rows of Vᵀ)
// written out in this file. The comparison with scikit-learn itself is test/pca-example.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { exact } from '../plugins/deflators/exact.js';
import { parallelDeflation } from '../plugins/deflators/parallel-deflation.js';
import { errorSummary } from '../sdk/families/deflators/errors.js';
import type { Deflator } from '../sdk/families/deflators/types.js';
import { PCA } from '../sdk/pca.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const arr = async (t: Tensor): Promise<number[]> => Array.from((await t.to('f64').toArray()) as Float64Array);
const maxAbs = (a: readonly number[], b: readonly number[]) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

/** Four points on two axes rotated by `theta`, shifted by `shift`: covariance diag(8/3, 2/3) in the rotated frame. */
function rotated(theta: number, shift: [number, number]): { rows: number[][]; axes: number[][] } {
  const [c, s] = [Math.cos(theta), Math.sin(theta)];
  const axes = [[c, s], [-s, c]];
  const local = [[2, 0], [-2, 0], [0, 1], [0, -1]];
  const rows = local.map(([a, b]) => [a * axes[0][0] + b * axes[1][0] + shift[0], a * axes[0][1] + b * axes[1][1] + shift[1]]);
  return { rows, axes };
}

/** scikit-learn's sign rule on one vector: the largest-|entry| (first on ties) positive. */
function flipped(v: number[]): number[] {
  let at = 0;
  v.forEach((x, i) => { if (Math.abs(x) > Math.abs(v[at])) at = i; });
  return v[at] < 0 ? v.map((x) => -x) : v;
}

describe('PCA', () => {
  it('an analytic case: rotated axes, variances 8/3 and 2/3, sign flipped to the largest entry', async () => {
    // theta = 150°: the first axis is (-0.866, 0.5), which the sign rule turns into (0.866, -0.5)
    const { rows, axes } = rotated((150 * Math.PI) / 180, [5, -3]);
    const x = rt.tensor(rows.flat(), [4, 2]);
    const pca = await new PCA(rt, { nComponents: 2, deflator: exact() }).fit(x);
    expect(await arr(pca.mean)).toEqual([expect.closeTo(5, 6), expect.closeTo(-3, 6)]);
    const ev = await arr(pca.explainedVariance);
    expect(ev[0]).toBeCloseTo(8 / 3, 5);
    expect(ev[1]).toBeCloseTo(2 / 3, 5);
    expect(await arr(pca.explainedVarianceRatio)).toEqual([expect.closeTo(0.8, 6), expect.closeTo(0.2, 6)]);
    expect(pca.totalVariance).toBeCloseTo(10 / 3, 5);
    expect(pca.noiseVariance).toBe(0); // k = min(n, d)
    const comps = await arr(pca.components);
    expect(maxAbs(comps, [...flipped(axes[0]), ...flipped(axes[1])])).toBeLessThan(1e-6);
    expect(comps[0]).toBeGreaterThan(0.8); // really flipped: it was -0.866
    // the points' coordinates along the flipped axes: both axes flip here, so (∓2, 0) and (0, ∓1)
    const z = await arr(pca.transform(x));
    expect(maxAbs(z, [-2, 0, 2, 0, 0, -1, 0, 1])).toBeLessThan(1e-5);
    expect(maxAbs(await arr(pca.inverseTransform(pca.transform(x))), rows.flat())).toBeLessThan(1e-5);

    // one component: the noise variance is the variance left out
    const one = await new PCA(rt, { nComponents: 1, deflator: exact() }).fit(x);
    expect(one.noiseVariance).toBeCloseTo(2 / 3, 5);
    expect(await arr(one.transform(x))).toEqual([-2, 2, 0, 0].map((v) => expect.closeTo(v, 5)));
    // back from one component: the points on the first axis stay, the others go to the mean
    const back = await arr(one.inverseTransform(one.transform(x)));
    expect(maxAbs(back, [...rows[0], ...rows[1], 5, -3, 5, -3])).toBeLessThan(1e-5);
    pca.free();
    one.free();
  });

  it("matches scikit-learn's full solver (SVD of the centered rows) on random data, in f64", async () => {
    const [n, d, k] = [300, 12, 5];
    const scales = rt.tensor(Array.from({ length: d }, (_, j) => 3 * 0.8 ** j), [1, d]).to('f64');
    const [q] = rt.randn([d, d], { seed: 3 }).to('f64').qr();
    const x = rt.randn([n, d], { seed: 4 }).to('f64').mul(scales).matmul(q).add(rt.tensor([1, -2, 0.5, 0, 3, 0, 0, 1, 0, 2, -1, 0.25]).to('f64'));
    const pca = await new PCA(rt, { nComponents: k, deflator: exact() }).fit(x);

    // the reference: U S Vᵀ = X − mean; explained variance S²/(n − 1); the ratio against Σ var_j
    const rows = await arr(x);
    const mean = Array.from({ length: d }, (_, j) => rows.filter((_, i) => i % d === j).reduce((a, b) => a + b, 0) / n);
    const xc = rt.tensor(rows.map((v, i) => v - mean[i % d]), [n, d], 'f64');
    const [, s, vh] = xc.svd();
    const sv = await arr(s);
    const vt = await arr(vh);
    const ev = sv.map((v) => (v * v) / (n - 1));
    const total = ev.reduce((a, b) => a + b, 0);
    const want = Array.from({ length: k }, (_, j) => flipped(vt.slice(j * d, (j + 1) * d))).flat();

    expect(maxAbs(await arr(pca.mean), mean)).toBeLessThan(1e-12);
    expect(maxAbs(await arr(pca.components), want)).toBeLessThan(1e-9);
    expect(maxAbs(await arr(pca.explainedVariance), ev.slice(0, k))).toBeLessThan(1e-9);
    expect(maxAbs(await arr(pca.explainedVarianceRatio), ev.slice(0, k).map((v) => v / total))).toBeLessThan(1e-12);
    expect(pca.noiseVariance).toBeCloseTo(ev.slice(k).reduce((a, b) => a + b, 0) / (d - k), 10);
    expect(maxAbs(await arr(pca.singularValues!), sv.slice(0, k))).toBeLessThan(1e-9);
    expect(pca.nSamples).toBe(n);
    expect(pca.nFeatures).toBe(d);
    expect((await pca.components.info()).dtype).toBe('f64'); // f64 in, f64 out

    // transform = (x − mean) Vᵀ, i.e. U·S up to the signs: |scores| match
    const z = await arr(pca.transform(x));
    const us = await arr(xc.matmul(rt.tensor(want, [k, d], 'f64').T));
    expect(maxAbs(z, us)).toBeLessThan(1e-9);
    const z2 = await arr(await new PCA(rt, { nComponents: k, deflator: exact() }).fitTransform(x));
    expect(maxAbs(z2, z)).toBeLessThan(1e-12);

    // whiten: unit variance per component
    const w = await new PCA(rt, { nComponents: k, deflator: exact(), whiten: true }).fit(x);
    const varW = await arr(w.transform(x).var(0));
    expect(maxAbs(varW, Array(k).fill(1))).toBeLessThan(1e-9);
    expect(maxAbs(await arr(w.inverseTransform(w.transform(x))), await arr(pca.inverseTransform(pca.transform(x))))).toBeLessThan(1e-9);

    // fitCovariance on the same covariance, mean and n: the same fit
    const cov = xc.T.matmul(xc).div(n - 1);
    const c = await new PCA(rt, { nComponents: k, deflator: exact() }).fitCovariance(cov, { mean: rt.tensor(mean, [d], 'f64'), nSamples: n });
    expect(maxAbs(await arr(c.components), want)).toBeLessThan(1e-9);
    expect(maxAbs(await arr(c.explainedVarianceRatio), await arr(pca.explainedVarianceRatio))).toBeLessThan(1e-12);
    expect(c.noiseVariance).toBeCloseTo(pca.noiseVariance, 12);
    expect(maxAbs(await arr(c.transform(x)), z)).toBeLessThan(1e-9);
    // without a mean: transform does not center (the mean is zeros)
    const c0 = await new PCA(rt, { nComponents: k, deflator: exact(), dtype: 'f32' }).fitCovariance(cov);
    expect(await arr(c0.mean)).toEqual(Array(d).fill(0));
    expect((await c0.components.info()).dtype).toBe('f32');
    for (const p of [pca, w, c, c0]) p.free();
  });

  it('sorts by variance, fixes signs and normalizes whatever order the deflator returns; passes data and onRound', async () => {
    const inner = exact();
    let seen: { d: number; k: number; dataShape?: number[]; dataMeans?: number[] } | undefined;
    // a deflator that returns exact's vectors reversed, negated and scaled by 3
    const shuffled: Deflator = {
      meta: inner.meta, config: inner.config,
      async fit(problem, ctx) {
        // the problem's tensors live for the fit only: look at them now
        const { data } = problem;
        seen = { d: problem.d, k: problem.k, ...(data ? { dataShape: (await data.info()).shape, dataMeans: await arr(data.mean(0)) } : {}) };
        const r = await inner.fit(problem, ctx);
        return { ...r, vectors: r.vectors.flip(1).mul(-3), values: r.values.flip(0) };
      },
    };
    const x = rt.randn([50, 6], { seed: 1 }).mul(rt.tensor([4, 3, 2, 1, 0.5, 0.25], [1, 6])).add(7);
    const rounds: number[] = [];
    const a = await new PCA(rt, { nComponents: 3, deflator: shuffled, seed: 5, onRound: (r) => { rounds.push(r); } }).fit(x);
    const b = await new PCA(rt, { nComponents: 3, deflator: exact() }).fit(x);
    expect(maxAbs(await arr(a.components), await arr(b.components))).toBeLessThan(1e-6);
    expect(maxAbs(await arr(a.explainedVariance), await arr(b.explainedVariance))).toBeLessThan(1e-5);
    const ev = await arr(a.explainedVariance);
    expect(ev[0]).toBeGreaterThan(ev[1]);
    expect(ev[1]).toBeGreaterThan(ev[2]);
    expect(rounds).toEqual([1]);
    // the centered rows went to the deflator
    expect(seen?.d).toBe(6);
    expect(seen?.k).toBe(3);
    expect(seen?.dataShape).toEqual([50, 6]);
    expect(Math.max(...seen!.dataMeans!.map(Math.abs))).toBeLessThan(1e-5);
    expect(a.cost).toEqual({ rounds: 1, matvecs: 18 });
    a.free();
    b.free();
  });

  it("feeds the centered rows to a Hebbian deflator: parallel-deflation in 'hebbian' mode finds the components", async () => {
    const [n, d, k] = [2000, 8, 3];
    const [q] = rt.randn([d, d], { seed: 7 }).qr();
    const x = rt.randn([n, d], { seed: 8 }).mul(rt.tensor([4, 2, 1, 0.5, 0.4, 0.3, 0.2, 0.1], [1, d])).matmul(q.T).add(3);
    const hebb = parallelDeflation({ mode: 'hebbian', localSteps: 20, rounds: 40, batchSize: 64 });
    const a = await new PCA(rt, { nComponents: k, deflator: hebb, seed: 1 }).fit(x);
    const b = await new PCA(rt, { nComponents: k, deflator: exact() }).fit(x);
    // per-component error √(2 − 2|⟨u, v⟩|) against the exact components: minibatch noise, not exact
    const { errors } = await errorSummary(b.components.T, a.components.T); // (d, k) columns each
    for (const e of errors) expect(e).toBeLessThan(0.1);
    expect(maxAbs(await arr(a.explainedVarianceRatio), await arr(b.explainedVarianceRatio))).toBeLessThan(0.01);
    // without data (a covariance alone) the Hebbian mode has nothing to draw from
    await expect(new PCA(rt, { nComponents: k, deflator: hebb }).fitCovariance(rt.eye(d))).rejects.toMatchObject({ code: 'E_ARG', param: 'data' });
    a.free();
    b.free();
  });

  it('refuses bad arguments with E_ARG naming the field', async () => {
    const x = rt.randn([10, 4], { seed: 0 });
    const err = async (f: () => unknown, param: string, msg: RegExp) => {
      let e: unknown;
      try { await f(); } catch (caught) { e = caught; }
      expect(e, `expected an E_ARG for '${param}'`).toMatchObject({ code: 'E_ARG', param });
      expect((e as Error).message).toMatch(msg);
    };
    const mk = (o: Record<string, unknown>) => new PCA(rt, { nComponents: 2, deflator: exact(), ...o } as never);
    await err(() => mk({ nComponents: 0 }), 'nComponents', /integer >= 1/);
    await err(() => mk({ nComponents: 1.5 }), 'nComponents', /integer >= 1/);
    await err(() => mk({ deflator: undefined }), 'deflator', /is required.*exact\(\)/);
    await err(() => mk({ deflator: exact }), 'deflator', /instance, not the factory: pass exact\(\)/);
    await err(() => mk({ deflator: { fit: () => 0 } }), 'deflator', /deflator plugin instance/);
    await err(() => mk({ dtype: 'f16' }), 'dtype', /'f32' or 'f64'/);
    await err(() => mk({ ncomponents: 3 }), 'ncomponents', /not an option/);
    await err(() => mk({ seed: 0.5 }), 'seed', /integer/);
    await err(() => mk({ nComponents: 5 }).fit(x), 'nComponents', /at most min\(n, d\) = min\(10, 4\)/);
    await err(() => mk({}).fit(rt.randn([10], { seed: 0 })), 'x', /matrix \(n, d\)/);
    await err(() => mk({}).fit(rt.randn([1, 4], { seed: 0 })), 'x', /at least 2 rows/);
    await err(() => mk({}).fit([[1, 2]] as never), 'x', /must be a Tensor/);
    await err(() => mk({}).fitCovariance(x), 'cov', /square matrix/);
    await err(() => mk({}).fitCovariance(rt.eye(4), { mean: rt.zeros([3]) }), 'mean', /shape \[4\]/);
    await err(() => mk({}).fitCovariance(rt.eye(4), { nSamples: 1 }), 'nSamples', /integer >= 2/);
    await err(() => mk({ nComponents: 3 }).fitCovariance(rt.eye(4), { nSamples: 2 }), 'nComponents', /min\(nSamples, d\)/);
    await err(() => mk({}).components, 'fit', /not fitted yet/);
    const p = await mk({}).fit(x);
    p.free();
    await err(() => p.transform(x), 'fit', /not fitted yet/);
  });
});
