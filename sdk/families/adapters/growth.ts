/**
 * AdaPaD's rank discovery and advance learning (plugins/adapters/adapad.ts): tensor
 * functions traced into the Trainer's step, so no decision needs a round trip. Modules are
 * batched: a module's components are a row of (M, K) tensors.
 *
 * - A component is born (`born` 1, `age` 0) when its module grows; `age` counts the steps
 *   done since. While age < `advance` it is a ghost (a gradient, no forward contribution: it
 *   fits the current residual), then its gate turns 1. Unborn: age {@link UNBORN}.
 * - A module's importance is an exponential moving average (β) of Σ |θ·∇θ| over its active
 *   components' A and B entries, normalized per component as AdaLoRA's triplet score is
 *   (the mean over a factor's entries, so wide and narrow modules compare).
 * - Every `growEvery` steps, while the shared budget (components born, all modules) is not
 *   spent, the module with the highest importance per active component grows by one; a
 *   module already at its capacity is passed over. The capacity is min(maxRank, out, in·∏kernel):
 *   a module's update has at most that rank, so a component past it adds parameters, no rank.
 */
import type { Tensor } from '../../../bridge/index.js';

/** The age of an unborn component: far below 0, and f32 cannot add 1 to it (spacing 64), so counting steps never brings it to life. */
export const UNBORN = -1e9;

/** One adapter's growth state, (M, K) f32 unless said; written in place. */
export interface GrowthState {
  /** Steps done since each component was born; {@link UNBORN} before. */
  age: Tensor;
  /** 0/1: born (in the sum or a ghost). */
  born: Tensor;
  /** 0/1: in the forward sum (the modules' AdapterSet gates are views of its rows). */
  gate: Tensor;
  /** 0/1: in advance learning (the AdapterSet ghosts are views of its rows). */
  ghost: Tensor;
  /** (M,): each module's importance EMA. */
  importance: Tensor;
}

/**
 * Each component's sensitivity, (K,): mean_i |A[k, i]·∇A[k, i]| + mean_o |B[o, k]·∇B[o, k]|.
 * A (K, n), B (m, K) as matrices (a conv's flattened), gA/gB their gradients.
 */
export function componentSensitivity(A: Tensor, gA: Tensor, B: Tensor, gB: Tensor): Tensor {
  return A.mul(gA).abs().mean(1).add(B.mul(gB).abs().mean(0));
}

/**
 * The importance EMA after this step: β·prev + (1 − β)·Σ_k gate·sensitivity, in place.
 * `sensitivity` (M, K); `finite` () bool (StepTrace.finite): false, a step the Trainer
 * skipped, keeps prev exactly (a select: its gradients, hence the sensitivity, may be NaN).
 */
export function updateImportance(st: GrowthState, sensitivity: Tensor, beta: number, finite: Tensor): void {
  const next = st.importance.mul(beta).add(sensitivity.mul(st.gate).sum(1).mul(1 - beta));
  st.importance.copy_(st.importance.rt.where(finite, next, st.importance));
}

/**
 * Which module grows after this step, (M, 1) bool (at most one true): none when `step` ()
 * (from 1) is not a multiple of `growEvery`, when the budget is spent (components born in
 * all modules ≥ `budget`), or when every module is full (`capacity` born). Otherwise the
 * module of highest importance per active component among those with room (ties: the first).
 * `bornCount` and `capacity` (M, 1) f32, `active` (M,), `modules`: arange(M) (M,).
 */
export function growthChoice(importance: Tensor, active: Tensor, bornCount: Tensor, capacity: Tensor, step: Tensor, modules: Tensor, opts: { growEvery: number; budget: number }): Tensor {
  const room = bornCount.lt(capacity); // (M, 1)
  // a full module ranks below every other: −1 is below any |θ·∇θ| score
  const ranked = importance.div(active.clamp(1, null)).where(room.reshape([-1]), -1);
  const pick = modules.eq(ranked.argmax(0)).reshape([-1, 1]).logicalAnd(room);
  const due = step.remainder(opts.growEvery).eq(0).logicalAnd(bornCount.sum().lt(opts.budget));
  return pick.logicalAnd(due);
}

/**
 * One step of the state: ages advance, the module `grows` ((M, 1) bool) gets its next unborn
 * component (components are born in index order, so index order is join order), and the
 * phases follow the ages: in the sum once `age ≥ advance`, a ghost before. `bornCount`
 * (M, 1) before this step's birth; `slots`: arange(K) as (1, K). In place.
 */
export function advanceGrowth(st: GrowthState, grows: Tensor, bornCount: Tensor, slots: Tensor, advance: number): void {
  const newcomer = slots.eq(bornCount).logicalAnd(grows); // (M, K): the first unborn of a growing module
  st.age.add_(1);
  st.age.rt.call('masked_fill_', [st.age, newcomer, 0]);
  st.born.rt.call('masked_fill_', [st.born, newcomer, 1]);
  st.gate.copy_(st.age.ge(advance));
  st.ghost.copy_(st.born.sub(st.gate));
}

/** M rows of K, flat: `first` in column 0, `rest` elsewhere (the first component's state apart from the others'). */
export const rowsOf = (M: number, K: number, first: number, rest: number): number[] => Array.from({ length: M * K }, (_, i) => (i % K === 0 ? first : rest));
