/**
 * Sizes and their arithmetic, for static shapes (bridge/shapes.ts).
 *
 * A size is a number, or a string: a symbolic size named by a program's placeholder
 * (`'B'`), or an expression of such names built by the shape rules — a product (`'B*T'`,
 * from a reshape with -1 or a flatten; the coefficient first, the names sorted) or a sum
 * (`'T+1'`, from a cat). Equal strings are equal sizes; different strings may still be
 * equal, so nothing is ever concluded from two strings differing.
 */

export type Size = number | string;
export type Shape = readonly Size[];

/**
 * What carries a static shape: the base of `Tensor`. The shape rules (bridge/shapes.ts,
 * shape-ops.ts) test for this class, not for `Tensor`, so that tensor.ts can use them
 * without the two modules importing each other.
 */
export class Shaped {
  /** @internal The static shape (bridge/shapes.ts), or undefined when it is not known. */
  sh: Shape | undefined = undefined;
  /** @internal When `sh` is unknown: the op that lost it, or a sentence saying why. */
  lost: string | undefined = undefined;
}

export function formatShape(s: Shape): string {
  return `[${s.join(', ')}]`;
}

/** Split `s` at `sep` outside parentheses. */
function splitTop(s: string, sep: string): string[] {
  const out: string[] = [];
  let depth = 0, from = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if (c === sep && depth === 0) { out.push(s.slice(from, i)); from = i + 1; }
  }
  out.push(s.slice(from));
  return out;
}

/** A product: a numeric coefficient times atoms (names, or parenthesised sums), sorted. */
interface Product { c: number; f: string[] }

function product(s: Size): Product {
  if (typeof s === 'number') return { c: s, f: [] };
  let c = 1;
  const f: string[] = [];
  for (let t of splitTop(s, '*')) {
    t = t.trim();
    if (/^\d+$/.test(t)) c *= Number(t);
    else f.push(splitTop(t, '+').length > 1 ? `(${t})` : t);
  }
  f.sort();
  return { c, f };
}

function fromProduct({ c, f }: Product): Size {
  if (c === 0 || f.length === 0) return c;
  if (c === 1 && f.length === 1) return f[0].startsWith('(') && f[0].endsWith(')') ? f[0].slice(1, -1) : f[0];
  return (c === 1 ? f : [String(c), ...f]).join('*');
}

export function mulSize(x: Size, y: Size): Size {
  if (typeof x === 'number' && typeof y === 'number') return x * y;
  if (x === 1) return y;
  if (y === 1) return x;
  const p = product(x), q = product(y);
  return fromProduct({ c: p.c * q.c, f: [...p.f, ...q.f].sort() });
}

/** x / y when it divides exactly (factors cancel); undefined when that cannot be told. */
export function divSize(x: Size, y: Size): Size | undefined {
  if (typeof x === 'number' && typeof y === 'number') return y !== 0 && x % y === 0 ? x / y : undefined;
  const p = product(x), q = product(y);
  if (q.c === 0 || p.c % q.c !== 0) return undefined;
  const f = [...p.f];
  for (const a of q.f) {
    const i = f.indexOf(a);
    if (i < 0) return undefined;
    f.splice(i, 1);
  }
  return fromProduct({ c: p.c / q.c, f });
}

export function addSize(x: Size, y: Size): Size {
  if (typeof x === 'number' && typeof y === 'number') return x + y;
  if (x === 0) return y;
  if (y === 0) return x;
  let k = 0;
  const terms: string[] = [];
  for (const s of [x, y]) {
    for (const t of typeof s === 'number' ? [String(s)] : splitTop(s, '+')) {
      if (/^\d+$/.test(t.trim())) k += Number(t);
      else terms.push(t.trim());
    }
  }
  if (k) terms.push(String(k));
  return terms.join('+');
}

export function numel(s: Shape): Size {
  let n: Size = 1;
  for (const d of s) n = mulSize(n, d);
  return n;
}

// ---------------------------------------------------------------- a program's outputs, per run

/**
 * The symbolic sizes that `actual` shapes give to the names in a program's placeholder
 * `specs`; a name bound to two different sizes is left out. Undefined when none is bound.
 */
export function bindSizes(specs: readonly (Shape | undefined)[], actual: readonly (Shape | undefined)[]): Map<string, Size> | undefined {
  let env: Map<string, Size> | undefined;
  let clash: Set<string> | undefined;
  for (let i = 0; i < specs.length; i++) {
    const spec = specs[i], s = actual[i];
    if (spec === undefined || s === undefined || spec.length !== s.length) continue;
    for (let j = 0; j < spec.length; j++) {
      const name = spec[j];
      if (typeof name !== 'string' || clash?.has(name)) continue;
      env ??= new Map();
      const prev = env.get(name);
      if (prev === undefined) env.set(name, s[j]);
      else if (prev !== s[j]) { (clash ??= new Set()).add(name); env.delete(name); }
    }
  }
  return env;
}

/** A size expression with the names in `env` replaced; undefined when a name is unbound. */
export function evalSize(expr: string, env: ReadonlyMap<string, Size> | undefined): Size | undefined {
  const bound = env?.get(expr);
  if (bound !== undefined) return bound;
  for (const [sep, op] of [['+', addSize], ['*', mulSize]] as const) {
    const parts = splitTop(expr, sep);
    if (parts.length === 1) continue;
    let acc: Size | undefined = sep === '+' ? 0 : 1;
    for (const p of parts) {
      const v = evalSize(p, env);
      if (v === undefined) return undefined;
      acc = op(acc, v);
    }
    return acc;
  }
  const atom = expr.trim();
  if (/^\d+$/.test(atom)) return Number(atom);
  if (atom.startsWith('(') && atom.endsWith(')')) return evalSize(atom.slice(1, -1), env);
  return env?.get(atom);
}

/** `s` with its symbolic sizes evaluated in `env` (itself when it has none). */
export function evalShape(s: Shape, env: ReadonlyMap<string, Size> | undefined): Shape | undefined {
  let symbolic = false;
  for (const d of s) if (typeof d === 'string') { symbolic = true; break; }
  if (!symbolic) return s;
  const out: Size[] = new Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const d = s[i];
    const v = typeof d === 'number' ? d : evalSize(d, env);
    if (v === undefined) return undefined;
    out[i] = v;
  }
  return out;
}

