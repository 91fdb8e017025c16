/**
 * When a tensor's handle on the runtime is dropped: at `t.free()`, at the end of the
 * `scope()` that made it (unless returned or kept), or when the garbage collector takes the
 * last reference to it (a finalizer). Scopes are tracked per async context, so concurrent
 * scopes (and several runtimes) do not see each other's tensors.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Tensor } from './tensor.js';

const scopes = new AsyncLocalStorage<Set<Tensor>>();

/** What the finalizer holds for a tensor (never the tensor itself, which it would keep alive). */
export interface LifeCell { readonly id: number; freed: boolean }

/** The handles of one session: frees each with `release` once its tensor is collected. */
export class Lifetimes {
  private readonly finalizer: FinalizationRegistry<LifeCell>;

  constructor(release: (id: number) => void) {
    this.finalizer = new FinalizationRegistry<LifeCell>((cell) => { if (!cell.freed) release(cell.id); });
  }

  /** A tensor just made on the runtime: the collector frees it, the enclosing scope at its end. */
  track(t: Tensor): void {
    // Registered without an unregister token: V8 then keeps no token table, and
    // register + unregister per tensor was most of what queuing an op cost (bench
    // bridge.batched_ops). An explicit free marks the cell instead.
    const cell: LifeCell = { id: t.id, freed: false };
    t.life = cell;
    this.finalizer.register(t, cell);
    scopes.getStore()?.add(t);
  }

  /** A tensor freed explicitly: its finalizer must not free the handle again. */
  untrack(t: Tensor): void {
    if (t.life) t.life.freed = true;
  }
}

/**
 * Run `fn`; every tensor created inside and not returned (directly, or inside a
 * returned array or object) is freed when it ends. Nested scopes hand returned tensors
 * to the enclosing scope. `t.keep()` exempts a tensor.
 */
export async function scope<T>(fn: () => Promise<T> | T): Promise<T> {
  const made = new Set<Tensor>();
  const keep = new Set<Tensor>();
  try {
    const result = await scopes.run(made, fn);
    collectTensors(result, keep, 2);
    return result;
  } finally {
    // on a throw too: nothing made inside is returned then
    const parent = scopes.getStore();
    for (const t of made) {
      if (keep.has(t) || t.kept) parent?.add(t);
      else if (!t.freed) t.free();
    }
  }
}

function collectTensors(v: unknown, into: Set<Tensor>, depth: number): void {
  if (v instanceof Tensor) into.add(v);
  else if (depth <= 0 || v === null || typeof v !== 'object') return;
  else if (Array.isArray(v)) for (const x of v) collectTensors(x, into, depth - 1);
  else if (isPlainObject(v)) for (const x of Object.values(v)) collectTensors(x, into, depth - 1);
  // anything else (a typed array of results, a Map, a class instance) holds no tensor we track
}

function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}
