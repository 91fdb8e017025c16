/** Shared base of the Deflator family. */
import { type DType, LiaisonError, type Runtime, type Tensor } from '../../../bridge/index.js';
import { PluginBase } from '../../plugin.js';
import type { DeflationContext, DeflationProblem, DeflationResult, Deflator } from './types.js';

export abstract class DeflatorBase<C> extends PluginBase<C> implements Deflator<C> {
  abstract fit(problem: DeflationProblem, ctx: DeflationContext): Promise<DeflationResult>;
}

/** The problem as an iterative deflator's core sees it: `cov` already in the working dtype. */
export interface IterationProblem extends DeflationProblem {
  /** The working dtype: f64 with `float64: true`, else the input's. */
  dtype: DType;
}

/** What the core gets besides the problem. */
export interface IterationContext {
  rt: Runtime;
  seed: number;
  /** Whether the caller passed `onRound`: build a round's (d, k) estimates only then. */
  reporting: boolean;
  /**
   * Round `round`'s estimates (d, k) in the working dtype, shown to `onRound` in the
   * input dtype (the cast freed after the call; `vectors` stays the core's). A no-op
   * without `onRound`.
   */
  report(round: number, vectors: Tensor, matvecs: number): Promise<void>;
}

/** An iterative core's result, in the working dtype; `fit()` casts it back. */
export interface Iterated {
  vectors: Tensor;
  values: Tensor;
  rounds: number;
  matvecs: number;
}

/**
 * The `fit()` of an iterative deflator (hotelling, parallel-deflation, eigengame-mu), so a
 * plugin writes only its core, {@link iterate}: `k` checked, the plugin's own {@link check},
 * the matrix cast to float64 when the config asks (results cast back to the input dtype),
 * everything made inside freed at the end (one `rt.scope`), and `onRound` fed through
 * `ctx.report` in the input dtype.
 */
export abstract class IterativeDeflatorBase<C extends { float64: boolean }> extends DeflatorBase<C> {
  /** The plugin's own argument checks, before anything is queued (E_ARG naming the field). */
  protected check(_problem: DeflationProblem): void | Promise<void> {}

  /** The method itself, on `problem.cov` in the working dtype. */
  protected abstract iterate(problem: IterationProblem, ctx: IterationContext): Promise<Iterated>;

  async fit(problem: DeflationProblem, ctx: DeflationContext): Promise<DeflationResult> {
    checkK(this.id, problem.d, problem.k);
    await this.check(problem);
    const { rt, seed, onRound } = ctx;
    const { dtype } = await problem.cov.info();
    const wdt: DType = this.config.float64 ? 'f64' : dtype;
    return rt.scope(async () => {
      const cov = wdt === dtype ? problem.cov : problem.cov.to(wdt);
      const report = async (round: number, vectors: Tensor, matvecs: number): Promise<void> => {
        if (!onRound) return;
        const shown = wdt === dtype ? vectors : vectors.to(dtype);
        await onRound(round, shown, matvecs);
        if (shown !== vectors) shown.free(); // valid during the call only
      };
      const out = await this.iterate({ ...problem, cov, dtype: wdt }, { rt, seed, reporting: !!onRound, report });
      return { vectors: out.vectors.to(dtype), values: out.values.to(dtype), rounds: out.rounds, matvecs: out.matvecs };
    });
  }
}

/** Rayleigh quotients vᵀΣv for the columns of `vectors` (d, k) -> (k,). */
export function rayleigh(cov: Tensor, vectors: Tensor): Tensor {
  return cov.matmul(vectors).mul(vectors).sum(0);
}

/** Columns scaled to unit norm: (d, k) -> (d, k). */
export function normalizeColumns(v: Tensor): Tensor {
  return v.div(v.norm(2, 0, true).clamp(1e-30));
}

/**
 * Deterministic signs, as scikit-learn's `svd_flip` makes them: each column (d, k) flipped
 * so that its entry of largest magnitude is positive (a zero column stays zero).
 */
export function canonicalSigns(v: Tensor): Tensor {
  const at = v.abs().argmax(0, true); // (1, k) row of each column's largest |entry|
  const sign = v.gather(0, at).sign(); // (1, k) ±1, 0 for a zero column
  return v.mul(sign.where(sign.ne(0), 1));
}

/**
 * A fit's result in the family's order: columns of `vectors` (d, k) sorted by `values` (k,)
 * descending (an inexact method may find components out of order), signs made
 * deterministic with {@link canonicalSigns}. Queued ops only.
 */
export function sortedResult(vectors: Tensor, values: Tensor): { vectors: Tensor; values: Tensor } {
  const [sorted, order] = values.sort(0, true); // (k,), (k,) i64
  return { vectors: canonicalSigns(vectors.indexSelect(1, order)), values: sorted };
}

/**
 * A covariance whose eigendecomposition is known: Σ = Q·diag(λ)·Qᵀ (d, d), d = spectrum's
 * length, symmetric to the last bit, with Q (d, d) from the QR of a seeded Gaussian matrix,
 * so that column j of Q is the eigenvector of `spectrum[j]` — the synthetic setting of the
 * deflation papers, and what a deflator is tested against.
 */
export function knownCovariance(rt: Runtime, spectrum: readonly number[], opts: { seed?: number; dtype?: DType } = {}): { cov: Tensor; q: Tensor } {
  const d = spectrum.length;
  const dtype = opts.dtype ?? 'f32';
  const [q] = rt.randn([d, d], { seed: opts.seed ?? 0, dtype }).qr();
  const a = q.mul(rt.tensor([...spectrum], [1, d], dtype)).matmul(q.T);
  return { cov: a.add(a.T).mul(0.5), q };
}

/** Random unit starting vectors (d, k), reproducible for a seed. */
export function randomStarts(rt: Runtime, d: number, k: number, seed: number, dtype: DType): Tensor {
  return normalizeColumns(rt.randn([d, k], { seed, dtype }));
}

/** `k` an integer in 1..d, else E_ARG naming k. */
export function checkK(id: string, d: number, k: number): void {
  if (!Number.isInteger(k) || k < 1 || k > d) throw new LiaisonError('E_ARG', `${id}: k must be an integer in 1..d (${d}), got ${k}`, { param: 'k' });
}
