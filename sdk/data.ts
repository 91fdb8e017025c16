/**
 * Training data that lives in the runtime.
 *
 * A training loop that uploaded each batch from TypeScript would pay for the transfer
 * every step. Here the whole set is uploaded (or loaded by the runtime) once; an epoch's
 * batches are then made in the runtime from one permutation, an `index_select` and a
 * `split` — queued ops, no data crossing the wire — and language-model windows are drawn
 * inside the traced step itself ({@link TokenSampler}).
 *
 * ```ts
 * const digits = await Dataset.builtin(rt, 'digits');          // x (1797, 64) f32, y (1797) i64
 * const [train, test] = digits.split(0.2, 0);
 * for (const { x, y } of train.batches(64, { seed: epoch })) … // x (64, 64), y (64)
 *
 * const text = await TextCorpus.load(rt, 'pydoc');
 * const [tr, heldOut] = text.split(0.1);
 * const sampler = tr.sampler(32, 128);                          // draw() -> x, y (32, 128) i64
 * ```
 */
import { type DType, LiaisonError, type Runtime, type Tensor, type TypedArray } from '../bridge/index.js';
import { dtypeOf } from '../bridge/dtype.js';
import { refuseNonFinite } from './nonfinite.js';

/** The datasets the runtime's `dataset` op ships (scikit-learn's bundled ones). */
export const BUILTIN_DATASETS = ['digits', 'iris', 'wine', 'breast_cancer', 'diabetes'] as const;
export type BuiltinDataset = (typeof BUILTIN_DATASETS)[number];

/** The corpora of the runtime's `text_corpus` op. */
export const TEXT_CORPORA = ['pydoc', 'fortunes'] as const;
export type TextCorpusName = (typeof TEXT_CORPORA)[number];

/** One batch: rows of features and their targets, both in the runtime. */
export interface Batch {
  /** (B, …): the features of B rows. */
  x: Tensor;
  /** (B) class indices (i64) or (B) / (B, k) regression targets (f32). */
  y: Tensor;
  /** B: the number of rows (the last batch of an epoch may be smaller). */
  size: number;
}

export interface BatchOptions {
  /** Draw a new order of the rows (default true). */
  shuffle?: boolean;
  /** Seed of that order; use a different one per epoch (the Trainer passes seed + epoch). Default 0. */
  seed?: number;
  /** Leave out a last batch smaller than `batchSize` (default false). */
  dropLast?: boolean;
}

const isInt = (d: DType) => d === 'i64' || d === 'i32' || d === 'u8';

function checkFraction(where: string, name: string, f: number, n: number): number {
  if (typeof f !== 'number' || !(f > 0 && f < 1)) throw new LiaisonError('E_ARG', `${where}: '${name}' must be a number in (0, 1), got ${JSON.stringify(f)}`, { param: name });
  const k = Math.round(n * f);
  if (k < 1 || k > n - 1) throw new LiaisonError('E_ARG', `${where}: '${name}' ${f} of ${n} rows leaves one side empty`, { param: name });
  return k;
}

/** Features and targets, row-aligned, held in the runtime. */
export class Dataset {
  /**
   * @param x (N, …) features.
   * @param y (N) or (N, k) targets: integer class indices for classification, floats for regression.
   */
  constructor(
    readonly rt: Runtime,
    readonly x: Tensor,
    readonly y: Tensor,
    /** Shape of `x`, N first. */
    readonly xShape: readonly number[],
    /** Shape of `y`, N first. */
    readonly yShape: readonly number[],
    /** dtype of `y`: an integer dtype means class labels. */
    readonly yDtype: DType,
  ) {
    if (xShape[0] !== yShape[0]) throw new LiaisonError('E_SHAPE', `Dataset: x has ${xShape[0]} rows but y has ${yShape[0]}`, { param: 'y' });
    // the dataset holds them until free(), whatever rt.scope() it was made in
    x.keep();
    y.keep();
  }

  /**
   * One of scikit-learn's bundled datasets, loaded by the runtime (nothing is uploaded):
   * digits x (1797, 64) in [0, 1]; iris (150, 4), wine (178, 13), breast_cancer (569, 30)
   * standardized, with y i64 classes; diabetes x (442, 10), y (442) f32 standardized.
   */
  static async builtin(rt: Runtime, name: BuiltinDataset): Promise<Dataset> {
    if (!BUILTIN_DATASETS.includes(name)) throw new LiaisonError('E_ARG', `Dataset.builtin: no dataset '${name}'; there are ${BUILTIN_DATASETS.join(', ')}`, { param: 'name' });
    const [x, y] = rt.call('dataset', [name], undefined, 2) as Tensor[];
    const [xi, yi] = await Promise.all([x.info(), y.info()]);
    return new Dataset(rt, x, y, xi.shape, yi.shape, yi.dtype);
  }

  /**
   * Data a service already holds: uploaded once. `x` is row-major with shape `xShape`
   * (N first); `y` has shape `yShape` (default `[N]`). Integer `y` (Int32Array,
   * BigInt64Array) means class labels, uploaded as i64.
   */
  static fromArrays(rt: Runtime, x: TypedArray, xShape: readonly number[], y: TypedArray, yShape?: readonly number[]): Dataset {
    if (x instanceof Uint16Array || y instanceof Uint16Array) throw new LiaisonError('E_DTYPE', 'Dataset.fromArrays: a Uint16Array holds raw f16 bits; pass Float32Array features and Float32Array or integer targets', { param: 'x' });
    const ys = yShape ?? [xShape[0]];
    refuseNonFinite('Dataset.fromArrays', 'x', x, xShape); // here, naming the element: in training it is a NaN loss
    refuseNonFinite('Dataset.fromArrays', 'y', y, ys);
    const xd = dtypeOf(x);
    const yd = dtypeOf(y);
    // features in f32 (what models take); labels in i64 (what cross_entropy takes)
    const xt = upload(rt, x, xShape, xd === 'f32' ? null : 'f32');
    const yt = upload(rt, y, ys, isInt(yd) ? 'i64' : yd === 'f64' ? 'f32' : null);
    return new Dataset(rt, xt, yt, xShape, ys, isInt(yd) ? 'i64' : 'f32');
  }

  /** N: the number of rows. */
  get size(): number {
    return this.xShape[0];
  }

  /** Drop x and y from the runtime (batches already made keep their own rows). */
  free(): void {
    this.x.free();
    this.y.free();
  }

  /** Integer targets: classes (accuracy is reported). */
  get classification(): boolean {
    return isInt(this.yDtype);
  }

  /** The rows at `index` (i64 (M,)) as a new dataset of `m` rows. */
  private take(index: Tensor, m: number): Dataset {
    return new Dataset(this.rt, this.x.indexSelect(0, index), this.y.indexSelect(0, index), [m, ...this.xShape.slice(1)], [m, ...this.yShape.slice(1)], this.yDtype);
  }

  /**
   * [train, test]: a seeded random split, `round(N · testFraction)` rows to test. The
   * permutation is drawn in the runtime; the same seed gives the same split.
   */
  split(testFraction: number, seed = 0): [Dataset, Dataset] {
    const n = this.size;
    const k = checkFraction('Dataset.split', 'testFraction', testFraction, n);
    const perm = this.rt.call('randperm', [n], { seed }) as Tensor;
    const [test, train] = perm.split([k, n - k]);
    const out: [Dataset, Dataset] = [this.take(train, n - k), this.take(test, k)];
    for (const t of [perm, test, train]) t.free();
    return out;
  }

  /** How many batches `batches(batchSize, { dropLast })` makes. */
  countBatches(batchSize: number, dropLast = false): number {
    checkBatch(batchSize);
    return dropLast ? Math.floor(this.size / batchSize) : Math.ceil(this.size / batchSize);
  }

  /**
   * One epoch's batches, made in the runtime: x (B, …), y (B) or (B, k), B = `batchSize`
   * except a smaller last one (unless `dropLast`). With `shuffle`, the rows are drawn in
   * the order of a permutation seeded by `seed`. Queued ops only: nothing is uploaded.
   * The batches are new handles (never the dataset's own): free them after use
   * (`batch.x.free()`) or make them inside `rt.scope()`.
   */
  batches(batchSize: number, opts: BatchOptions = {}): Batch[] {
    const { shuffle = true, seed = 0, dropLast = false } = opts;
    const count = this.countBatches(batchSize, dropLast);
    if (count === 0) throw new LiaisonError('E_ARG', `Dataset.batches: batchSize ${batchSize} with dropLast leaves no batch of ${this.size} rows`, { param: 'batchSize' });
    const used = dropLast ? count * batchSize : this.size;
    const sizes = Array.from({ length: count }, (_, i) => Math.min(batchSize, used - i * batchSize));
    let x = this.x;
    let y = this.y;
    if (shuffle) {
      // one permutation per epoch; the index_select copies the rows once, in the runtime
      const perm = this.rt.call('randperm', [this.size], { seed }) as Tensor;
      const idx = used < this.size ? perm.narrow(0, 0, used) : perm;
      x = x.indexSelect(0, idx);
      y = y.indexSelect(0, idx);
      idx.free();
      perm.free();
    } else {
      // a view: new handles, so that freeing a batch never frees the dataset's own tensors
      x = x.narrow(0, 0, used);
      y = y.narrow(0, 0, used);
    }
    if (count === 1) return [{ x, y, size: sizes[0] }];
    const xs = x.split(sizes);
    const ys = y.split(sizes);
    // the batches are views that keep the memory; the whole-epoch handles can go
    x.free();
    y.free();
    return sizes.map((size, i) => ({ x: xs[i], y: ys[i], size }));
  }
}

/** `data` uploaded as `shape`, converted to `to` when given; the raw upload is freed once converted. */
function upload(rt: Runtime, data: TypedArray, shape: readonly number[], to: DType | null): Tensor {
  const raw = rt.tensor(data, shape);
  if (to === null) return raw;
  const out = raw.to(to);
  raw.free();
  return out;
}

function checkBatch(batchSize: number): void {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new LiaisonError('E_ARG', `batchSize must be an integer >= 1, got ${JSON.stringify(batchSize)}`, { param: 'batchSize' });
}

/** Windows of a token sequence, drawn inside a traced step. */
export interface TokenSampler {
  /** B: windows per draw. */
  readonly batch: number;
  /** T: tokens per window. */
  readonly context: number;
  /** Size of the token vocabulary (128: ASCII bytes; a BPE tokenizer's otherwise). */
  readonly vocab: number;
  /**
   * B random windows: x (B, T) i64 and y (B, T) i64, y shifted one token ahead of x.
   * Queued ops only, so a traced step may call it: each replay draws new windows from the
   * runtime's random stream (seed it with `rt.manualSeed`).
   */
  draw(): { x: Tensor; y: Tensor };
}

/**
 * A text as a sequence of tokens (i64 (N,), values < `vocab`), in the runtime: byte tokens
 * (vocab 128, ASCII) from {@link TextCorpus.load}, or the ids of a tokenizer
 * ({@link TextCorpus.fromTokens}, e.g. sdk/text.ts's BPE `Tokenizer.corpus`).
 */
export class TextCorpus {
  constructor(
    readonly rt: Runtime,
    /** (N,) i64 tokens. */
    readonly tokens: Tensor,
    /** N. */
    readonly size: number,
    /** The vocabulary: every token is below it (128: ASCII bytes). */
    readonly vocab = 128,
  ) {
    if (!Number.isInteger(vocab) || vocab < 1) throw new LiaisonError('E_ARG', `TextCorpus: 'vocab' must be an integer >= 1, got ${JSON.stringify(vocab)}`, { param: 'vocab' });
    // held until free(), whatever rt.scope() the corpus was made in
    tokens.keep();
  }

  /**
   * Token ids the runtime already holds ((N,) i64, each below `vocab`), e.g. a tokenizer's
   * output: the corpus keeps the tensor (no copy) until free().
   */
  static async fromTokens(rt: Runtime, tokens: Tensor, vocab: number): Promise<TextCorpus> {
    const { shape, dtype } = await tokens.info();
    if (shape.length !== 1 || dtype !== 'i64') throw new LiaisonError('E_ARG', `TextCorpus.fromTokens: 'tokens' must be (N,) i64, got ${dtype} (${shape.join(', ')})`, { param: 'tokens' });
    return new TextCorpus(rt, tokens, shape[0], vocab);
  }

  /**
   * A corpus of the runtime's `text_corpus` op: 'pydoc' (CPython's pydoc topics, about
   * 460 KB of English) or 'fortunes' (where Debian's fortune files are installed).
   */
  static async load(rt: Runtime, name: TextCorpusName = 'pydoc'): Promise<TextCorpus> {
    if (!TEXT_CORPORA.includes(name)) throw new LiaisonError('E_ARG', `TextCorpus.load: no corpus '${name}'; there are ${TEXT_CORPORA.join(', ')}`, { param: 'name' });
    const bytes = rt.call('text_corpus', [name]) as Tensor;
    // i64 once here, so every window a step gathers is ready for embedding and loss
    const tokens = bytes.to('i64');
    const { shape } = await bytes.info();
    bytes.free();
    return new TextCorpus(rt, tokens, shape[0]);
  }

  /** Tokens a service already holds (values in [0, 128)), uploaded once. */
  static fromBytes(rt: Runtime, bytes: Uint8Array): TextCorpus {
    const raw = rt.tensor(bytes, [bytes.length], 'u8');
    const tokens = raw.to('i64');
    raw.free();
    return new TextCorpus(rt, tokens, bytes.length);
  }

  /** Drop the tokens from the runtime (a split's parts and samplers keep what they use). */
  free(): void {
    this.tokens.free();
  }

  /** [train, heldOut]: the first and the last `heldOutFraction` of the text, contiguous (no window spans both). */
  split(heldOutFraction: number): [TextCorpus, TextCorpus] {
    const k = checkFraction('TextCorpus.split', 'heldOutFraction', heldOutFraction, this.size);
    const n = this.size - k;
    return [new TextCorpus(this.rt, this.tokens.narrow(0, 0, n), n, this.vocab), new TextCorpus(this.rt, this.tokens.narrow(0, n, k), k, this.vocab)];
  }

  /**
   * A sampler of `batch` random windows of `context` tokens (see {@link TokenSampler}).
   *
   * `repeat` (optional) teaches copying: in a `fraction` of the windows, a span of `span`
   * tokens from the window's first half is written again over tokens of its second half, so
   * the second occurrence is predictable from the first, hundreds of tokens back. Every
   * token is still the corpus's own text. A small decoder trained for minutes on natural text
   * alone learns short-range statistics first and forms no copying (induction) heads yet;
   * repeats make the long-range mechanism pay from the first steps.
   */
  sampler(batch: number, context: number, opts: { repeat?: { fraction: number; span: number } } = {}): TokenSampler {
    checkBatch(batch);
    if (!Number.isInteger(context) || context < 1 || context + 1 > this.size) {
      throw new LiaisonError('E_ARG', `TextCorpus.sampler: 'context' must be an integer in [1, ${this.size - 1}], got ${JSON.stringify(context)}`, { param: 'context' });
    }
    const rep = opts.repeat;
    if (rep !== undefined) {
      if (!(typeof rep.fraction === 'number' && rep.fraction > 0 && rep.fraction <= 1)) throw new LiaisonError('E_ARG', `TextCorpus.sampler: repeat.fraction must be in (0, 1], got ${JSON.stringify(rep.fraction)}`, { param: 'repeat.fraction' });
      if (!(Number.isInteger(rep.span) && rep.span >= 1 && 2 * rep.span < context / 2)) throw new LiaisonError('E_ARG', `TextCorpus.sampler: repeat.span must be an integer in [1, ${Math.ceil(context / 4) - 1}] (a quarter of the context), got ${JSON.stringify(rep.span)}`, { param: 'repeat.span' });
    }
    const rt = this.rt;
    const tokens = this.tokens;
    const starts = this.size - context; // a window of context + 1 tokens starts in [0, N - T)
    // (1, T + 1) offsets, made now so that a trace captures them instead of re-making them;
    // kept, as the sampler outlives any rt.scope() it was made in
    const range = rt.arange(0, context + 1, 1, 'i64');
    const offsets = range.unsqueeze(0).keep();
    range.free();
    return {
      batch, context, vocab: this.vocab,
      draw() {
        const s = rt.randint(0, starts, [batch, 1]); // (B, 1)
        const idx = s.add(offsets).flatten(); // (B · (T + 1))
        let w = tokens.indexSelect(0, idx).reshape([batch, context + 1]); // (B, T + 1)
        if (rep) w = repeatSpans(rt, w, offsets, batch, context + 1, rep.fraction, rep.span);
        return { x: w.narrow(1, 0, context), y: w.narrow(1, 1, context) };
      },
    };
  }

  /**
   * Consecutive windows covering the corpus in order, for a held-out loss: x, y (M, T)
   * with M = floor((N - 1) / T) (at most `maxWindows`). Deterministic.
   */
  windows(context: number, maxWindows = Infinity): { x: Tensor; y: Tensor; count: number } {
    const m = Math.min(Math.floor((this.size - 1) / context), maxWindows);
    if (m < 1) throw new LiaisonError('E_ARG', `TextCorpus.windows: a context of ${context} leaves no window in ${this.size} tokens`, { param: 'context' });
    const used = this.tokens.narrow(0, 0, m * context + 1);
    const [xs, ys] = [used.narrow(0, 0, m * context), used.narrow(0, 1, m * context)];
    const x = xs.reshape([m, context]);
    const y = ys.reshape([m, context]);
    for (const t of [used, xs, ys]) t.free(); // views: x and y keep the memory
    return { x, y, count: m };
  }
}

/**
 * In a `fraction` of the rows of w (B, T + 1), the `span` tokens at a random p1 in the first
 * half written again at a random p2 in the second half (p2 - p1 > span: the copies never
 * overlap). Queued ops only (a traced step calls it). j (1, T + 1) are the column indices.
 */
function repeatSpans(rt: Runtime, w: Tensor, j: Tensor, b: number, t1: number, fraction: number, span: number): Tensor {
  const half = Math.floor(t1 / 2);
  const p1 = rt.randint(0, half - span, [b, 1]); // (B, 1)
  const p2 = rt.randint(half, t1 - span + 1, [b, 1]); // (B, 1)
  const on = rt.rand([b, 1]).lt(fraction); // (B, 1) rows that repeat
  const inside = j.ge(p2).logicalAnd(j.lt(p2.add(span))).logicalAnd(on); // (B, T + 1)
  const src = j.sub(p2.sub(p1)).clamp(0, t1 - 1); // (B, T + 1): where each copied token comes from
  return w.gather(1, src).where(inside, w);
}
