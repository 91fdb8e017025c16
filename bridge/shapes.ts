/**
 * Static shapes: what a tensor's shape is, known on the client without asking the runtime.
 *
 * Every op queued through `Runtime.call` looks its name up in {@link RULES} (or
 * {@link MULTI_RULES} for ops with several results) and gives its results the shape the
 * rule derives from the arguments. A size is a number or a string: a symbolic size named by
 * a program's placeholder (`'B'`), or an expression of such names (`'B*T'` from a reshape
 * with -1, `'T+1'` from a cat). Equal strings are equal sizes; different strings may still
 * be equal, so nothing is ever concluded from two strings differing.
 *
 * A rule returns `undefined` whenever it cannot be sure (an op without a rule, an input of
 * unknown shape, a symbolic size that might be 1, an argument it does not understand): an
 * unknown shape, never a wrong one. It throws E_SHAPE only for a mismatch that is certain
 * (numbers on both sides); the caller decides whether that is reported now (inside a trace)
 * or left to the runtime (eager code, whose errors surface at the next read).
 *
 * Queuing an op is the SDK's hot path (bench bridge.batched_ops), so the common rules
 * allocate nothing: an elementwise op returns its input's own (readonly) shape array.
 */
import { LiaisonError } from './errors.js';
import {
  type Args, type Kw, SCALAR, arg, broadcast, dimIn, dimsIn, einsum, expand, intList, isInt, joined, matmul, operand, pieces,
  qr, reduced, replaceDim, reshape, shapeArg, shapeOf, sliceLen, svd, unify,
} from './shape-ops.js';
import { type Shape, Shaped, formatShape, mulSize, numel } from './sizes.js';

export { type Shape, type Size, formatShape } from './sizes.js';

/** The shape of an op's one result. */
type Rule = (a: Args, kw: Kw, op: string) => Shape | undefined;
/** The shapes of an op's `n` results. */
type MultiRule = (a: Args, kw: Kw, n: number, op: string) => readonly (Shape | undefined)[] | undefined;

// ---------------------------------------------------------------- the rules, one per op

const same: Rule = (a) => shapeOf(a[0]);
const binary: Rule = (a, kw, op) => broadcast(op, shapeOf(a[0]), operand(arg(a, kw, 1, 'other')));
const fromShapeArg = (i: number, name: string): Rule => (a, kw) => shapeArg(arg(a, kw, i, name));
/** A reduction whose `dim` is argument `di` and `keepdim` argument `ki`. */
const reduction = (di: number, ki: number, dflt: unknown = null): Rule => (a, kw) => {
  const dim = arg(a, kw, di, 'dim');
  return reduced(shapeOf(a[0]), dim === undefined ? dflt : dim, arg(a, kw, ki, 'keepdim'));
};

const ELEMENTWISE_BINARY = ['add', 'sub', 'mul', 'div', 'pow', 'remainder', 'maximum', 'minimum', 'atan2', 'floor_divide',
  'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'logical_and', 'logical_or', 'logical_xor'];
const SAME_SHAPE = [
  // elementwise
  'abs', 'ceil', 'cos', 'exp', 'expm1', 'floor', 'gelu', 'isfinite', 'isnan', 'log', 'log1p', 'logical_not', 'neg',
  'reciprocal', 'relu', 'round', 'rsqrt', 'sigmoid', 'sign', 'silu', 'sin', 'sqrt', 'square', 'tanh', 'clamp',
  // casts, copies, random tensors like another
  'to', 'clone', 'contiguous', 'zeros_like', 'ones_like', 'full_like', 'rand_like', 'randn_like', 'bernoulli', 'dropout',
  // along a dim, shape kept
  'cumsum', 'flip', 'roll', 'tril', 'triu', 'softmax', 'log_softmax', 'argsort', 'topk_mask', 'layer_norm',
  'scatter', 'scatter_add', 'scatter_reduce', 'inv', 'cholesky', 'masked_fill',
  // in place: the result is the input
  'add_', 'sub_', 'mul_', 'div_', 'addcmul_', 'addcdiv_', 'lerp_', 'zero_', 'fill_', 'copy_', 'clamp_', 'masked_fill_', 'index_copy_',
];

export const RULES: ReadonlyMap<string, Rule> = new Map<string, Rule>([
  ...ELEMENTWISE_BINARY.map((op) => [op, binary] as const),
  ...SAME_SHAPE.map((op) => [op, same] as const),
  ['where', (a, kw, op) => broadcast(op, broadcast(op, shapeOf(a[0]), operand(arg(a, kw, 1, 'input'))), operand(arg(a, kw, 2, 'other')))],

  // created from a shape
  ['upload', (a, kw) => shapeArg(kw?.shape)],
  ['zeros', fromShapeArg(0, 'shape')], ['ones', fromShapeArg(0, 'shape')], ['full', fromShapeArg(0, 'shape')],
  ['rand', fromShapeArg(0, 'shape')], ['randn', fromShapeArg(0, 'shape')],
  ['randint', fromShapeArg(2, 'shape')], ['normal', fromShapeArg(2, 'shape')],
  ['eye', (a, kw) => {
    const n = arg(a, kw, 0, 'n'), m = arg(a, kw, 1, 'm');
    return isInt(n) && n >= 0 && (m === undefined || m === null || (isInt(m) && m >= 0)) ? [n, (m ?? n) as number] : undefined;
  }],
  ['randperm', (a, kw) => { const n = arg(a, kw, 0, 'n'); return isInt(n) && n >= 0 ? [n] : undefined; }],
  ['linspace', (a, kw) => { const n = arg(a, kw, 2, 'steps'); return isInt(n) && n >= 0 ? [n] : undefined; }],
  ['arange', (a, kw) => {
    let start = arg(a, kw, 0, 'start'), end = arg(a, kw, 1, 'end');
    const step = arg(a, kw, 2, 'step') ?? 1;
    if (end === undefined || end === null) { end = start; start = 0; }
    if (typeof start !== 'number' || typeof end !== 'number' || typeof step !== 'number' || step === 0) return undefined;
    const n = Math.ceil((end - start) / step);
    return Number.isFinite(n) && n >= 0 ? [n] : undefined; // below 0: torch refuses the bounds
  }],

  // reductions
  ...['sum', 'mean', 'prod', 'amax', 'amin', 'all', 'any', 'argmax', 'argmin', 'logsumexp'].map((op) => [op, reduction(1, 2)] as const),
  ['std', reduction(1, 3)], ['var', reduction(1, 3)],
  ['norm', reduction(2, 3)], ['vector_norm', reduction(2, 3)], ['matrix_norm', reduction(2, 3, [-2, -1])],

  // linear algebra
  ['matmul', (a, kw, op) => matmul(op, shapeOf(a[0]), shapeOf(arg(a, kw, 1, 'other')))],
  ['dot', (a, kw, op) => {
    const x = shapeOf(a[0]), y = shapeOf(arg(a, kw, 1, 'other'));
    if (x?.length !== 1 || y?.length !== 1) return undefined;
    unify(op, x[0], y[0], () => `lengths differ: ${formatShape(x)} . ${formatShape(y)}`);
    return SCALAR;
  }],
  ['outer', (a, kw) => {
    const x = shapeOf(a[0]), y = shapeOf(arg(a, kw, 1, 'vec2'));
    return x?.length === 1 && y?.length === 1 ? [x[0], y[0]] : undefined;
  }],
  ['einsum', (a, kw, op) => einsum(op, arg(a, kw, 0, 'equation'), arg(a, kw, 1, 'operands'))],
  ['det', (a) => { const s = shapeOf(a[0]); return s && s.length >= 2 ? s.slice(0, -2) : undefined; }],
  ['svdvals', (a) => svd(shapeOf(a[0]), false)?.[1]],
  ['solve', (a, kw, op) => {
    const A = shapeOf(a[0]), B = shapeOf(arg(a, kw, 1, 'B'));
    if (A === undefined || B === undefined || A.length < 2 || B.length !== A.length) return undefined;
    const batch = broadcast(op, A.slice(0, -2), B.slice(0, -2));
    return batch && [...batch, A[A.length - 1], B[B.length - 1]];
  }],

  // nn
  ['linear', (a, kw, op) => {
    const x = shapeOf(a[0]), w = shapeOf(arg(a, kw, 1, 'weight'));
    if (x === undefined || w === undefined || x.length === 0 || w.length < 1 || w.length > 2) return undefined;
    const inner = w[w.length - 1];
    unify(op, x[x.length - 1], inner, () => `input ${formatShape(x)} has ${x[x.length - 1]} features, weight ${formatShape(w)} takes ${inner}`);
    return w.length === 2 ? [...x.slice(0, -1), w[0]] : x.slice(0, -1);
  }],
  ['conv', (a, kw) => {
    // (N, C_in, *S) or (C_in, *S) by weight (C_out, C_in / groups, *K): each spatial size
    // floor((S + 2p - d(K - 1) - 1) / s) + 1, S itself with 'same'; unknown unless all numbers
    const x = shapeOf(a[0]), w = shapeOf(arg(a, kw, 1, 'weight'));
    if (x === undefined || w === undefined || w.length < 3 || w.length > 5) return undefined;
    const n = w.length - 2;
    if (x.length !== n + 1 && x.length !== n + 2) return undefined;
    const per = (v: unknown, dflt: number): number[] | undefined => {
      const u = v === undefined || v === null ? dflt : v;
      if (isInt(u)) return Array(n).fill(u);
      return Array.isArray(u) && u.length === n && u.every(isInt) ? u as number[] : undefined;
    };
    const stride = per(arg(a, kw, 3, 'stride'), 1), dilation = per(arg(a, kw, 5, 'dilation'), 1);
    const pad = arg(a, kw, 4, 'padding');
    const padding = pad === 'same' || pad === 'valid' ? null : per(pad, 0);
    const spatial = x.slice(-n);
    if (!stride || !dilation || (padding === undefined) || !spatial.every(isInt) || !w.slice(2).every(isInt)) return undefined;
    const out = spatial.map((len, i) => {
      if (pad === 'same') return len as number;
      const p = padding ? padding[i] : 0;
      return Math.floor(((len as number) + 2 * p - dilation[i] * ((w[2 + i] as number) - 1) - 1) / stride[i]) + 1;
    });
    if (out.some((v) => v < 1)) return undefined; // the runtime's error says why
    return [...x.slice(0, x.length - n - 1), w[0], ...out];
  }],
  ['mse_loss', (a, kw) => (arg(a, kw, 2, 'reduction') === 'none' ? shapeOf(a[0]) : SCALAR)],
  ['cross_entropy', (a, kw) => {
    if (arg(a, kw, 4, 'reduction') !== 'none') return SCALAR;
    const x = shapeOf(a[0]), t = shapeOf(arg(a, kw, 1, 'target'));
    return x && t && t.length === x.length - 1 ? t : undefined;
  }],
  ['accuracy', () => SCALAR],

  // shapes
  ['reshape', (a, kw, op) => reshape(op, shapeOf(a[0]), arg(a, kw, 1, 'shape'))],
  ['expand', (a, kw, op) => expand(op, shapeOf(a[0]), arg(a, kw, 1, 'shape'))],
  ['permute', (a, kw) => {
    const s = shapeOf(a[0]), p = intList(arg(a, kw, 1, 'dims'), -Infinity);
    if (s === undefined || p === undefined || p.length !== s.length) return undefined;
    const idx = p.map((d) => dimIn(d, s.length));
    if (idx.some((i) => i === undefined) || new Set(idx).size !== idx.length) return undefined;
    return idx.map((i) => s[i!]);
  }],
  ['transpose', (a, kw) => {
    const s = shapeOf(a[0]);
    if (s === undefined) return undefined;
    const rank = Math.max(s.length, 1), i = dimIn(arg(a, kw, 1, 'dim0'), rank), j = dimIn(arg(a, kw, 2, 'dim1'), rank);
    if (i === undefined || j === undefined) return undefined;
    if (s.length === 0 || i === j) return s;
    const out = s.slice();
    out[i] = s[j];
    out[j] = s[i];
    return out;
  }],
  ['unsqueeze', (a, kw) => {
    const s = shapeOf(a[0]);
    const d = s && dimIn(arg(a, kw, 1, 'dim'), s.length + 1);
    if (s === undefined || d === undefined) return undefined;
    const out = s.slice();
    out.splice(d, 0, 1);
    return out;
  }],
  ['squeeze', (a, kw) => {
    const s = shapeOf(a[0]);
    if (s === undefined) return undefined;
    const dim = arg(a, kw, 1, 'dim');
    const ds = dimsIn(dim, s.length);
    if (!ds) return undefined;
    // a symbolic size may be 1 at run time, and squeezed then
    if (ds.some((i) => typeof s[i] === 'string')) return undefined;
    return s.filter((d, i) => !(d === 1 && ds.includes(i)));
  }],
  ['flatten', (a, kw) => {
    const s = shapeOf(a[0]);
    if (s === undefined) return undefined;
    if (s.length === 0) return [1];
    const i = dimIn(arg(a, kw, 1, 'start_dim') ?? 0, s.length), j = dimIn(arg(a, kw, 2, 'end_dim') ?? -1, s.length);
    if (i === undefined || j === undefined || i > j) return undefined;
    return [...s.slice(0, i), numel(s.slice(i, j + 1)), ...s.slice(j + 1)];
  }],
  ['slice', (a, kw) => {
    const s = shapeOf(a[0]);
    const d = s && dimIn(arg(a, kw, 1, 'dim'), s.length);
    if (s === undefined || d === undefined) return undefined;
    const n = sliceLen(s[d], arg(a, kw, 2, 'start'), arg(a, kw, 3, 'end'), arg(a, kw, 4, 'step'));
    return n === undefined ? undefined : replaceDim(s, d, n);
  }],
  ['narrow', (a, kw) => {
    const s = shapeOf(a[0]), len = arg(a, kw, 3, 'length');
    const d = s && dimIn(arg(a, kw, 1, 'dim'), s.length);
    return s === undefined || d === undefined || !isInt(len) || len < 0 ? undefined : replaceDim(s, d, len);
  }],
  ['repeat', (a, kw) => {
    const s = shapeOf(a[0]), r = intList(arg(a, kw, 1, 'repeats'), 0);
    if (s === undefined || r === undefined || r.length < s.length) return undefined;
    const lead = r.length - s.length;
    return r.map((k, i) => (i < lead ? k : mulSize(s[i - lead], k)));
  }],
  ['diag', (a, kw) => {
    const s = shapeOf(a[0]), k = arg(a, kw, 1, 'diagonal') ?? 0;
    if (s === undefined || !isInt(k) || !s.every(isInt)) return undefined;
    if (s.length === 1) return [s[0] + Math.abs(k), s[0] + Math.abs(k)];
    if (s.length !== 2) return undefined;
    const [m, n] = s as number[];
    return [Math.max(0, k >= 0 ? Math.min(m, n - k) : Math.min(m + k, n))];
  }],
  ['cat', (a, kw, op) => joined(op, arg(a, kw, 0, 'tensors'), arg(a, kw, 1, 'dim'), false)],
  ['stack', (a, kw, op) => joined(op, arg(a, kw, 0, 'tensors'), arg(a, kw, 1, 'dim'), true)],

  // indexing
  ['gather', (a, kw) => shapeOf(arg(a, kw, 2, 'index'))],
  ['index_select', (a, kw) => {
    const s = shapeOf(a[0]), idx = shapeOf(arg(a, kw, 2, 'index'));
    const d = s && dimIn(arg(a, kw, 1, 'dim'), Math.max(s.length, 1));
    if (s === undefined || idx === undefined || d === undefined || idx.length > 1 || s.length === 0) return undefined;
    return replaceDim(s, d, idx.length === 0 ? 1 : idx[0]);
  }],
  ['one_hot', (a, kw) => {
    const s = shapeOf(a[0]), n = arg(a, kw, 1, 'num_classes');
    return s !== undefined && isInt(n) && n >= 0 ? [...s, n] : undefined;
  }],
]);

export const MULTI_RULES: ReadonlyMap<string, MultiRule> = new Map<string, MultiRule>([
  ['max_dim', (a, kw) => { const s = reduction(1, 2)(a, kw, 'max_dim'); return [s, s]; }],
  ['min_dim', (a, kw) => { const s = reduction(1, 2)(a, kw, 'min_dim'); return [s, s]; }],
  ['sort', (a) => { const s = shapeOf(a[0]); return [s, s]; }],
  ['topk', (a, kw) => {
    const s = shapeOf(a[0]), k = arg(a, kw, 1, 'k');
    const d = s && dimIn(arg(a, kw, 2, 'dim') ?? -1, Math.max(s.length, 1));
    if (s === undefined || d === undefined || !isInt(k) || k < 0) return undefined;
    const r = s.length === 0 ? s : replaceDim(s, d, k);
    return [r, r];
  }],
  ['qr', (a, kw) => qr(shapeOf(a[0]), arg(a, kw, 1, 'mode'))],
  ['eigh', (a) => {
    const s = shapeOf(a[0]);
    return s && s.length >= 2 ? [s.slice(0, -1), s] : undefined;
  }],
  ['svd', (a, kw) => svd(shapeOf(a[0]), arg(a, kw, 1, 'full_matrices'))],
  ['split', (a, kw, n) => {
    const s = shapeOf(a[0]), by = arg(a, kw, 1, 'split_size_or_sections');
    const d = s && dimIn(arg(a, kw, 2, 'dim') ?? 0, s.length);
    if (s === undefined || d === undefined) return undefined;
    if (Array.isArray(by)) return pieces(s, intList(by, 0), d, n);
    const size = s[d];
    if (!isInt(by) || by <= 0 || !isInt(size)) return undefined;
    const count = Math.max(1, Math.ceil(size / by));
    return pieces(s, Array.from({ length: count }, (_, i) => Math.min(by, size - i * by)), d, n);
  }],
  ['chunk', (a, kw, n) => {
    const s = shapeOf(a[0]), chunks = arg(a, kw, 1, 'chunks');
    const d = s && dimIn(arg(a, kw, 2, 'dim') ?? 0, s.length);
    if (s === undefined || d === undefined || !isInt(chunks) || chunks <= 0) return undefined;
    const size = s[d];
    if (!isInt(size)) return undefined;
    const each = Math.ceil(size / chunks);
    const count = each === 0 ? chunks : Math.ceil(size / each);
    return pieces(s, Array.from({ length: count }, (_, i) => (each === 0 ? 0 : Math.min(each, size - i * each))), d, n);
  }],
  ['unbind', (a, kw, n) => {
    const s = shapeOf(a[0]);
    const d = s && dimIn(arg(a, kw, 1, 'dim') ?? 0, s.length);
    if (s === undefined || d === undefined || s[d] !== n) return undefined;
    const r = s.filter((_, i) => i !== d);
    return Array.from({ length: n }, () => r);
  }],
]);

/** Whether the SDK knows the shape of `op`'s results (for the error of an unknown shape). */
export function hasShapeRule(op: string): boolean {
  return RULES.has(op) || MULTI_RULES.has(op);
}

/** The first tensor among the arguments (nested in lists too) whose shape is unknown. */
function unknownInput(a: Args): Shaped | undefined {
  for (const v of a) {
    if (v instanceof Shaped) { if (v.sh === undefined) return v; }
    else if (Array.isArray(v)) { const t = unknownInput(v); if (t) return t; }
  }
  return undefined;
}

function give(t: Shaped, s: Shape | undefined, op: string, a: Args): void {
  if (s !== undefined) { t.sh = s; return; }
  // keep the op that lost the shape first, so an error names the root, not the last op
  const from = unknownInput(a);
  t.lost = from ? from.lost : op;
}

/**
 * @internal Runtime.call: give `out`, the results of `op(a, kw)`, their static shapes.
 * A certain mismatch is reported only to a trace's `recorder` (and thrown); in eager code
 * the results are left unknown and the runtime reports the error with the batch, as
 * every other op error is.
 */
export function inferShapes(op: string, a: Args, kw: Kw, out: readonly Shaped[], recorder: { fail(e: LiaisonError): void } | null): void {
  try {
    if (out.length === 1) {
      const rule = RULES.get(op);
      // an op of several results asked for one (a split into one piece) falls through
      if (rule !== undefined) return give(out[0], rule(a, kw, op), op, a);
    }
    const rule = MULTI_RULES.get(op);
    const shapes = rule === undefined ? undefined : rule(a, kw, out.length, op);
    for (let i = 0; i < out.length; i++) give(out[i], shapes !== undefined && shapes.length === out.length ? shapes[i] : undefined, op, a);
  } catch (e) {
    if (!(e instanceof LiaisonError)) throw e;
    if (recorder) {
      recorder.fail(e);
      throw e;
    }
    const why = `${e.message}, so the op fails in the runtime`;
    for (const t of out) t.lost = why;
  }
}

/** Why `t` has no static shape, for an error. */
export function whyUnknown(t: Shaped): string {
  const lost = t.lost;
  if (lost === undefined) return 'no op gave it one';
  if (lost.includes(' ')) return lost; // a sentence: a placeholder's, a program's, or a certain mismatch
  return hasShapeRule(lost)
    ? `op '${lost}' could not tell its result's shape from its arguments (a symbolic size that may be 1, or an argument it does not check)`
    : `op '${lost}' has no shape rule: its result's shape is known only at run time`;
}

