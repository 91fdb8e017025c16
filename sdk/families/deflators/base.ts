/** Shared base of the Deflator family. */
import { type DType, LiaisonError, type Runtime, type Tensor } from '../../../bridge/index.js';
import { PluginBase } from '../../plugin.js';
import type { DeflationContext, DeflationProblem, DeflationResult, Deflator } from './types.js';

export abstract class DeflatorBase<C> extends PluginBase<C> implements Deflator<C> {
  abstract fit(problem: DeflationProblem, ctx: DeflationContext): Promise<DeflationResult>;
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
