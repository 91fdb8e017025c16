/**
 * Worker states, messages and views are trees: tensors inside arrays and plain objects,
 * with numbers, strings, booleans and null as the other leaves. The coordinator walks them
 * to free what a round no longer holds and to count the bytes that cross the boundary; the
 * batched placement flattens them into a program's inputs and outputs.
 */
import { type DType, ITEMSIZE, LiaisonError, Tensor } from '../../bridge/index.js';

/** Every tensor in a tree, in a fixed order (depth first, object keys in insertion order). */
export function tensorsOf(tree: unknown, out: Tensor[] = []): Tensor[] {
  if (tree instanceof Tensor) out.push(tree);
  else if (Array.isArray(tree)) for (const x of tree) tensorsOf(x, out);
  else if (isPlain(tree)) for (const x of Object.values(tree)) tensorsOf(x, out);
  return out;
}

function isPlain(x: unknown): x is Record<string, unknown> {
  if (x === null || typeof x !== 'object') return false;
  const p = Object.getPrototypeOf(x);
  return p === Object.prototype || p === null;
}

/**
 * Bytes of the tensors of a tree as their static shapes say (numel × the dtype's item
 * size); null when some tensor's shape is not known client-side or is symbolic.
 */
export function treeBytes(tree: unknown, dtype: DType): number | null {
  let n = 0;
  for (const t of tensorsOf(tree)) {
    const s = t.shape;
    if (!s || s.some((d) => typeof d !== 'number')) return null;
    n += (s as number[]).reduce((a, b) => a * b, 1) * ITEMSIZE[dtype];
  }
  return n;
}

/**
 * A tree's skeleton (its tensors replaced by a marker, the other leaves kept) as a string:
 * two trees with the same skeleton and same tensor shapes replay the same traced program.
 */
export function skeleton(tree: unknown, id: string): string {
  return JSON.stringify(tree, function (this: Record<string, unknown>, k: string) {
    const v = k === '' ? tree : this[k]; // before any toJSON
    if (v instanceof Tensor) return { '@tensor': v.shape ?? null };
    if (v === undefined || typeof v === 'function' || typeof v === 'symbol' || typeof v === 'bigint') {
      throw new LiaisonError('E_ARG', `${id}: worker states, messages and views hold tensors, arrays, plain objects, numbers, strings, booleans and null; got a ${typeof v}`);
    }
    if (typeof v === 'object' && v !== null && !Array.isArray(v) && !isPlain(v)) {
      throw new LiaisonError('E_ARG', `${id}: worker states, messages and views hold plain objects only; got a ${(v as object).constructor?.name ?? 'class instance'}`);
    }
    return v;
  });
}

/** The tree with its tensors replaced, in {@link tensorsOf}'s order, by `next()`'s. */
export function rebuild<T>(tree: T, next: () => Tensor): T {
  if (tree instanceof Tensor) return next() as T;
  if (Array.isArray(tree)) return tree.map((x) => rebuild(x, next)) as T;
  if (isPlain(tree)) return Object.fromEntries(Object.entries(tree).map(([k, x]) => [k, rebuild(x, next)])) as T;
  return tree;
}

/** Free the tensors of `old` that `now` does not hold (a round hands back some of its inputs unchanged). */
export function freeReplaced(old: unknown, now: unknown): void {
  const held = new Set(tensorsOf(now));
  for (const t of tensorsOf(old)) if (!held.has(t)) t.free();
}
