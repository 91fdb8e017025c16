/**
 * AdaPaD's rank discovery and advance learning (plugins/adapters/adapad.ts): pure tensor
 * functions traced into the Trainer's step, so no decision needs a round trip.
 *
 * - A component is born (`born` 1, `birth` = the step) when its module grows; for `advance`
 *   steps it is a ghost (a gradient, no forward contribution: it fits the current residual),
 *   then its gate turns 1.
 * - A module's importance is an exponential moving average (β) of Σ |θ·∇θ| over its active
 *   components' A and B entries, normalized per component as AdaLoRA's triplet score is
 *   (the mean over a factor's entries, so wide and narrow modules compare).
 * - Every `growEvery` steps, while the shared budget (components born, all modules) is not
 *   spent, the module with the highest importance per active component grows by one; a
 *   module already holding `maxRank` components is passed over.
 */
import type { Runtime, Tensor } from '../../../bridge/index.js';

/**
 * Each component's sensitivity, (K,): mean_i |A[k, i]·∇A[k, i]| + mean_o |B[o, k]·∇B[o, k]|.
 * A (K, n), B (m, K) as matrices (a conv's flattened), gA/gB their gradients.
 */
export function componentSensitivity(A: Tensor, gA: Tensor, B: Tensor, gB: Tensor): Tensor {
  return A.mul(gA).abs().mean(1).add(B.mul(gB).abs().mean(0));
}

/** The module's importance this step, (): the sensitivities of the components in the forward (`gate` (K,) 0/1) summed. */
export function moduleImportance(sensitivity: Tensor, gate: Tensor): Tensor {
  return sensitivity.mul(gate).sum();
}

/** β·prev + (1 − β)·x, the exponential moving average (written as lerp: prev + (1 − β)(x − prev)). */
export function ema(prev: Tensor, x: Tensor, beta: number): Tensor {
  return x.sub(prev).mul(1 - beta).add(prev);
}

/**
 * Which module grows after this step, (M,) f32 one-hot, or all zeros: not a growth step
 * (`step` () f32, from 1, not a multiple of `growEvery`), the budget spent (components born
 * in all modules ≥ `budget`), or every module full (`maxRank` born). `importance` (M,): each
 * module's EMA; `active` (M,): its components in the forward; `born` (M,): born so far.
 * Ties go to the first module (argmax).
 */
export function growthChoice(rt: Runtime, importance: Tensor, active: Tensor, born: Tensor, step: Tensor, opts: { growEvery: number; budget: number; maxRank: number }): Tensor {
  const room = born.lt(opts.maxRank);
  const perComponent = importance.div(active.clamp(1, null));
  // a full module ranks below every other: −1 is below any |θ·∇θ| score
  const ranked = perComponent.where(room, -1);
  const pick = (rt.call('zeros_like', [importance]) as Tensor).scatter(0, ranked.argmax(0, true), 1);
  const due = step.remainder(opts.growEvery).eq(0).logicalAnd(born.sum().lt(opts.budget)).logicalAnd(room.any());
  return pick.mul(due.to('f32'));
}

/**
 * Give a module that grows its next unborn component: `born` (K,) 0/1 and `birth` (K,) the
 * step each was born at; `grows` () 0/1 (the module's entry of {@link growthChoice}).
 * Components are born in index order, so index order is join order.
 */
export function growModule(rt: Runtime, born: Tensor, birth: Tensor, grows: Tensor, step: Tensor, K: number): { born: Tensor; birth: Tensor } {
  const next = rt.arange(0, K, 1, 'f32').eq(born.sum()).to('f32').mul(grows); // (K,) 1 at the first unborn, if it grows
  return { born: born.add(next), birth: step.sub(birth).mul(next).add(birth) };
}

/**
 * Each component's phase after `step`: `gate` 1 once born for `advance` steps (in the
 * forward from the next step), `ghost` 1 while younger (advance learning). (K,) f32 each.
 */
export function componentPhases(born: Tensor, birth: Tensor, step: Tensor, advance: number): { gate: Tensor; ghost: Tensor } {
  const grown = step.sub(birth).ge(advance).to('f32').mul(born);
  return { gate: grown, ghost: born.sub(grown) };
}
