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

/** Tensors waiting to be registered are registered at once past this many (bounds the list in a long synchronous loop). */
const PENDING_MAX = 4096;

/** The handles of one session: frees each with `release` once its tensor is collected. */
export class Lifetimes {
  private readonly finalizer: FinalizationRegistry<LifeCell>;
  /** Tensors made since the last microtask, not yet registered with the finalizer. */
  private pending: Tensor[] = [];

  constructor(release: (id: number) => void) {
    this.finalizer = new FinalizationRegistry<LifeCell>((cell) => { if (!cell.freed) release(cell.id); });
  }

  /** A tensor just made on the runtime: the collector frees it, the enclosing scope at its end. */
  track(t: Tensor): void {
    // V8 keeps every object registered with a FinalizationRegistry alive through young-
    // generation collections, so registering each tensor at once made every temporary of
    // an op chain survive into the old generation (bench bridge.batched_ops: most of the
    // Node side's time was those collections). A tensor is registered at the end of the
    // synchronous run that made it instead, and only if it was not freed by then; until
    // then this list keeps it, so nothing is lost.
    if (this.pending.length === 0) queueMicrotask(() => this.commit());
    this.pending.push(t);
    if (this.pending.length >= PENDING_MAX) this.commit();
    scopes.getStore()?.add(t);
  }

  /** A tensor freed explicitly: its finalizer must not free the handle again. */
  untrack(t: Tensor): void {
    if (t.life) t.life.freed = true; // one not registered yet never will be (commit skips freed tensors)
  }

  /** Register the pending tensors that are still alive. */
  private commit(): void {
    const ts = this.pending;
    if (ts.length === 0) return;
    this.pending = [];
    for (const t of ts) {
      if (t.freed) continue;
      // Registered without an unregister token (V8 then keeps no token table); an explicit
      // free marks the cell instead.
      const cell: LifeCell = { id: t.id, freed: false };
      t.life = cell;
      this.finalizer.register(t, cell);
    }
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
