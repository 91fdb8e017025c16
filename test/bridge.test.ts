// End to end through a real runtime process: values, dtypes, batching, lifetimes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, Runtime, Tensor } from '../bridge/index.js';
import { settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

describe('a session', () => {
  it('says what it runs on', () => {
    expect(rt.info.device).toBe('cpu');
    expect(rt.info.torch).toMatch(/^2\./);
    expect(rt.info.threads).toBe(1); // startRuntime asks for one
    expect(rt.info.ops).toContain('matmul');
    expect(rt.info.sid).toMatch(/^[0-9a-f]{16}$/);
  });

  it('computes what torch computes', async () => {
    const a = rt.tensor(new Float32Array([1, 2, 3, 4]), [2, 2]);
    const b = rt.tensor([0.5, -1, 2, 0], [2, 2]);
    expect(await a.matmul(b).tolist()).toEqual([[4.5, -1], [9.5, -3]]);
    expect(await a.add(b).mul(2).sub(1).tolist()).toEqual([[2, 1], [9, 7]]);
    expect(await a.sum().item()).toBe(10);
    expect(await a.gt(2).tolist()).toEqual([[0, 0], [1, 1]]);
    expect(await rt.where(a.gt(2), a, b).tolist()).toEqual([[0.5, -1], [3, 4]]);
    const [vals, idx] = rt.tensor([3, 1, 4, 1, 5, 9, 2, 6]).topk(3);
    expect(await vals.tolist()).toEqual([9, 6, 5]);
    expect(await idx.tolist()).toEqual([5, 7, 4]);
    const sm = await rt.tensor([1, 2, 3]).softmax(0).toArray();
    expect(Array.from(sm as Float32Array).reduce((x, y) => x + (y as number), 0)).toBeCloseTo(1, 6);
  });

  it('runs linear algebra', async () => {
    const m = rt.tensor([4, 1, 1, 3], [2, 2], 'f64');
    const [w, v] = m.eigh();
    const wv = (await w.toArray()) as Float64Array;
    expect(wv[0]).toBeCloseTo((7 - Math.sqrt(5)) / 2, 10);
    expect(wv[1]).toBeCloseTo((7 + Math.sqrt(5)) / 2, 10);
    // V diag(w) V^T == M
    const back = v.matmul(rt.einsum('i,ij->ij', w, rt.eye(2).to('f64'))).matmul(v.T);
    const got = (await back.toArray()) as Float64Array;
    [4, 1, 1, 3].forEach((x, i) => expect(got[i]).toBeCloseTo(x, 10));
    const [q, r] = rt.randn([5, 3], { seed: 1 }).qr();
    expect((await q.info()).shape).toEqual([5, 3]);
    expect((await r.info()).shape).toEqual([3, 3]);
  });

  it('round-trips every wire dtype', async () => {
    const cases: [Parameters<Runtime['tensor']>[0], string, unknown[]][] = [
      [new Float32Array([1.5, -2]), 'f32', [1.5, -2]],
      [new Float64Array([1e-300, 3]), 'f64', [1e-300, 3]],
      [new Int32Array([-7, 2 ** 31 - 1]), 'i32', [-7, 2 ** 31 - 1]],
      [new BigInt64Array([-(2n ** 40n), 5n]), 'i64', [-(2 ** 40), 5]],
      [new Uint8Array([0, 255]), 'u8', [0, 255]],
    ];
    for (const [arr, dtype, want] of cases) {
      const t = rt.tensor(arr);
      expect((await t.info()).dtype).toBe(dtype);
      expect(await t.tolist()).toEqual(want);
    }
    expect(await rt.tensor([1, 0, 1], [3], 'bool').tolist()).toEqual([1, 0, 1]);
    expect(await rt.tensor([1, 0, 1], [3], 'bool').logicalNot().tolist()).toEqual([0, 1, 0]);
    // f16 / bf16 convert on the client and come back as Float32Array
    expect(await rt.tensor([0.5, -2, 65504], [3], 'f16').tolist()).toEqual([0.5, -2, 65504]);
    expect(await rt.tensor([1.0078125, 3], [2], 'bf16').tolist()).toEqual([1.0078125, 3]);
    expect(await rt.tensor([0.1], [1], 'f16').to('f32').item()).toBeCloseTo(0.0999755859375, 12);
    expect(await rt.tensor([1, 2], [2], 'f32').to('bf16').mul(3).to('f32').tolist()).toEqual([3, 6]);
  });

  it('moves large tensors intact both ways', async () => {
    const n = 5 << 20; // 20 MiB: over shmMinBytes, so the upload goes through shared memory
    const x = new Float32Array(n);
    for (let i = 0; i < n; i++) x[i] = i % 1000;
    const t = rt.tensor(x);
    const back = (await t.mul(2).toArray()) as Float32Array;
    expect(back.length).toBe(n);
    expect(back[12345]).toBe(2 * (12345 % 1000));
    expect(back[n - 1]).toBe(2 * ((n - 1) % 1000));
    for (const opts of [{ shm: false }, { shmReads: true, shmMinBytes: 1 << 20 }]) {
      const other = await Runtime.start({ device: 'cpu', ...opts });
      try {
        const b2 = (await other.tensor(x).add(1).toArray()) as Float32Array;
        expect(b2[n - 7]).toBe(x[n - 7] + 1);
      } finally {
        await other.close();
      }
    }
  });

  it('queues ops and sends one batch per read', async () => {
    const before = (await rt.stats()).ops_run;
    let x = rt.zeros([4]);
    for (let i = 0; i < 500; i++) x = x.add(1);
    const [a, b] = await Promise.all([x.sum().item(), x.mean().item()]);
    expect(a).toBe(2000);
    expect(b).toBe(500);
    expect((await rt.stats()).ops_run - before).toBe(503);
  });

  it('seeds random numbers', async () => {
    const a = await rt.randn([5], { seed: 7 }).toArray();
    const b = await rt.randn([5], { seed: 7 }).toArray();
    expect(Array.from(a as Float32Array)).toEqual(Array.from(b as Float32Array));
    rt.manualSeed(3);
    const c = await rt.rand([4]).toArray();
    rt.manualSeed(3);
    const d = await rt.rand([4]).toArray();
    expect(Array.from(c as Float32Array)).toEqual(Array.from(d as Float32Array));
  });

  it('updates tensors in place', async () => {
    const p = rt.ones([3]);
    const g = rt.tensor([1, 2, 3]);
    p.sub_(g, 0.5);
    p.mul_(2);
    expect(await p.tolist()).toEqual([1, 0, -1]); // (1 - 0.5 * g) * 2
  });

  it('reports op errors with their op, index and traceback, and keeps serving', async () => {
    const a = rt.ones([2, 3]);
    const b = rt.ones([4, 5]);
    const err = await a.matmul(b).toArray().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_SHAPE');
    expect((err as LiaisonError).op).toBe('matmul');
    expect((err as LiaisonError).message).toMatch(/\[2, 3\].*\[4, 5\]/);
    expect(await a.sum().item()).toBe(6);
  });
});

describe('lifetimes', () => {
  it('scope frees what it made and did not return', async () => {
    const base = await settledObjects(rt);
    const kept = await rt.scope(async () => {
      const a = rt.ones([8]);
      const b = a.mul(2);
      const c = b.add(1);
      await c.toArray();
      return { c };
    });
    expect((await rt.stats()).objects).toBe(base + 1);
    expect(await kept.c.sum().item()).toBe(24);
    kept.c.free();
    await rt.flush();
    expect((await rt.stats()).objects).toBeLessThanOrEqual(base + 1);
  });

  it('nested scopes hand returned tensors outward; keep() survives', async () => {
    const base = await settledObjects(rt);
    let survivor!: Tensor;
    const outer = await rt.scope(async () => {
      const inner = await rt.scope(async () => rt.ones([2]).mul(3));
      survivor = rt.ones([1]).keep();
      return inner.add(1);
    });
    expect(await outer.tolist()).toEqual([4, 4]);
    const n = (await rt.stats()).objects;
    expect(n).toBe(base + 2);
    outer.free();
    survivor.free();
  });

  it('scope frees what it made when its function throws', async () => {
    let inner!: Tensor;
    await expect(rt.scope(async () => { inner = rt.ones([2]); throw new Error('boom'); })).rejects.toThrow('boom');
    expect(inner.freed).toBe(true);
  });

  it('sends an undefined argument as null (the op then names it), not an unreadable request', async () => {
    const t = rt.call('relu', [undefined as never]) as Tensor;
    await expect(t.item()).rejects.toThrow(/relu: argument 'input' must be a tensor, got NoneType/);
  });

  it('refuses freed tensors and tensors of another session', async () => {
    const t = rt.ones([1]);
    t.free();
    expect(() => t.add(1)).toThrow(/freed/);
  });

  it('frees garbage-collected tensors (FinalizationRegistry backstop)', async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    if (!gc) return expect.fail('run vitest with --expose-gc (vitest.config.ts sets it)');
    // Settle garbage left by earlier tests first, and hold the new tensors until they are
    // counted: a collection landing between the loop and the count would free them early.
    gc();
    await new Promise((r) => setTimeout(r, 20));
    const base = (await rt.stats()).objects;
    let held: unknown[] | null = [];
    for (let i = 0; i < 2000; i++) held.push(rt.ones([1]));
    expect((await rt.stats()).objects).toBeGreaterThanOrEqual(base + 2000);
    held = null;
    for (let i = 0; i < 100 && (await rt.stats()).objects > base + 100; i++) { // up to ~2 s on a loaded machine
      gc();
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await rt.stats()).objects).toBeLessThan(base + 100);
  });
});

describe('scopes and large results', () => {
  it('returning a large typed array from a scope costs nothing extra', async () => {
    const big = new Float32Array(16 << 20).fill(2);
    const t0 = performance.now();
    const back = await rt.scope(async () => rt.tensor(big).toArray());
    expect(back.length).toBe(16 << 20);
    expect(performance.now() - t0).toBeLessThan(2500); // walking its 16M elements took ~3 s before (and more under load)
  });
});
