/**
 * The building blocks of the shape rules (bridge/shapes.ts): reading an op's arguments,
 * and the shape arithmetic shared by several ops (broadcasting, reductions, matmul, …).
 * Each returns undefined when it cannot be sure and throws E_SHAPE only for a certain
 * mismatch (numbers on both sides).
 */
import { LiaisonError } from './errors.js';
import { type Shape, Shaped, type Size, addSize, divSize, formatShape, numel } from './sizes.js';

export type Args = readonly unknown[];
export type Kw = Readonly<Record<string, unknown>> | undefined;

export const SCALAR: Shape = Object.freeze([]) as Shape;

// ---------------------------------------------------------------- arguments

/** Argument `name`, passed by keyword or at position `i` (undefined: absent, the op's default). */
export function arg(a: Args, kw: Kw, i: number, name: string): unknown {
  const v = kw === undefined ? undefined : kw[name];
  return v !== undefined ? v : a[i];
}

export function shapeOf(v: unknown): Shape | undefined {
  return v instanceof Shaped ? v.sh : undefined;
}

/** A tensor's shape, or () for a number operand. */
export function operand(v: unknown): Shape | undefined {
  if (v instanceof Shaped) return v.sh;
  return typeof v === 'number' || typeof v === 'boolean' ? SCALAR : undefined;
}

export function isInt(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v);
}

export function intList(v: unknown, min: number): number[] | undefined {
  if (!Array.isArray(v)) return undefined;
  for (const x of v) if (!isInt(x) || x < min) return undefined;
  return v as number[];
}

/** A dim in [-rank, rank) as an index, or undefined (the runtime names the bad dim). */
export function dimIn(d: unknown, rank: number): number | undefined {
  if (!isInt(d) || d < -rank || d >= rank) return undefined;
  return d < 0 ? d + rank : d;
}

/** `dim` as a sorted list of distinct indices; null/undefined: every dim. */
export function dimsIn(d: unknown, rank: number): number[] | undefined {
  if (d === null || d === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = isInt(d) ? [d] : intList(d, -Infinity);
  if (!list) return undefined;
  const out: number[] = [];
  for (const x of list) {
    // torch lets a 0-d tensor reduce over dim 0 or -1
    const i = dimIn(x, Math.max(rank, 1));
    if (i === undefined || out.includes(i)) return undefined;
    out.push(i);
  }
  return out;
}

function mismatch(op: string, what: string): never {
  throw new LiaisonError('E_SHAPE', `${op}: ${what}`);
}

// ---------------------------------------------------------------- building blocks

/** Broadcast two sizes; undefined when symbolic sizes leave it open. */
function bcastSize(op: string, x: Size, y: Size, a: Shape, b: Shape): Size | undefined {
  if (x === y || y === 1) return x;
  if (x === 1) return y;
  if (typeof x === 'number' && typeof y === 'number') mismatch(op, `shapes ${formatShape(a)} and ${formatShape(b)} do not broadcast (${x} vs ${y})`);
  // a number n against a name: valid only when the name is n or 1, and either gives n
  if (typeof x === 'number') return x;
  if (typeof y === 'number') return y;
  return undefined;
}

export function broadcast(op: string, a: Shape | undefined, b: Shape | undefined): Shape | undefined {
  if (a === undefined || b === undefined) return undefined;
  if (a === b || b.length === 0) return a;
  if (a.length === 0) return b;
  const n = Math.max(a.length, b.length);
  let same = a.length === b.length; // the common case, a same-shaped operand: no new array
  if (same) for (let i = 0; i < n; i++) if (a[i] !== b[i]) { same = false; break; }
  if (same) return a;
  const out: Size[] = new Array(n);
  for (let i = 0; i < n; i++) {
    const x = i - n + a.length >= 0 ? a[i - n + a.length] : 1;
    const y = i - n + b.length >= 0 ? b[i - n + b.length] : 1;
    const s = bcastSize(op, x, y, a, b);
    if (s === undefined) return undefined;
    out[i] = s;
  }
  return out;
}

/** One size two inputs must share: undefined when symbolic sizes leave it open. */
export function unify(op: string, x: Size, y: Size, what: () => string): Size | undefined {
  if (x === y) return x;
  if (typeof x === 'number' && typeof y === 'number') mismatch(op, what());
  if (typeof x === 'number') return x;
  if (typeof y === 'number') return y;
  return undefined;
}

export function reduced(s: Shape | undefined, dims: unknown, keepdim: unknown): Shape | undefined {
  if (s === undefined) return undefined;
  if (isInt(dims) && s.length > 0) {
    // one dim, the common case (sum(-1), softmax's max): no list of dims to build
    const d = dimIn(dims, s.length);
    if (d === undefined) return undefined;
    const out = s.slice();
    if (keepdim === true) out[d] = 1;
    else out.splice(d, 1);
    return out;
  }
  const all = dims === null || dims === undefined;
  const ds = dimsIn(dims, s.length);
  if (!ds) return undefined;
  if (keepdim === true) return all || s.length === 0 ? s.map(() => 1) : s.map((d, i) => (ds.includes(i) ? 1 : d));
  if (all) return SCALAR;
  return s.filter((_, i) => !ds.includes(i));
}

/** A shape argument: a list of sizes ≥ 0. */
export function shapeArg(v: unknown): Shape | undefined {
  return intList(v, 0);
}

export function replaceDim(s: Shape, d: number, size: Size): Shape {
  const out = s.slice();
  out[d] = size;
  return out;
}

export function matmul(op: string, a: Shape | undefined, b: Shape | undefined): Shape | undefined {
  if (a === undefined || b === undefined || a.length === 0 || b.length === 0) return undefined;
  const k1 = a[a.length - 1], k2 = b.length === 1 ? b[0] : b[b.length - 2];
  unify(op, k1, k2, () => `inner sizes differ: ${formatShape(a)} @ ${formatShape(b)} (${k1} vs ${k2})`);
  if (a.length === 1 && b.length === 1) return SCALAR;
  if (a.length === 1) return [...b.slice(0, -2), b[b.length - 1]];
  if (b.length === 1) return a.slice(0, -1);
  const batch = broadcast(op, a.slice(0, -2), b.slice(0, -2));
  return batch && [...batch, a[a.length - 2], b[b.length - 1]];
}

export function einsum(op: string, eq: unknown, operands: unknown): Shape | undefined {
  if (typeof eq !== 'string' || !Array.isArray(operands) || eq.includes('.')) return undefined;
  const e = eq.replace(/\s+/g, '');
  const [lhs, rhs, extra] = e.split('->');
  if (extra !== undefined) return undefined;
  const terms = lhs.split(',');
  if (terms.length !== operands.length) return undefined;
  const sizes = new Map<string, Size | undefined>();
  const counts = new Map<string, number>();
  for (let k = 0; k < terms.length; k++) {
    const s = shapeOf(operands[k]);
    if (s === undefined || !/^[a-zA-Z]*$/.test(terms[k]) || terms[k].length !== s.length) return undefined;
    for (let i = 0; i < s.length; i++) {
      const l = terms[k][i];
      counts.set(l, (counts.get(l) ?? 0) + 1);
      if (!sizes.has(l)) { sizes.set(l, s[i]); continue; }
      const x = sizes.get(l);
      if (x === undefined) continue;
      // torch.einsum broadcasts a size 1 against the other operands' size of the label
      sizes.set(l, x === 1 ? s[i] : s[i] === 1 ? x : unify(op, x, s[i], () => `subscript '${l}' of '${eq}' is ${x} in one operand and ${s[i]} in operand ${k}`));
    }
  }
  const out = rhs ?? [...counts.keys()].filter((l) => counts.get(l) === 1).sort().join('');
  if (!/^[a-zA-Z]*$/.test(out)) return undefined;
  const shape: Size[] = [];
  for (const l of out) {
    const s = sizes.get(l);
    if (s === undefined) return undefined;
    shape.push(s);
  }
  return shape;
}

export function reshape(op: string, s: Shape | undefined, target: unknown): Shape | undefined {
  const t = intList(target, -1);
  if (!t) return undefined;
  const free = t.indexOf(-1);
  if (free < 0) {
    if (s !== undefined) {
      const n = numel(s), m = numel(t);
      if (typeof n === 'number' && n !== m) mismatch(op, `shape ${formatShape(t)} holds ${m} elements, the input ${formatShape(s)} has ${n}`);
    }
    return t;
  }
  if (t.indexOf(-1, free + 1) >= 0 || s === undefined) return undefined;
  const known = numel(t.filter((_, i) => i !== free));
  const n = numel(s);
  const rest = known === 0 ? undefined : divSize(n, known);
  if (rest === undefined) {
    if (typeof n === 'number' && known !== 0) mismatch(op, `shape ${formatShape(t)} cannot hold the ${n} elements of ${formatShape(s)}`);
    return undefined;
  }
  return replaceDim(t, free, rest);
}

export function expand(op: string, s: Shape | undefined, target: unknown): Shape | undefined {
  const t = intList(target, -1);
  if (!t || s === undefined || t.length < s.length) return undefined;
  const lead = t.length - s.length;
  const out: Size[] = new Array(t.length);
  for (let i = 0; i < t.length; i++) {
    const want = t[i];
    if (i < lead) {
      if (want < 0) return undefined;
      out[i] = want;
      continue;
    }
    const have = s[i - lead];
    if (want === -1 || want === have) out[i] = have;
    else if (have === 1 || typeof have === 'string') out[i] = want; // a name must be 1 or want
    else mismatch(op, `cannot expand ${formatShape(s)} to ${formatShape(t)} (size ${have} to ${want})`);
  }
  return out;
}

export function sliceLen(size: Size, start: unknown, end: unknown, step: unknown): Size | undefined {
  const st = step === undefined || step === null ? 1 : step;
  if (!isInt(st) || st <= 0) return undefined;
  const full = (start === undefined || start === null || start === 0) && (end === undefined || end === null);
  if (typeof size === 'string') return full && st === 1 ? size : undefined;
  const clamp = (v: unknown, dflt: number): number | undefined => {
    if (v === undefined || v === null) return dflt;
    if (!isInt(v)) return undefined;
    return v < 0 ? Math.max(0, v + size) : Math.min(v, size);
  };
  const a = clamp(start, 0), b = clamp(end, size);
  if (a === undefined || b === undefined) return undefined;
  return b <= a ? 0 : Math.ceil((b - a) / st);
}

export function qr(s: Shape | undefined, mode: unknown): (Shape | undefined)[] | undefined {
  if (s === undefined || s.length < 2) return undefined;
  const b = s.slice(0, -2), m = s[s.length - 2], n = s[s.length - 1];
  if (mode === 'complete') return [[...b, m, m], [...b, m, n]];
  if (mode !== undefined && mode !== 'reduced') return undefined;
  const k = minSize(m, n);
  return k === undefined ? undefined : [[...b, m, k], [...b, k, n]];
}

function minSize(m: Size, n: Size): Size | undefined {
  if (m === n) return m;
  return typeof m === 'number' && typeof n === 'number' ? Math.min(m, n) : undefined;
}

export function svd(s: Shape | undefined, full: unknown): (Shape | undefined)[] | undefined {
  if (s === undefined || s.length < 2) return undefined;
  const b = s.slice(0, -2), m = s[s.length - 2], n = s[s.length - 1];
  const k = minSize(m, n);
  const S = k === undefined ? undefined : [...b, k];
  if (full === true) return [[...b, m, m], S, [...b, n, n]];
  return k === undefined ? [undefined, undefined, undefined] : [[...b, m, k], S, [...b, k, n]];
}

export function joined(op: string, list: unknown, dim: unknown, stack: boolean): Shape | undefined {
  if (!Array.isArray(list) || list.length === 0) return undefined;
  const first = shapeOf(list[0]);
  if (first === undefined) return undefined;
  const rank = first.length;
  const d = dimIn(dim ?? 0, stack ? rank + 1 : rank);
  if (d === undefined) return undefined;
  const out = first.slice();
  let along: Size = stack ? list.length : first[d];
  for (let k = 1; k < list.length; k++) {
    const s = shapeOf(list[k]);
    if (s === undefined || s.length !== rank) return undefined; // torch's cat lets a 1-D empty tensor join anything
    for (let i = 0; i < rank; i++) {
      if (!stack && i === d) { along = addSize(along, s[i]); continue; }
      const u = unify(op, out[i], s[i], () => `tensor ${k} has shape ${formatShape(s)}, tensor 0 ${formatShape(first)}: they differ in dim ${i}`);
      if (u === undefined) return undefined;
      out[i] = u;
    }
  }
  if (stack) out.splice(d, 0, along);
  else out[d] = along;
  return out;
}

export function pieces(s: Shape | undefined, sizes: readonly Size[] | undefined, d: number | undefined, n: number): (Shape | undefined)[] | undefined {
  if (s === undefined || sizes === undefined || d === undefined || sizes.length !== n) return undefined;
  return sizes.map((k) => replaceDim(s, d, k));
}

