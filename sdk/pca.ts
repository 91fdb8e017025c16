/**
 * Principal component analysis with the shape scikit-learn users expect, on top of any
 * {@link Deflator}: the deflator finds the top eigenvectors of the covariance, this class
 * turns them into `components` (k, d) sorted by variance with deterministic signs,
 * `explainedVariance`, `explainedVarianceRatio`, `mean`, `noiseVariance`, `transform`.
 *
 * ```ts
 * import { exact } from 'liaison/plugins';
 * const pca = new PCA(rt, { nComponents: 10, deflator: exact(), seed: 0 });
 * await pca.fit(x);                                 // x (n, d)
 * const z = pca.transform(x);                       // (n, 10)
 * console.log(await pca.explainedVarianceRatio.toArray());
 * await pca.fitCovariance(cov, { mean, nSamples }); // or from a covariance already at hand
 * ```
 *
 * Conventions, as scikit-learn's `PCA` (1.5 and later):
 * - the covariance has the n − 1 denominator, so `explainedVariance` is an eigenvalue of it
 *   (negative round-off clipped to 0);
 * - `explainedVarianceRatio` divides by the total variance, the covariance's trace (what
 *   scikit-learn's sum of all eigenvalues is), so no full eigendecomposition is needed;
 * - signs: `svd_flip(u_based_decision=False)`, the largest-|entry| of each component is
 *   positive;
 * - `noiseVariance` is the mean of the eigenvalues left out, (trace − Σ kept) / (min(n, d) − k).
 *
 * The SDK never imports plugins, so the deflator is passed in (`exact()` for one `eigh`,
 * an iterative one such as Hotelling's or Parallel Deflation for large d). The centered
 * rows go to the deflator too (`problem.data`), so a stochastic method can draw
 * minibatches from them.
 */
import { type DType, LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { canonicalSigns, normalizeColumns, rayleigh } from './families/deflators/base.js';
import type { DeflationContext, DeflationProblem, Deflator } from './families/deflators/types.js';

export interface PCAOptions {
  /** k: components kept, an integer in 1..min(n, d). */
  nComponents: number;
  /** The method underneath: an instance of a `deflator` plugin, e.g. `exact()`. */
  deflator: Deflator;
  /** Seed passed to the deflator (random starts). Default 0. */
  seed?: number;
  /** The dtype of the covariance and components: default the input's (f64 stays f64, anything else f32). */
  dtype?: 'f32' | 'f64';
  /** Scale `transform`'s output to unit variance per component (scikit-learn's `whiten`). Default false. */
  whiten?: boolean;
  /** Passed to the deflator: called per round with its estimates (d, k), e.g. an error tracker's `onRound`. */
  onRound?: DeflationContext['onRound'];
}

/** What a fit produced, kept alive until `free()` or the next fit. */
interface Fitted {
  components: Tensor; // (k, d)
  explainedVariance: Tensor; // (k,)
  explainedVarianceRatio: Tensor; // (k,)
  mean: Tensor; // (d,)
  scale: Tensor | null; // (k,) √variance, for whiten
  singularValues: Tensor | null; // (k,) √(variance·(n − 1)); null without n
  dtype: 'f32' | 'f64';
  nSamples: number | null;
  nFeatures: number;
  totalVariance: number;
  noiseVariance: number;
  rounds: number;
  matvecs: number;
}

const OPTION_KEYS = ['nComponents', 'deflator', 'seed', 'dtype', 'whiten', 'onRound'];

function bad(field: string, message: string): LiaisonError {
  return new LiaisonError('E_ARG', `PCA: '${field}' ${message}`, { param: field });
}

function shown(v: unknown): string {
  if (v === null) return 'null';
  if (typeof v === 'function') return `a function (${(v as { name?: string }).name || 'anonymous'})`;
  if (typeof v === 'object') return (v as { meta?: { family?: string; name?: string } }).meta?.name ? `a ${(v as { meta: { family: string } }).meta.family} plugin '${(v as { meta: { name: string } }).meta.name}'` : 'an object';
  return JSON.stringify(v);
}

/** Throws E_ARG unless `d` is a Deflator instance (a plugin of family 'deflator' with fit()). */
export function checkDeflator(d: unknown): Deflator {
  if (d === undefined) throw bad('deflator', 'is required: pass a deflator plugin instance, e.g. { deflator: exact() } from liaison/plugins');
  if (typeof d === 'function' && (d as { family?: string }).family === 'deflator') {
    throw bad('deflator', `must be an instance, not the factory: pass ${(d as { name: string }).name}() (with its config), not ${(d as { name: string }).name}`);
  }
  const ok = typeof d === 'object' && d !== null && typeof (d as Deflator).fit === 'function' && (d as Deflator).meta?.family === 'deflator';
  if (!ok) throw bad('deflator', `must be a deflator plugin instance (family 'deflator', with fit()), got ${shown(d)}`);
  return d as Deflator;
}

/** (d, d) covariance of the rows of `xc` (n, d), already centered: xcᵀxc / (n − 1). */
export function covarianceOf(xc: Tensor, n: number): Tensor {
  return xc.T.matmul(xc).div(n - 1);
}

async function shapeOf(t: unknown, field: string): Promise<{ shape: number[]; dtype: DType }> {
  if (typeof t !== 'object' || t === null || typeof (t as Tensor).info !== 'function') throw bad(field, `must be a Tensor, got ${shown(t)}`);
  const { shape, dtype } = await (t as Tensor).info();
  return { shape: [...shape], dtype };
}

export class PCA {
  readonly nComponents: number;
  readonly deflator: Deflator;
  readonly seed: number;
  readonly whiten: boolean;
  private readonly dtype?: 'f32' | 'f64';
  private readonly onRound?: DeflationContext['onRound'];
  private fitted: Fitted | null = null;

  constructor(readonly rt: Runtime, options: PCAOptions) {
    if (typeof options !== 'object' || options === null) throw new LiaisonError('E_ARG', 'PCA: options must be an object such as { nComponents: 10, deflator: exact() }');
    for (const key of Object.keys(options)) {
      if (!OPTION_KEYS.includes(key)) throw bad(key, `is not an option; the options are ${OPTION_KEYS.join(', ')}`);
    }
    const { nComponents, seed = 0, dtype, whiten = false, onRound } = options;
    if (!Number.isInteger(nComponents) || nComponents < 1) throw bad('nComponents', `must be an integer >= 1, got ${shown(nComponents)}`);
    this.deflator = checkDeflator(options.deflator);
    if (!Number.isInteger(seed)) throw bad('seed', `must be an integer, got ${shown(seed)}`);
    if (dtype !== undefined && dtype !== 'f32' && dtype !== 'f64') throw bad('dtype', `must be 'f32' or 'f64', got ${shown(dtype)}`);
    if (typeof whiten !== 'boolean') throw bad('whiten', `must be a boolean, got ${shown(whiten)}`);
    if (onRound !== undefined && typeof onRound !== 'function') throw bad('onRound', `must be a function, got ${shown(onRound)}`);
    this.nComponents = nComponents;
    this.seed = seed;
    this.dtype = dtype;
    this.whiten = whiten;
    this.onRound = onRound;
  }

  /** Fit on data rows `x` (n, d): mean, covariance (n − 1), then the deflator. */
  async fit(x: Tensor): Promise<this> {
    const { shape, dtype } = await shapeOf(x, 'x');
    if (shape.length !== 2) throw bad('x', `must be a matrix (n, d) of n rows, got shape [${shape.join(', ')}]`);
    const [n, d] = shape;
    if (n < 2) throw bad('x', `needs at least 2 rows for a covariance, got ${n}`);
    this.checkK(Math.min(n, d), `min(n, d) = min(${n}, ${d})`);
    const dt = this.dtype ?? (dtype === 'f64' ? 'f64' : 'f32');
    await this.rt.scope(async () => {
      const xs = x.to(dt);
      const mean = xs.mean(0); // (d,)
      const xc = xs.sub(mean); // (n, d)
      // the trace from the rows: Σ_j var_j, without the covariance's diagonal
      const total = xc.square().sum().div(n - 1);
      await this.solve(covarianceOf(xc, n), xc, mean, total, dt, n, d);
    });
    return this;
  }

  /**
   * Fit from a covariance (d, d), symmetric PSD, with the n − 1 denominator for
   * scikit-learn's figures. `mean` (d,) is what `transform` subtracts (default zeros);
   * `nSamples` bounds `nComponents` and sets `noiseVariance`'s min(n, d) (default d).
   */
  async fitCovariance(cov: Tensor, opts: { mean?: Tensor; nSamples?: number } = {}): Promise<this> {
    const { shape, dtype } = await shapeOf(cov, 'cov');
    if (shape.length !== 2 || shape[0] !== shape[1]) throw bad('cov', `must be a square matrix (d, d), got shape [${shape.join(', ')}]`);
    const d = shape[0];
    const { mean, nSamples } = opts;
    if (nSamples !== undefined && (!Number.isInteger(nSamples) || nSamples < 2)) throw bad('nSamples', `must be an integer >= 2, got ${shown(nSamples)}`);
    if (mean !== undefined) {
      const m = await shapeOf(mean, 'mean');
      if (m.shape.length !== 1 || m.shape[0] !== d) throw bad('mean', `must have shape [${d}] (one entry per feature), got [${m.shape.join(', ')}]`);
    }
    this.checkK(nSamples === undefined ? d : Math.min(nSamples, d), nSamples === undefined ? `d = ${d}` : `min(nSamples, d) = min(${nSamples}, ${d})`);
    const dt = this.dtype ?? (dtype === 'f64' ? 'f64' : 'f32');
    await this.rt.scope(async () => {
      const c = cov.to(dt);
      const mu = mean ? mean.to(dt) : this.rt.zeros([d], dt);
      const total = (this.rt.call('diag', [c]) as Tensor).sum();
      await this.solve(c, null, mu, total, dt, nSamples ?? null, d);
    });
    return this;
  }

  private checkK(limit: number, what: string): void {
    if (this.nComponents > limit) throw bad('nComponents', `must be at most ${what}, got ${this.nComponents}`);
  }

  /** The deflator on `cov`, then sorting, signs, variances; everything kept is `keep()`-ed. */
  private async solve(cov: Tensor, xc: Tensor | null, mean: Tensor, total: Tensor, dt: 'f32' | 'f64', n: number | null, d: number): Promise<void> {
    const k = this.nComponents;
    // the centered rows ride along for stochastic deflators (Hebbian minibatches)
    const problem: DeflationProblem = { cov, d, k, ...(xc ? { data: xc } : {}) };
    const ctx: DeflationContext = { rt: this.rt, seed: this.seed, ...(this.onRound ? { onRound: this.onRound } : {}) };
    const res = await this.deflator.fit(problem, ctx);
    const v = normalizeColumns(res.vectors.to(dt)); // (d, k)
    // variances from the vectors themselves: an iterative method's own eigenvalue estimates may lag
    const [ev, order] = rayleigh(cov, v).clamp(0).sort(0, true); // (k,) descending
    const comps = canonicalSigns(v.indexSelect(1, order)).T.contiguous(); // (k, d), largest-|entry| positive
    const rank = n === null ? d : Math.min(n, d);
    const tail = total.sub(ev.sum()).clamp(0).div(Math.max(1, rank - k));
    const [totalVariance, noise] = Array.from((await this.rt.stack([total, rank > k ? tail : tail.mul(0)]).to('f64').toArray()) as Float64Array);
    this.free();
    this.fitted = {
      components: comps.keep(),
      explainedVariance: ev.keep(),
      explainedVarianceRatio: ev.div(total).keep(),
      mean: mean.clone().keep(),
      scale: this.whiten ? ev.sqrt().clamp(1e-30).keep() : null,
      singularValues: n === null ? null : ev.mul(n - 1).sqrt().keep(),
      dtype: dt, nSamples: n, nFeatures: d, totalVariance, noiseVariance: noise, rounds: res.rounds, matvecs: res.matvecs,
    };
    res.vectors.free();
    res.values.free();
  }

  private get state(): Fitted {
    if (!this.fitted) throw new LiaisonError('E_ARG', 'PCA: not fitted yet; call fit(x) or fitCovariance(cov) first', { param: 'fit' });
    return this.fitted;
  }

  /** (k, d): principal axes, rows sorted by explained variance, the largest-|entry| of each positive. */
  get components(): Tensor { return this.state.components; }
  /** (k,): the variance along each component (eigenvalues of the n − 1 covariance), descending. */
  get explainedVariance(): Tensor { return this.state.explainedVariance; }
  /** (k,): explained variance over the total variance (the covariance's trace). */
  get explainedVarianceRatio(): Tensor { return this.state.explainedVarianceRatio; }
  /** (d,): the per-feature mean subtracted before projecting. */
  get mean(): Tensor { return this.state.mean; }
  /** The mean variance of the components left out (probabilistic PCA's σ²); 0 when k = min(n, d). */
  get noiseVariance(): number { return this.state.noiseVariance; }
  /** (k,) the singular values of the centered data, √(explainedVariance·(n − 1)) (scikit-learn's `singular_values_`); null after `fitCovariance` without `nSamples`. */
  get singularValues(): Tensor | null { return this.state.singularValues; }
  /** The total variance, the covariance's trace. */
  get totalVariance(): number { return this.state.totalVariance; }
  /** n: rows fitted on (null after `fitCovariance` without `nSamples`). */
  get nSamples(): number | null { return this.state.nSamples; }
  /** d: features. */
  get nFeatures(): number { return this.state.nFeatures; }
  /** The deflator's rounds and matrix–vector products for the last fit. */
  get cost(): { rounds: number; matvecs: number } { return { rounds: this.state.rounds, matvecs: this.state.matvecs }; }

  /** (m, k): rows of `x` (m, d) centered and projected (divided by √variance with `whiten`), in the fit's dtype. */
  transform(x: Tensor): Tensor {
    const s = this.state;
    const z = x.to(s.dtype).sub(s.mean).matmul(s.components.T);
    return s.scale ? z.div(s.scale) : z;
  }

  /** `fit(x)` then `transform(x)`. */
  async fitTransform(x: Tensor): Promise<Tensor> {
    await this.fit(x);
    return this.transform(x);
  }

  /** (m, d): scores `z` (m, k) mapped back to the data space (the projection of the original rows). */
  inverseTransform(z: Tensor): Tensor {
    const s = this.state;
    const zs = z.to(s.dtype);
    return (s.scale ? zs.mul(s.scale) : zs).matmul(s.components).add(s.mean);
  }

  /** Drop the fitted tensors from the runtime; the PCA can be fitted again. */
  free(): void {
    const f = this.fitted;
    if (!f) return;
    for (const t of [f.components, f.explainedVariance, f.explainedVarianceRatio, f.mean, f.scale, f.singularValues]) t?.free();
    this.fitted = null;
  }
}
