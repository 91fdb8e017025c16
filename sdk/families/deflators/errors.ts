/**
 * The per-component error of a deflation method against reference eigenvectors, the
 * measure of Liao et al. (https://arxiv.org/abs/2502.17615, https://arxiv.org/abs/2310.04283):
 *
 *     e_j = √(2 − 2|⟨u_j, v_j⟩|)
 *
 * for unit columns u_j (the reference, e.g. `exact`'s) and v_j (an estimate). It is the
 * distance from v_j to the nearer of ±u_j, so it ignores sign; 0 is exact, √2 orthogonal.
 * Reported over the k components as the max and the RMS.
 *
 * ```ts
 * const tr = errorTracker(reference);                                  // (d, k)
 * await hotelling().fit(problem, { rt, seed: 0, onRound: tr.onRound });
 * tr.history.at(-1);                                                   // { round, matvecs, errors, max, rms }
 * ```
 */
import type { Tensor } from '../../../bridge/index.js';
import { normalizeColumns } from './base.js';
import type { DeflationContext } from './types.js';

/**
 * Per-component errors (k,) f64 of `estimate` (d, k) against `reference` (d, k). Both are
 * renormalized in float64 first: a float32 column is unit only to ~1e-7, and 2 − 2⟨u, v⟩
 * would turn that into a false error of ~5e-4 (the square root of the norm error).
 * |⟨u, v⟩| is clamped to 1, so rounding never gives NaN.
 */
export function componentErrors(reference: Tensor, estimate: Tensor): Tensor {
  const u = normalizeColumns(reference.to('f64'));
  const v = normalizeColumns(estimate.to('f64'));
  const dots = u.mul(v).sum(0).abs().clamp(null, 1); // (k,)
  return dots.mul(-2).add(2).clamp(0).sqrt();
}

/** The errors read back: each component's, their max and their root mean square. */
export interface ErrorSummary {
  errors: number[];
  max: number;
  rms: number;
}

/** {@link componentErrors} read back, with max and RMS over the components (one round trip). */
export async function errorSummary(reference: Tensor, estimate: Tensor): Promise<ErrorSummary> {
  const e = componentErrors(reference, estimate);
  const errors = Array.from((await e.data()).data as Float64Array, Number);
  e.free();
  return summarize(errors);
}

/** Max and RMS of a list of per-component errors. */
export function summarize(errors: number[]): ErrorSummary {
  const max = errors.reduce((m, x) => Math.max(m, x), 0);
  const rms = errors.length ? Math.sqrt(errors.reduce((s, x) => s + x * x, 0) / errors.length) : 0;
  return { errors, max, rms };
}

/** One round as an {@link errorTracker} saw it. */
export interface TrackedRound extends ErrorSummary {
  round: number;
  /** Matrix–vector products the method had used by the end of the round. */
  matvecs: number;
}

/**
 * An `onRound` callback that scores every round's estimates against `reference` (d, k) and
 * keeps the history. Each call reads k numbers back: one round trip per round.
 */
export function errorTracker(reference: Tensor): { onRound: NonNullable<DeflationContext['onRound']>; history: TrackedRound[] } {
  const history: TrackedRound[] = [];
  const onRound = async (round: number, vectors: Tensor, matvecs: number): Promise<void> => {
    history.push({ round, matvecs, ...(await errorSummary(reference, vectors)) });
  };
  return { onRound, history };
}
