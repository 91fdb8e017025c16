/** Small helpers the example scripts share: knobs from the environment, the output folder, timings. */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LiaisonError } from '../bridge/index.js';

/** `--out DIR` (or `--out=DIR`) from the command line; default examples/out, which git ignores. */
export function outDir(argv: readonly string[]): string {
  const i = argv.findIndex((a) => a === '--out' || a.startsWith('--out='));
  if (i < 0) return join(dirname(fileURLToPath(import.meta.url)), 'out');
  const value = argv[i].startsWith('--out=') ? argv[i].slice(6) : argv[i + 1];
  if (!value) throw new LiaisonError('E_ARG', '--out needs a folder: --out runs');
  return resolve(value);
}

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
