/**
 * AdaLoRA's rank allocation as pure functions (plugins/adapters/adalora.ts is the stateful
 * shell): the cubic budget schedule, the smoothed importance of every entry with its
 * uncertainty, the score of each (singular value, left, right vector) triplet, the mask
 * that keeps the best `budget` triplets over all modules, and the orthogonality
 * regularizer. They follow Hugging Face PEFT's `RankAllocator` (peft/tuners/adalora/layer.py)
 * and Zhang et al. 2023, https://arxiv.org/abs/2303.10512, §3.
 *
 * The schedule is plain numbers (tabled once per run); the rest are tensor code meant to be
 * traced into the Trainer's step program (they make no round trip).
 */
import { LiaisonError, type Runtime, type Tensor } from '../../../bridge/index.js';

/** PEFT's budget schedule, in triplets over all modules. */
export interface BudgetSchedule {
  /** Triplets at the start: initR · modules. */
  initBudget: number;
  /** Triplets at the end: targetR · modules. */
  targetBudget: number;
  /** Steps at the start with the full budget (warm-up, nothing masked). */
  tinit: number;
  /** Steps at the end with the final mask fixed (fine-tuning of what was kept). */
  tfinal: number;
  /** The run's steps: the budget reaches its target at totalSteps − tfinal. */
  totalSteps: number;
  /** Steps between two reallocations while the budget falls. */
  deltaT: number;
}

/** The schedule at one step. */
export interface BudgetPoint {
  /** Triplets kept. */
  budget: number;
  /** The mask is recomputed from the importance at this step. */
  reallocate: boolean;
  /** The importance averages take this step's |θ·∇θ| in. */
  update: boolean;
}

/** E_ARG naming the field when the schedule cannot run (PEFT refuses the same). */
export function checkSchedule(s: BudgetSchedule, who: string): void {
  // the budgets are initR / targetR times the modules: the config fields named are those
  const field = (k: keyof BudgetSchedule) => (k === 'initBudget' ? 'initR' : k === 'targetBudget' ? 'targetR' : k);
  const int = (k: keyof BudgetSchedule, min: number) => {
    if (!Number.isInteger(s[k]) || s[k] < min) throw new LiaisonError('E_ARG', `${who}: config field '${field(k)}' gives ${k} ${s[k]}; it must be an integer >= ${min}`, { param: field(k) });
  };
  int('initBudget', 1); int('targetBudget', 1); int('tinit', 0); int('tfinal', 0); int('totalSteps', 1); int('deltaT', 1);
  if (s.targetBudget > s.initBudget) throw new LiaisonError('E_ARG', `${who}: config field 'targetR' must be at most initR: the budget only falls (target ${s.targetBudget} triplets, init ${s.initBudget})`, { param: 'targetR' });
  if (s.tinit + s.tfinal >= s.totalSteps) {
    throw new LiaisonError('E_ARG', `${who}: config field 'totalSteps' (${s.totalSteps}) must exceed tinit + tfinal (${s.tinit} + ${s.tfinal}): the budget falls between them`, { param: 'totalSteps' });
  }
}

/**
 * The budget at `step` (from 1), as PEFT's `AdaLoraModel.update_and_allocate` runs it: the
 * full budget through tinit; then b(t) = ⌊(b0 − bT)·(1 − (t − tinit)/(T − tfinal − tinit))³ + bT⌋,
 * reallocating every deltaT steps, and once more, forced, at t = T − tfinal, where it
 * reaches the target; past that the mask stays as it is. The importance is averaged while
 * t < T − tfinal.
 */
export function budgetAt(step: number, s: BudgetSchedule): BudgetPoint {
  const end = s.totalSteps - s.tfinal;
  const update = step < end;
  if (step <= s.tinit) return { budget: s.initBudget, reallocate: false, update };
  if (step >= end) return { budget: s.targetBudget, reallocate: step === end, update };
  const fall = 1 - (step - s.tinit) / (end - s.tinit);
  return { budget: Math.floor((s.initBudget - s.targetBudget) * fall ** 3 + s.targetBudget), reallocate: step % s.deltaT === 0, update };
}

/**
 * The schedule as tables indexed by step 0 … totalSteps + 1 (a step past the run reads the
 * last entry): budgets (i64), and the reallocate / update flags (0/1 f32), for a traced
 * step to index with its step number.
 */
export function scheduleTables(s: BudgetSchedule): { budget: number[]; reallocate: number[]; update: number[] } {
  const steps = Array.from({ length: s.totalSteps + 2 }, (_, t) => (t === 0 ? { budget: s.initBudget, reallocate: false, update: false } : budgetAt(t, s)));
  // past the run nothing changes: no reallocation, no averaging
  steps[s.totalSteps + 1] = { budget: s.targetBudget, reallocate: false, update: false };
  return { budget: steps.map((p) => p.budget), reallocate: steps.map((p) => +p.reallocate), update: steps.map((p) => +p.update) };
}

/**
 * Traced, in place: one parameter's smoothed sensitivity Ī and uncertainty Ū (shaped as
 * θ), PEFT's `update_ipt`: I = |θ·∇θ|, Ī ← β1·Ī + (1 − β1)·I, Ū ← β2·Ū + (1 − β2)·|I − Ī|
 * (with the new Ī). `on` () bool: a step with false leaves both exactly as they are, even
 * when its gradient is NaN / Inf (a step the Trainer skipped: a select, not a lerp weight of
 * 0, which would still spread the NaN).
 */
export function smoothImportance(theta: Tensor, grad: Tensor, ipt: Tensor, unc: Tensor, beta1: number, beta2: number, on: Tensor): void {
  const { rt } = ipt;
  const I = theta.mul(grad).abs();
  const nextIpt = ipt.mul(beta1).add(I.mul(1 - beta1));
  const nextUnc = unc.mul(beta2).add(I.sub(nextIpt).abs().mul(1 - beta2));
  ipt.copy_(rt.where(on, nextIpt, ipt));
  unc.copy_(rt.where(on, nextUnc, unc));
}

/** Traced: one module's triplet scores (r,) from the element scores Ī·Ū of A (r, in[, k…]), E (r,) and B (out, r[, 1…]): s_k = S(E_k) + mean S(A_k) + mean S(B_·k), PEFT's `_combine_ipt`. */
export function tripletScores(sA: Tensor, sE: Tensor, sB: Tensor, r: number): Tensor {
  return sE.add(sA.reshape([r, -1]).mean(1)).add(sB.transpose(0, 1).reshape([r, -1]).mean(1));
}

/**
 * Traced: 0/1 f32 over the N triplets of every module (`scores` (N,)), 1 at the `budget`
 * (() or (1,) i64) highest scores — exactly `budget` of them, ties broken by position
 * (PEFT's threshold `kthvalue(scores, N − budget)` masks the same set when no two scores tie).
 */
export function maskToBudget(scores: Tensor, budget: Tensor): Tensor {
  // a triplet's rank: its position in the (stable) descending order
  const [, order] = scores.sort(0, true, true);
  return order.argsort(0).lt(budget).to('f32');
}

/**
 * Traced: the orthogonality regularizer's terms of one module, ‖A·Aᵀ − I‖_F + ‖Bᵀ·B − I‖_F
 * (Frobenius norms, not squared), with A (r, in[, k…]) flattened to (r, in·k…) and B
 * (out, r[, 1…]) to (out, r). The loss is γ times the mean over all 2M factors of M modules
 * (`orthogonalityLoss`): PEFT's `AdaLoraModel.forward` and the authors' code, the form
 * their γ values were tuned with. (The paper's eq. 4 writes squared norms, summed: a
 * gradient some 4M√r times stronger at the same γ.)
 */
export function orthogonality(rt: Runtime, A: Tensor, B: Tensor, r: number): Tensor {
  const a = A.reshape([r, -1]);
  const b = B.reshape([B.size(0) as number, r]);
  const eye = rt.eye(r);
  // norm(): torch's vector norm, whose gradient at 0 is 0 (a sqrt of a sum would give NaN there)
  return a.matmul(a.transpose(0, 1)).sub(eye).norm().add(b.transpose(0, 1).matmul(b).sub(eye).norm());
}

/** Traced: γ · the mean of ‖PPᵀ − I‖_F over the 2M factors of the modules' `factors` (PEFT's form, {@link orthogonality}). */
export function orthogonalityLoss(rt: Runtime, factors: readonly { A: Tensor; B: Tensor }[], r: number, weight: number): Tensor {
  return factors.map((f) => orthogonality(rt, f.A, f.B, r)).reduce((x, y) => x.add(y)).mul(weight / (2 * factors.length));
}
