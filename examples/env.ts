/** Small helpers the example scripts share: knobs from the environment, timings. */
import { LiaisonError } from '../bridge/index.js';

/** An integer >= 1 from environment variable `name` (tests use these to run short), else `fallback`. */
export function positiveInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new LiaisonError('E_ARG', `${name} must be an integer >= 1, got ${JSON.stringify(raw)}`);
  return n;
}

/** Seconds since `t0` (a performance.now() reading), as "1.2 s". */
export const secs = (t0: number): string => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
