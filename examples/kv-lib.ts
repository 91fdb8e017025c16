/**
 * What examples/kv-compare.ts measures, apart from its main: held-out windows and repeated
 * spans cut from a token stream, per-token losses through a model's KV cache and policy,
 * and paired bootstrap intervals over windows.
 */
import type { Tensor } from '../bridge/index.js';
import { getPlugin, type KVPolicy, type Model } from '../sdk/index.js';

/** A small seeded generator (mulberry32): the same resamples on every run. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** A mean and its interval. */
export interface Interval { mean: number; lo: number; hi: number }

/**
 * The mean of `xs` with a percentile bootstrap interval (`level`, default 95%): `resamples`
 * means of n draws with replacement. Given per-window differences between two caches on the
 * same windows, it is the paired bootstrap.
 */
export function bootstrap(xs: readonly number[], opts: { resamples?: number; level?: number; seed?: number } = {}): Interval {
  const n = xs.length;
  const m = mean(xs);
  if (n < 2) return { mean: m, lo: m, hi: m };
  const draws = opts.resamples ?? 2000;
  const next = rng(opts.seed ?? 12);
  const means = new Float64Array(draws);
  for (let r = 0; r < draws; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += xs[Math.floor(next() * n)];
    means[r] = s / n;
  }
  means.sort();
  const tail = (1 - (opts.level ?? 0.95)) / 2;
  const at = (q: number) => means[Math.min(draws - 1, Math.max(0, Math.round(q * (draws - 1))))];
  return { mean: m, lo: at(tail), hi: at(1 - tail) };
}

/** `count` windows of `length` tokens spread evenly over `stream` (as far apart as it allows), starting at `offset`. */
export function spreadWindows(stream: readonly number[], length: number, count: number, offset = 0): number[][] {
  const room = stream.length - offset - length;
  if (room < 0) throw new Error(`the held-out stream has ${stream.length} tokens, fewer than one window of ${length} after ${offset}`);
  const stride = count > 1 ? Math.floor(room / (count - 1)) : 0;
  return Array.from({ length: count }, (_, i) => stream.slice(offset + i * stride, offset + i * stride + length));
}

/** Where a repeated span sits in each sequence {@link repeatSpans} makes. */
export interface SpanLayout { length: number; span: number; first: number; second: number }

/**
 * `count` held-out windows of `layout.length` tokens (spread over `stream`, each at the
 * middle of one of `count` equal stretches) whose tokens first..first+span are written again
 * at second..second+span, overwriting what was there: a span that recurs at a distance of
 * second − first tokens.
 */
export function repeatSpans(stream: readonly number[], layout: SpanLayout, count: number): number[][] {
  const { length, span, first, second } = layout;
  if (!(first + span <= second && second + span <= length)) throw new Error(`spans at ${first} and ${second} (length ${span}) must not overlap and must end by ${length}`);
  const room = stream.length - length;
  if (room < 0) throw new Error(`the held-out stream has ${stream.length} tokens, fewer than one window of ${length}`);
  return Array.from({ length: count }, (_, i) => {
    const start = Math.floor(((i + 0.5) * room) / count);
    const row = stream.slice(start, start + length);
    for (let j = 0; j < span; j++) row[second + j] = row[first + j];
    return row;
  });
}

/** The mean of `nll[a..b)` (positions a..b of the sequence, given nll from position `prefill` on). */
export function meanAt(nll: Float32Array, prefill: number, a: number, b: number): number {
  let s = 0;
  for (let p = a; p < b; p++) s += nll[p - prefill];
  return s / (b - a);
}

/** What one pass of rows through a model's cache gave. */
export interface CachePass {
  /** Per row: the loss (nats) of each token from `prefill` on, given all before it as the cache kept them. */
  nll: Float32Array[];
  /** Decoding time, the runtime's, summed over batches. */
  seconds: number;
  /** Tokens scored per second (rows × scored tokens / seconds). */
  tokensPerSecond: number;
  /** Tokens the first layer's cache held per row at the end of the last batch. */
  kept: number;
  /** Bytes the cache held per sequence (every layer, keys, values, positions, state) at the end of the last batch. */
  bytesPerRow: number;
}

/**
 * Teacher-forced decoding of `rows` (each the same length) through `model`'s cache and the
 * policy installed on it (`setKVPolicy`), `batch` rows at a time: the runtime's `kv_eval`,
 * whose per-token losses `Model.perplexity` averages away. The first `prefill` tokens of each
 * row go in at once.
 */
export async function cachePass(model: Model, rows: readonly number[][], opts: { prefill: number; batch: number; onBatch?: (done: number) => void }): Promise<CachePass> {
  const rt = model.rt;
  const length = rows[0].length;
  const nll: Float32Array[] = [];
  let seconds = 0;
  let kept = 0;
  let bytesPerRow = 0;
  for (let i = 0; i < rows.length; i += opts.batch) {
    const part = rows.slice(i, i + opts.batch);
    const x = rt.tensor(part.flat(), [part.length, length], 'i64');
    await rt.flush(); // time the decoding, not the upload
    const t0 = performance.now();
    const out = rt.call('kv_eval', [model.handle, x, opts.prefill]) as Tensor; // (b, length - prefill)
    try {
      const flat = (await out.toArray()) as Float32Array;
      seconds += (performance.now() - t0) / 1000;
      const n = length - opts.prefill;
      for (let r = 0; r < part.length; r++) nll.push(flat.slice(r * n, (r + 1) * n));
    } finally {
      x.free();
      out.free();
    }
    const size = await model.kvCacheSize();
    kept = size.tokens[0];
    bytesPerRow = size.totalBytes / part.length;
    opts.onBatch?.(Math.min(rows.length, i + opts.batch));
  }
  return { nll, seconds, tokensPerSecond: (rows.length * (length - opts.prefill)) / seconds, kept, bytesPerRow };
}

/** One cache configuration: a registered KV policy, its budget (null: the `full` cache) and storage bits. */
export interface Setting { policy: string; budget: number | null; bits: 32 | 8 | 4 }

/** `sliding-window 204`, `full 4-bit`, … */
export const label = (s: Setting): string => `${s.policy}${s.budget === null ? '' : ` ${s.budget}`}${s.bits === 32 ? '' : ` ${s.bits}-bit`}`;

/** The policy a setting names, from the registry (`import '../plugins/index.js'` registers them). */
export function policyOf(s: Setting): KVPolicy {
  const config: Record<string, unknown> = {};
  if (s.budget !== null) config.budget = s.budget;
  if (s.bits !== 32) config.bits = s.bits;
  return getPlugin('kv-policy', s.policy)(config) as unknown as KVPolicy;
}

/** The two passes of one setting: natural held-out windows, and windows with a repeated span. */
export interface Measured { setting: Setting; windows: CachePass; spans: CachePass }

/**
 * Decode `spans` and `windows` through `model` with the setting's policy installed, then
 * take it off again. The spans go first: whatever the runtime does on a program's first
 * replays is then not in the windows' tokens/s.
 */
export async function measure(model: Model, setting: Setting, data: { windows: readonly number[][]; spans: readonly number[][] }, opts: { prefill: number; batch: number }): Promise<Measured> {
  model.setKVPolicy(policyOf(setting));
  try {
    const spans = await cachePass(model, data.spans, opts);
    const windows = await cachePass(model, data.windows, opts);
    return { setting, windows, spans };
  } finally {
    model.setKVPolicy(null);
  }
}
