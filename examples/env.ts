/** Small helpers the example scripts share: knobs from the environment, the output folder, timings. */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Group, LiaisonError, Runtime, type StartOptions } from '../bridge/index.js';

/** The value of `--name VALUE` (or `--name=VALUE`) on the command line; undefined when absent. */
export function flag(argv: readonly string[], name: string): string | undefined {
  const i = argv.findIndex((a) => a === `--${name}` || a.startsWith(`--${name}=`));
  if (i < 0) return undefined;
  const v = argv[i].includes('=') ? argv[i].slice(name.length + 3) : argv[i + 1];
  if (v === undefined || v === '' || v.startsWith('--')) throw new LiaisonError('E_ARG', `--${name} needs a value`, { param: name });
  return v;
}

/** `--out DIR` (or `--out=DIR`) from the command line; default examples/out, which git ignores. */
export function outDir(argv: readonly string[]): string {
  return resolve(flag(argv, 'out') ?? join(dirname(fileURLToPath(import.meta.url)), 'out'));
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

/** Positive numbers, comma-separated, from environment variable `name`, else `fallback`. */
export function positiveNumbers(name: string, fallback: number[]): number[] {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const xs = raw.split(',').map((v) => Number(v.trim()));
  if (!xs.every((x) => Number.isFinite(x) && x > 0)) throw new LiaisonError('E_ARG', `${name} must be positive numbers separated by commas, got ${JSON.stringify(raw)}`);
  return xs;
}

/**
 * The runtime an example runs on: a group of runtimes when LIAISON_GROUP=N (a local one of N
 * ranks under torchrun) or LIAISON_GROUP_ENDPOINT=tcp://… (one started with torchrun; its
 * key from LIAISON_KEY) is set, a remote runtime when LIAISON_ENDPOINT is, else a fresh
 * local one. A group is a `Runtime` too: an example written against it runs on either.
 */
export async function startRuntime(opts: StartOptions = {}): Promise<Runtime> {
  const group = await Group.fromEnv(opts);
  if (group) return group;
  const ep = process.env.LIAISON_ENDPOINT;
  return ep ? Runtime.connect(ep, opts) : Runtime.start(opts);
}
