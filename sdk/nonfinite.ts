/**
 * Non-finite losses and data (docs/training.md, "When the loss is not finite").
 *
 * A training step is one program replayed by the runtime and its loss is read only when
 * logged, so a NaN cannot be caught by reading every loss here. The check is part of the
 * step program instead, before the optimizer's update:
 *
 * - `nonFinite: 'error'` (default): the runtime's `check_finite` op fails the step with
 *   E_NONFINITE naming it; a flag it keeps stops every step sent behind it, so the
 *   parameters and the optimizer's state stay as the last finite step left them, and the
 *   Trainer rejects naming the step and its epoch ({@link nonFiniteError}).
 * - `'skip'`: the update of each parameter is traced between a copy of what it writes
 *   (the parameter and its optimizer state) and a `where(finite, new, old)` back, so a
 *   step whose loss is not finite leaves both exactly as they were. The skipped steps are
 *   counted from the losses themselves when they are read ({@link lossSummary}).
 *
 * Either costs one isfinite() of the () loss per step; 'skip' also a copy of each
 * parameter and its state per step (the price of an update that can be undone without
 * control flow in the program).
 *
 * Data given as typed arrays is checked before it is uploaded ({@link refuseNonFinite}).
 */
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';

export type NonFiniteMode = 'error' | 'skip';

/**
 * Traced in the step after the loss, before backward: 'error' queues the check and
 * returns null; 'skip' returns the () bool flag the updates are masked with.
 */
export function guardLoss(rt: Runtime, mode: NonFiniteMode, loss: Tensor, step: Tensor, halt: Tensor): Tensor | null {
  if (mode === 'skip') return rt.call('isfinite', [loss]) as Tensor;
  rt.call('check_finite', [loss, step, halt], { what: 'training loss' }, 0);
  return null;
}

/**
 * Traced once per parameter: `update()`, undone where `ok` is false. `written` are the
 * tensors the update may write in place (the parameter and its optimizer state).
 */
export function maskedUpdate(rt: Runtime, ok: Tensor | null, written: Tensor[], update: () => void): void {
  if (!ok) return update();
  const before = written.map((t) => t.clone());
  update();
  written.forEach((t, i) => { t.copy_(rt.where(ok, t, before[i])); });
}

/**
 * The () mean of 0-d losses, freeing the stack once queued; with `skip`, the mean of the
 * finite ones and a () count of the others (steps skipped).
 */
export function lossSummary(rt: Runtime, ts: Tensor[], skip: boolean): { mean: Tensor; skipped: Tensor | null } {
  const all = rt.stack(ts);
  if (!skip) {
    const mean = all.mean();
    all.free();
    return { mean, skipped: null };
  }
  // every intermediate is freed once the results are queued (a handle each, per log)
  const tmp: Tensor[] = [all];
  const t = (x: Tensor) => { tmp.push(x); return x; };
  const finite = t(rt.call('isfinite', [all]) as Tensor);
  const mean = t(t(rt.where(finite, all, 0)).sum()).div(t(t(finite.to('f32')).sum()));
  const skipped = t(t(finite.logicalNot()).to('i64')).sum();
  for (const x of tmp) x.free();
  return { mean, skipped };
}

/** Where a fit started: to name the epoch of a step. */
export interface FitStart {
  step: number;
  epoch: number;
  stepsPerEpoch: number;
}

/**
 * The runtime's E_NONFINITE from `check_finite` as the Trainer's error: the step, its
 * epoch, what was left, what to do. Null for any other error.
 */
export function nonFiniteError(e: unknown, at: FitStart): { error: LiaisonError; step: number; epoch: number } | null {
  if (!(e instanceof LiaisonError) || e.code !== 'E_NONFINITE') return null;
  const m = /the training loss of step (\d+) was not finite|the training loss is (NaN|infinite) at step (\d+)/.exec(e.message);
  if (!m) return null;
  const step = Number(m[1] ?? m[3]);
  const what = m[2] ?? 'not finite';
  const k = step - at.step - 1;
  const epoch = at.epoch + Math.floor(k / at.stepsPerEpoch);
  const msg = `Trainer: the training loss of step ${step} (epoch ${epoch}, step ${(k % at.stepsPerEpoch) + 1} of ${at.stepsPerEpoch}) is ${what}; `
    + `its update and every step after it were not applied: the model and the optimizer's state are as step ${step - 1} left them. `
    + "Look for NaN or infinite values in the data, lower the learning rate, or set nonFinite: 'skip' to skip such steps";
  return { error: new LiaisonError('E_NONFINITE', msg, { op: e.op, cause: e }), step, epoch };
}

type FloatArray = Float32Array | Float64Array;

/**
 * E_NONFINITE naming `name`'s first NaN or infinity (its index, in `shape`) when a float
 * array holds one; integer arrays hold none. One pass, before an upload.
 */
export function refuseNonFinite(who: string, name: string, data: ArrayBufferView, shape: readonly number[]): void {
  if (!(data instanceof Float32Array || data instanceof Float64Array)) return;
  const i = firstNonFinite(data);
  if (i < 0) return;
  const at: number[] = [];
  let rest = i;
  for (let d = shape.length - 1; d >= 0; d--) {
    at.unshift(rest % shape[d]);
    rest = Math.floor(rest / shape[d]);
  }
  throw new LiaisonError('E_NONFINITE', `${who}: ${name}[${at.join(', ')}] (element ${i}) is ${Number.isNaN(data[i]) ? 'NaN' : data[i]}; `
    + 'a model trained on it gets NaN weights: drop or impute the missing values before making the dataset', { param: name });
}

function firstNonFinite(a: FloatArray): number {
  for (let i = 0; i < a.length; i++) {
    // x - x is 0 for every finite x and NaN for NaN and ±Infinity
    if (a[i] - a[i] !== 0) return i;
  }
  return -1;
}
