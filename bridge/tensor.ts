/**
 * A remote tensor: a handle into the runtime's store, with the ops of the op table as
 * methods. Every method queues an op and returns a new Tensor at once; only `data()`,
 * `toArray()`, `item()`, `tolist()` and `info()` wait for the runtime.
 *
 * Shapes in the comments follow PyTorch: `(B, T, D)`.
 */
import type { ArgOf, RuntimeOf, TensorData, TensorInfo } from './contract.js';
import type { ArrayOf, DType } from './dtype.js';
import { LiaisonError } from './errors.js';
import { HandleRef } from './protocol.js';
import { whyUnknown } from './shapes.js';
import { type Shape, Shaped, type Size, formatShape } from './sizes.js';

export type { TensorData, TensorInfo } from './contract.js';

type Arg = ArgOf<Tensor>;
type T = Tensor;
type TS = Tensor | number | boolean;
type Dims = number | readonly number[];

export class Tensor extends Shaped {
  readonly ref: HandleRef;
  /** @internal */ freed = false;
  /** @internal */ kept = false;
  /** @internal Set on tensors that exist only inside a program's trace (sdk/program.ts). */
  traced?: object;
  /** @internal What the session's finalizer holds for this tensor (bridge/lifetimes.ts). */
  life?: { freed: boolean };

  constructor(readonly rt: RuntimeOf<Tensor>, readonly id: number) {
    super();
    this.ref = new HandleRef(id);
  }

  // ---- the static shape: known without a round trip (bridge/shapes.ts) ----

  /**
   * The shape as the SDK knows it without asking the runtime: set by placeholders, by the
   * tensors the client makes (`rt.tensor`, `rt.zeros`, …) and by model parameters, then
   * carried through every op that has a shape rule. Strings are symbolic sizes: a
   * placeholder's name (`'B'`) or an expression of names (`'B*T'`, `'T+1'`). Undefined when
   * some op on the way has no rule or could not be sure; {@link size} then says which.
   */
  get shape(): Shape | undefined {
    return this.sh;
  }

  /** The number of dims; E_SHAPE naming the op that lost the shape when it is not known. */
  get dim(): number {
    return this.known('dim').length;
  }

  /** The size of dim `d` (negative counts from the end): a number, or a symbolic size. */
  size(d: number): Size {
    const s = this.known(`size(${d})`);
    const i = Number.isInteger(d) && d < 0 ? d + s.length : d;
    if (!Number.isInteger(i) || i < 0 || i >= s.length) {
      throw new LiaisonError('E_ARG', `tensor #${this.id}: size(${d}) is out of range for shape ${formatShape(s)} (dims -${s.length} to ${s.length - 1})`, { param: 'd' });
    }
    return s[i];
  }

  private known(what: string): Shape {
    if (this.sh !== undefined) return this.sh;
    throw new LiaisonError('E_SHAPE', `tensor #${this.id}: ${what} needs its shape, which is not known here: ${whyUnknown(this)}. ` +
      'Declare the shape of the placeholder it comes from, pass the size in, or read it with `await t.info()` outside a program');
  }

  private op(name: string, args: readonly Arg[], kw?: Record<string, Arg>): T {
    return this.rt.call(name, [this, ...args], kw) as T;
  }

  private ops(name: string, n: number, args: readonly Arg[], kw?: Record<string, Arg>): T[] {
    return this.rt.call(name, [this, ...args], kw, n) as T[];
  }

  // ---- reading values (these wait for the runtime) ----

  /** Dtype, shape and the values, in the typed array for the dtype. */
  data(): Promise<TensorData> {
    return this.rt.read(this);
  }

  toArray(): Promise<ArrayOf[DType]> {
    return this.settled(this.rt.read(this).then((d) => d.data));
  }

  /** The single value of a one-element tensor. */
  item(): Promise<number> {
    return this.settled(this.rt.read(this).then(({ data, shape }) => {
      if (data.length !== 1) throw new RangeError(`item() needs a one-element tensor, this one has shape [${shape}]`);
      const v = data[0];
      return typeof v === 'bigint' ? Number(v) : v;
    }));
  }

  /** Nested arrays of numbers, like torch's tolist(). */
  tolist(): Promise<unknown> {
    return this.settled(this.rt.read(this).then(({ data, shape }) => {
      const flat = Array.from(data as ArrayLike<number | bigint>, (x) => (typeof x === 'bigint' ? Number(x) : x));
      const nest = (off: number, d: number): unknown => {
        if (d === shape.length) return flat[off];
        const step = shape.slice(d + 1).reduce((a, b) => a * b, 1);
        return Array.from({ length: shape[d] }, (_, i) => nest(off + i * step, d + 1));
      };
      return nest(0, 0);
    }));
  }

  /**
   * A read refused at trace time is reported by the trace itself (E_TRACE from trace()),
   * so its promise must not also surface as an unhandled rejection when the traced code
   * did not await it.
   */
  private settled<V>(p: Promise<V>): Promise<V> {
    if (this.traced || this.rt.recordingNow) p.catch(() => undefined);
    return p;
  }

  info(): Promise<TensorInfo> {
    return this.rt.meta(this) as unknown as Promise<TensorInfo>;
  }

  // ---- lifetime ----

  /** Drop the runtime's copy now (sent with the next batch). */
  free(): void {
    if (this.freed) return;
    this.freed = true;
    this.rt.freeTensor(this);
  }

  /** Survive the enclosing `rt.scope()`. */
  keep(): this {
    this.kept = true;
    return this;
  }

  [Symbol.dispose](): void {
    this.free();
  }

  // ---- arithmetic and comparisons (broadcasting; `other` may be a number) ----
  add(other: TS): T { return this.op('add', [other]); }
  sub(other: TS): T { return this.op('sub', [other]); }
  mul(other: TS): T { return this.op('mul', [other]); }
  div(other: TS): T { return this.op('div', [other]); }
  pow(other: TS): T { return this.op('pow', [other]); }
  remainder(other: TS): T { return this.op('remainder', [other]); }
  maximum(other: TS): T { return this.op('maximum', [other]); }
  minimum(other: TS): T { return this.op('minimum', [other]); }
  eq(other: TS): T { return this.op('eq', [other]); }
  ne(other: TS): T { return this.op('ne', [other]); }
  lt(other: TS): T { return this.op('lt', [other]); }
  le(other: TS): T { return this.op('le', [other]); }
  gt(other: TS): T { return this.op('gt', [other]); }
  ge(other: TS): T { return this.op('ge', [other]); }
  logicalAnd(other: TS): T { return this.op('logical_and', [other]); }
  logicalOr(other: TS): T { return this.op('logical_or', [other]); }
  logicalNot(): T { return this.op('logical_not', []); }
  neg(): T { return this.op('neg', []); }
  abs(): T { return this.op('abs', []); }
  sign(): T { return this.op('sign', []); }
  square(): T { return this.op('square', []); }
  sqrt(): T { return this.op('sqrt', []); }
  rsqrt(): T { return this.op('rsqrt', []); }
  exp(): T { return this.op('exp', []); }
  log(): T { return this.op('log', []); }
  sin(): T { return this.op('sin', []); }
  cos(): T { return this.op('cos', []); }
  tanh(): T { return this.op('tanh', []); }
  sigmoid(): T { return this.op('sigmoid', []); }
  relu(): T { return this.op('relu', []); }
  gelu(): T { return this.op('gelu', []); }
  silu(): T { return this.op('silu', []); }
  reciprocal(): T { return this.op('reciprocal', []); }
  clamp(min?: number | null, max?: number | null): T { return this.op('clamp', [], { min: min ?? null, max: max ?? null }); }
  /** `cond ? this : other`, elementwise. */
  where(cond: T, other: TS): T { return this.rt.call('where', [cond, this, other]) as T; }

  // ---- reductions: `dim` omitted reduces over everything ----
  sum(dim?: Dims, keepdim = false): T { return this.op('sum', [], { dim, keepdim }); }
  mean(dim?: Dims, keepdim = false): T { return this.op('mean', [], { dim, keepdim }); }
  prod(dim?: number, keepdim = false): T { return this.op('prod', [], { dim, keepdim }); }
  amax(dim?: Dims, keepdim = false): T { return this.op('amax', [], { dim, keepdim }); }
  amin(dim?: Dims, keepdim = false): T { return this.op('amin', [], { dim, keepdim }); }
  argmax(dim?: number, keepdim = false): T { return this.op('argmax', [], { dim, keepdim }); }
  argmin(dim?: number, keepdim = false): T { return this.op('argmin', [], { dim, keepdim }); }
  std(dim?: Dims, keepdim = false, correction = 1): T { return this.op('std', [], { dim, keepdim, correction }); }
  var(dim?: Dims, keepdim = false, correction = 1): T { return this.op('var', [], { dim, keepdim, correction }); }
  logsumexp(dim: Dims, keepdim = false): T { return this.op('logsumexp', [], { dim, keepdim }); }
  cumsum(dim: number): T { return this.op('cumsum', [], { dim }); }
  all(dim?: number, keepdim = false): T { return this.op('all', [], { dim, keepdim }); }
  any(dim?: number, keepdim = false): T { return this.op('any', [], { dim, keepdim }); }
  /** Vector p-norm over `dim` (all elements when omitted). */
  norm(ord = 2, dim?: Dims, keepdim = false): T { return this.op('norm', [], { ord, dim, keepdim }); }
  /** [values, indices] of the max along `dim`. */
  maxDim(dim: number, keepdim = false): [T, T] { return this.ops('max_dim', 2, [], { dim, keepdim }) as [T, T]; }
  minDim(dim: number, keepdim = false): [T, T] { return this.ops('min_dim', 2, [], { dim, keepdim }) as [T, T]; }

  // ---- sorting ----
  /** [values, indices] of the k largest (or smallest) along `dim`. */
  topk(k: number, dim = -1, largest = true, sorted = true): [T, T] { return this.ops('topk', 2, [k], { dim, largest, sorted }) as [T, T]; }
  sort(dim = -1, descending = false, stable = false): [T, T] { return this.ops('sort', 2, [], { dim, descending, stable }) as [T, T]; }
  argsort(dim = -1, descending = false): T { return this.op('argsort', [], { dim, descending }); }
  /**
   * 0/1 shaped as this, exactly `k` ones at its k largest entries over all dims (of |this| when
   * `abs`; ties keep no extra); the gradient passes straight through (to this: g·sign(this) when `abs`).
   */
  topkMask(k: number, abs = true): T { return this.op('topk_mask', [k], { abs }); }

  // ---- linear algebra ----
  /** (…, n, k) @ (…, k, m) -> (…, n, m). */
  matmul(other: T): T { return this.op('matmul', [other]); }
  /** Reduced (or complete) QR: [Q, R]. */
  qr(mode: 'reduced' | 'complete' = 'reduced'): [T, T] { return this.ops('qr', 2, [], { mode }) as [T, T]; }
  /** Symmetric eigendecomposition: [eigenvalues ascending (…, n), eigenvectors (…, n, n)]. */
  eigh(): [T, T] { return this.ops('eigh', 2, []) as [T, T]; }
  /** [U, S, Vh] with S descending. */
  svd(fullMatrices = false): [T, T, T] { return this.ops('svd', 3, [], { full_matrices: fullMatrices }) as [T, T, T]; }
  inv(): T { return this.op('inv', []); }
  det(): T { return this.op('det', []); }
  cholesky(): T { return this.op('cholesky', []); }

  // ---- shapes ----
  reshape(shape: readonly number[]): T { return this.op('reshape', [shape]); }
  permute(dims: readonly number[]): T { return this.op('permute', [dims]); }
  transpose(dim0 = -2, dim1 = -1): T { return this.op('transpose', [dim0, dim1]); }
  /** The matrix transpose of the last two dims. */
  get T(): T { return this.transpose(-2, -1); }
  squeeze(dim?: Dims): T { return this.op('squeeze', [], { dim }); }
  unsqueeze(dim: number): T { return this.op('unsqueeze', [dim]); }
  flatten(startDim = 0, endDim = -1): T { return this.op('flatten', [], { start_dim: startDim, end_dim: endDim }); }
  expand(shape: readonly number[]): T { return this.op('expand', [shape]); }
  contiguous(): T { return this.op('contiguous', []); }
  flip(dims: Dims): T { return this.op('flip', [dims]); }
  tril(diagonal = 0): T { return this.op('tril', [], { diagonal }); }
  triu(diagonal = 0): T { return this.op('triu', [], { diagonal }); }
  /** Elements start..end (step) along `dim`, Python slicing rules. */
  slice(dim: number, start?: number | null, end?: number | null, step = 1): T { return this.op('slice', [], { dim, start: start ?? null, end: end ?? null, step }); }
  narrow(dim: number, start: number, length: number): T { return this.op('narrow', [dim, start, length]); }
  /** Split into pieces of the given sizes along `dim`. */
  split(sizes: readonly number[], dim = 0): T[] { return this.ops('split', sizes.length, [sizes], { dim }); }
  /** `n` equal chunks along `dim` (the size must divide evenly). */
  chunk(n: number, dim = 0): T[] { return this.ops('chunk', n, [n], { dim }); }

  // ---- indexing ----
  indexSelect(dim: number, index: T): T { return this.op('index_select', [dim, index]); }
  gather(dim: number, index: T): T { return this.op('gather', [dim, index]); }
  scatter(dim: number, index: T, src: TS): T { return this.op('scatter', [dim, index, src]); }
  scatterAdd(dim: number, index: T, src: T): T { return this.op('scatter_add', [dim, index, src]); }
  maskedFill(mask: T, value: number): T { return this.op('masked_fill', [mask, value]); }

  // ---- nn ----
  softmax(dim = -1): T { return this.op('softmax', [dim]); }
  logSoftmax(dim = -1): T { return this.op('log_softmax', [dim]); }
  /**
   * A 1-, 2- or 3-d convolution of this (N, C_in, …spatial) by `weight` (C_out, C_in / groups,
   * …kernel), chosen by the weight's rank (3, 4, 5). stride, padding, dilation: a number or one
   * per spatial dim (padding also 'same' / 'valid').
   */
  conv(weight: T, opts: { bias?: T | null; stride?: Dims; padding?: Dims | 'same' | 'valid'; dilation?: Dims; groups?: number } = {}): T {
    return this.op('conv', [weight, opts.bias ?? null, opts.stride ?? 1, opts.padding ?? 0, opts.dilation ?? 1, opts.groups ?? 1]);
  }

  // ---- dtype ----
  to(dtype: DType): T { return this.op('to', [dtype]); }
  clone(): T { return this.op('clone', []); }

  // ---- in-place updates (parameters, optimizer state). Return a handle aliasing this tensor. ----
  copy_(src: T): T { return this.op('copy_', [src]); }
  add_(other: TS, alpha = 1): T { return this.op('add_', [other], { alpha }); }
  sub_(other: TS, alpha = 1): T { return this.op('sub_', [other], { alpha }); }
  mul_(other: TS): T { return this.op('mul_', [other]); }
  div_(other: TS): T { return this.op('div_', [other]); }
  addcmul_(t1: T, t2: T, value = 1): T { return this.op('addcmul_', [t1, t2], { value }); }
  addcdiv_(t1: T, t2: T, value = 1): T { return this.op('addcdiv_', [t1, t2], { value }); }
  lerp_(end: T, weight: TS): T { return this.op('lerp_', [end, weight]); }
  zero_(): T { return this.op('zero_', []); }
  fill_(value: number): T { return this.op('fill_', [value]); }
}
