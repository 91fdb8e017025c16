/**
 * What examples/nesterov-additive.ts and examples/nesterov-diabetes.ts share: a full-batch
 * run through the Trainer that records the loss at every iteration, iterations to a target,
 * and medians over seeds (the tables are in tables.ts).
 */
import type { Dataset, Model, MomentumOptimizer } from '../sdk/index.js';
import { Trainer } from '../sdk/index.js';

export interface CurveOptions {
  model: Model;
  optimizer: MomentumOptimizer;
  /** Trained on all rows at every step: full-batch, deterministic gradients. */
  data: Dataset;
  /** Budget: at most this many iterations (optimizer steps). */
  iters: number;
  /** Stop once the loss is at or below this (Infinity: never stop early). */
  stopBelow?: number;
  /** Iterations per fit() call between checks of the target (default 100). */
  chunk?: number;
  /** Called after every chunk with the iterations done (a held-out evaluation, say). */
  afterChunk?: (done: number) => Promise<void>;
}

/**
 * The training loss before each iteration (losses[k] = f(θ_k), after k updates) of a
 * full-batch run: one epoch is one step, shuffling off, so every step sees the same
 * gradient a deterministic method would. Stops at the budget, at `stopBelow`, or when the
 * loss is no longer finite (a diverged run).
 */
export async function lossCurve(opts: CurveOptions): Promise<{ losses: number[]; trainer: Trainer }> {
  const { model, optimizer, data, iters, stopBelow = -Infinity, chunk = 100, afterChunk } = opts;
  const trainer = new Trainer({ model, optimizer, batchSize: data.size, shuffle: false, loss: 'mse', progress: 'none', logEvery: 1 });
  const losses: number[] = [];
  trainer.on('progress', (p) => { losses.push(p.loss); });
  while (losses.length < iters) {
    await trainer.fit(data, { epochs: Math.min(chunk, iters - losses.length) });
    await afterChunk?.(losses.length);
    const last = losses.at(-1)!;
    if (!Number.isFinite(last) || losses.some((l) => l <= stopBelow)) break;
  }
  return { losses, trainer };
}

/** Updates done when the loss first reached `target` (null: not within the run). */
export function itersTo(losses: readonly number[], target: number): number | null {
  const k = losses.findIndex((l) => l <= target);
  return k < 0 ? null : k;
}

/** Median of numbers (the mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/**
 * Iterations to the target over seeds, as "median (min–max)", with runs that did not get
 * there within `budget` counted as "> budget": the median is then a lower bound, written
 * "> …" when it is one.
 */
export function itersCell(counts: readonly (number | null)[], budget: number): { text: string; median: number; reached: number } {
  const n = counts.map((c) => c ?? Infinity);
  const reached = counts.filter((c) => c !== null).length;
  const med = median(n);
  const show = (v: number) => (Number.isFinite(v) ? String(Math.round(v)) : `> ${budget}`);
  const lo = Math.min(...n), hi = Math.max(...n);
  const text = reached === 0 ? `not reached (> ${budget})` : `${show(med)} (${show(lo)}–${show(hi)})`;
  return { text, median: med, reached };
}
