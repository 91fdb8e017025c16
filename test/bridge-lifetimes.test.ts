/**
 * bridge/lifetimes.ts: a tensor's handle is freed once — by `free()`, its scope, or the
 * garbage collector — never twice, and a collected tensor that was never freed still is;
 * a read of a tensor that cannot be read rejects instead of throwing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ProcessRuntime, Tensor } from '../bridge/index.js';
import { startRuntime } from './helpers.js';

let rt: ProcessRuntime;
beforeAll(async () => { rt = (await startRuntime()) as ProcessRuntime; });
afterAll(async () => { await rt?.close(); });

/** Count the handle frees the session queues (bridge/queue.ts). */
function countFrees(): { ids: number[]; stop: () => void } {
  const queue = rt['queue'];
  const orig = queue.free.bind(queue);
  const ids: number[] = [];
  queue.free = (id: number) => { ids.push(id); orig(id); };
  return { ids, stop: () => { queue.free = orig; } };
}

async function collect(until: () => boolean): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (!gc) expect.fail('run vitest with --expose-gc (vitest.config.ts sets it)');
  for (let i = 0; i < 100 && !until(); i++) { // up to ~2 s on a loaded machine
    gc();
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('lifetimes', () => {
  it('frees a handle once when a freed tensor is later collected', async () => {
    const frees = countFrees();
    try {
      let freedIds: number[] = [];
      let collectedIds: number[] = [];
      (() => {
        const freed = Array.from({ length: 200 }, () => rt.ones([1]));
        const dropped = Array.from({ length: 200 }, () => rt.ones([1]));
        for (const t of freed) t.free();
        freedIds = freed.map((t) => t.id);
        collectedIds = dropped.map((t) => t.id);
      })();
      await rt.flush();
      await collect(() => collectedIds.every((id) => frees.ids.includes(id)));
      await rt.flush();
      const times = (id: number) => frees.ids.filter((x) => x === id).length;
      expect(collectedIds.filter((id) => times(id) !== 1)).toEqual([]); // the collector freed each dropped one
      expect(freedIds.filter((id) => times(id) !== 1)).toEqual([]); // and no freed one a second time
    } finally {
      frees.stop();
    }
  });

  it('registers with the finalizer only the tensors still alive after the run that made them', async () => {
    // a registered object survives V8's young-generation collections: temporaries freed at
    // once must not be registered, or every op chain fills the old generation
    let x = rt.ones([4]);
    const temps: Tensor[] = [];
    for (let i = 0; i < 50; i++) { const y = x.add(1); if (i > 0) { x.free(); temps.push(x); } x = y; }
    const first = temps.length ? rt.ones([1]) : undefined;
    await Promise.resolve(); // the end of the synchronous run
    expect(temps.filter((t) => t.life !== undefined)).toEqual([]);
    expect(x.life).toBeDefined();
    expect(first!.life).toBeDefined();
    expect(await x.tolist()).toEqual([51, 51, 51, 51]);
  });

  it('a scope frees what it made and not what it returns or keeps', async () => {
    const frees = countFrees();
    try {
      let inner: number[] = [];
      const [ret, kept] = await rt.scope(() => {
        const a = rt.ones([2]);
        const b = a.add(1);
        const k = rt.zeros([1]).keep();
        inner = [a.id, b.id];
        return [b.mul(2), k] as const;
      });
      expect(frees.ids.sort()).toEqual(inner.sort());
      expect(ret.freed || kept.freed).toBe(false);
      expect(await ret.tolist()).toEqual([4, 4]);
    } finally {
      frees.stop();
    }
  });
});

describe('reads of a tensor that cannot be read', () => {
  it('reject rather than throw (a freed tensor)', async () => {
    const t = rt.ones([2]);
    t.free();
    let p: Promise<unknown> | undefined;
    expect(() => { p = t.toArray(); }).not.toThrow();
    await expect(p).rejects.toMatchObject({ code: 'E_HANDLE', message: expect.stringMatching(/freed/) });
    let q: Promise<unknown> | undefined;
    expect(() => { q = t.info(); }).not.toThrow();
    await expect(q).rejects.toMatchObject({ code: 'E_HANDLE' });
  });
});

describe('the connection keeps nothing it has sent', () => {
  it('a sent request (its op records and upload bytes) leaves the send queue', async () => {
    const data = new Float32Array(1 << 10).fill(3);
    const t = rt.tensor(data);
    expect(await t.sum().item()).toBe(3 * (1 << 10));
    await rt.ping();
    // held there, it kept every batch's records and upload bytes alive until 4096 more requests had gone
    const queue = (rt['conn'] as unknown as { queue: unknown[] }).queue;
    expect(queue.filter((m) => m !== undefined)).toEqual([]);
  });
});
