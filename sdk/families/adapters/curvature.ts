/**
 * AdaPaD's curvature estimate (`curvature: 'auto'`, plugins/adapters/adapad.ts): the loss's
 * curvature along each rank-1 component, from the gradients the training already computes,
 * so that the deflation targets (deflation.ts) weight each component by its own curvature
 * instead of one c for every module. Tensor functions traced into the Trainer's step: no
 * round trip. Modules are batched: a module's components are a row of (M, K) tensors.
 *
 * Why this estimate. The deflation's correction for component k is H·D_k, H the loss's
 * Hessian in ΔW; we model H along component j's unit direction u_j = P_j / ‖P_j‖_F by one
 * number c_j = u_jᵀ H u_j. Through a network under cross-entropy that number is unknown and
 * varies a hundredfold across modules (docs/adapters.md §2), and a c above about twice the
 * true one makes the deflation diverge. The empirical Fisher approximates H (the Gauss-Newton
 * matrix, for a likelihood loss near its fit): along u_j it is the per-sample variance of
 * u_jᵀ∇ℓ_i, and a step's loss is the mean over N samples, so it is N · Var_t(y_t) with
 * y_t = u_jᵀ G_t the batch gradient along u_j. y_t is free: ⟨a_j, ∇a_j⟩ = ⟨P_j, G⟩ (the
 * sensitivity's ingredients). The variance is taken from successive differences,
 * E[(y_t − y_{t−1})²] / 2, which leaves out the mean gradient's slow drift (a plain variance
 * over a window would count it, times N). On the digits CNN this came within a factor of 2 of
 * the curvature measured by finite differences along every component (docs/adapters.md §2).
 * An N too small (a language model's tokens are not independent: N is the batch, not its
 * tokens) underestimates c, which is the safe side: below the true c the deflation is
 * partial but stable; `max` clips the rest.
 */
import type { Runtime, Tensor } from '../../../bridge/index.js';

/** The running estimate, (M, K) f32 each; written in place. */
export interface CurvatureState {
  /** y at the component's last measured step. */
  prev: Tensor;
  /** 0/1: prev holds a measurement. */
  seen: Tensor;
  /** EMA of (y_t − y_{t−1})² / 2 (not bias-corrected). */
  ema: Tensor;
  /** Differences taken into the EMA (for its bias correction). */
  count: Tensor;
}

/**
 * The EMA's β: about 2/(1 − β) − 1 = 19 differences' worth, so the variance of a Gaussian y is
 * known to about ±30%, and a component's estimate follows it within a few rounds.
 */
export const CURVATURE_BETA = 0.9;

/** A fresh state for M modules of K components: nothing measured. */
export function curvatureState(rt: Runtime, M: number, K: number): CurvatureState {
  return { prev: rt.zeros([M, K]), seen: rt.zeros([M, K]), ema: rt.zeros([M, K]), count: rt.zeros([M, K]) };
}

/** Components whose ‖P_k‖_F is below this have no direction yet (B starts at zero): not measured. */
export const MIN_NORM = 1e-8;

/**
 * y_k = u_kᵀ G, the batch gradient along component k's unit direction, and whether it is
 * defined (‖P_k‖ > {@link MIN_NORM}): both (K,). A (K, n), B (m, K) as matrices, gA the
 * gradient of A; `scale` the module's. u_kᵀ G = ⟨a_k, ∇a_k⟩ / (scale ‖a_k‖ ‖b_k‖), since
 * ∇a_k = scale·Gᵀ b_k for a component in the sum or a ghost (an unborn one has none).
 */
export function componentSlope(A: Tensor, gA: Tensor, B: Tensor, scale: number): { y: Tensor; valid: Tensor } {
  const norm = A.square().sum(1).sqrt().mul(B.square().sum(0).sqrt()).mul(scale);
  return { y: A.mul(gA).sum(1).div(norm.clamp(MIN_NORM, null)), valid: norm.gt(MIN_NORM) };
}

/**
 * One step of the estimate: where `valid` ((M, K) bool) and the step is `finite` (() bool),
 * a component measured before adds (y − prev)²/2 to its EMA (β = `beta`), and y becomes its
 * prev. Elsewhere nothing changes (a skipped step's gradients may be NaN: selected out).
 */
export function updateCurvature(st: CurvatureState, y: Tensor, valid: Tensor, finite: Tensor, beta: number): void {
  const measured = valid.logicalAnd(finite);
  const diff = measured.logicalAnd(st.seen.gt(0));
  st.ema.copy_(st.ema.mul(beta).add(y.sub(st.prev).square().mul((1 - beta) / 2)).where(diff, st.ema));
  st.count.add_(diff.to('f32'));
  st.prev.copy_(y.where(measured, st.prev));
  st.seen.copy_(st.seen.maximum(measured.to('f32')));
}

/**
 * Each component's curvature, (M, K): `samples` · EMA / (1 − β^count) (the bias-corrected
 * mean of (Δy)²/2, i.e. N · Var(y)), in [0, `max`]; 0 for a component with no difference yet.
 */
export function curvatureOf(st: CurvatureState, samples: number, beta: number, max: number): Tensor {
  const debias = st.count.mul(Math.log(beta)).exp().neg().add(1); // 1 − β^count, 0 at count 0
  return st.ema.mul(samples).div(debias.clamp(1e-12, null)).where(st.count.gt(0), 0).clamp(0, max);
}
