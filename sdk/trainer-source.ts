/**
 * Where a Trainer's steps get x and y (sdk/trainer.ts): the batches of a dataset, or
 * windows drawn inside the step. Internal: not exported from the SDK (but `epochSeed`).
 */
import type { Tensor } from '../bridge/index.js';
import type { Batch } from './data.js';
import type { EvalResult } from './trainer-types.js';

/** Where a step's x and y come from. */
export interface Source {
  /** What the step program depends on: the same key reuses it across fit() calls. */
  key: unknown;
  steps: number;
  yRank: number;
  /** The batches of epoch e (a dataset), or null (drawn inside the step). */
  batches(epoch: number): Batch[] | null;
  draw?: () => { x: Tensor; y: Tensor };
  evaluate?: () => Promise<EvalResult>;
}

/**
 * The seed of epoch `epoch`'s batch order and random stream, as the Trainer uses them
 * (`dataset.batches(n, { seed: epochSeed(seed, e) })`, `rt.manualSeed(epochSeed(seed, e))`):
 * an own loop that uses it too sees the Trainer's data order (sdk/loop.ts).
 */
export const epochSeed = (seed: number, epoch: number) => (seed * 1_000_003 + epoch) % 2_147_483_647;
