// Programs end to end: traced in TypeScript, defined and replayed in a real runtime.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, Runtime, type Tensor } from '../bridge/index.js';
import { define, trace, traceEach } from '../sdk/program.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

describe('programs', () => {
  it('replays traced ops on new inputs and captured tensors', async () => {
    const w = rt.tensor([1, 2, 3, 4], [2, 2]);
    const prog = await trace(rt, { name: 'affine', inputs: { x: { dtype: 'f32', shape: ['N', 2] } } }, ({ x }) => ({
      y: x.matmul(w).add(1).relu(),
      total: x.sum(),
    }));
    expect(prog.size).toBe(4);
    const a = prog.run({ x: rt.tensor([1, -1, 0, 2], [2, 2]) });
    expect(await a.y.tolist()).toEqual([[0, 0], [7, 9]]);
    expect(await a.total.item()).toBe(2);
    const info = await prog.describe();
    expect(info.ops).toEqual(['matmul', 'add', 'relu', 'sum']);
    expect(info.captured).toBe(1);
  });

  it('outlives an enclosing rt.scope() (a scope cannot see into a Program), until free()', async () => {
    const w = rt.tensor([2, 3]);
    const prog = await rt.scope(() => trace(rt, { name: 'scoped', inputs: { x: {} } }, ({ x }) => x.mul(w)));
    expect(await (prog.run({ x: rt.ones([2]) }) as Tensor).tolist()).toEqual([2, 3]); // 'tensor #… was freed' before
    const base = (await rt.stats()).objects;
    prog.free();
    expect((await rt.stats()).objects).toBeLessThan(base);
  });

  it('updates captured tensors in place, as an optimizer step does', async () => {
    const p = rt.tensor([1, 1, 1]);
    const g = rt.tensor([2, 4, 6]);
    const step = await trace(rt, { name: 'sgd', inputs: { lr: { dtype: 'f32', shape: [] } } }, ({ lr }) => { p.sub_(g.mul(lr)); });
    const lr = rt.full([], 0.5);
    step.run({ lr });
    step.run([lr]);
    expect(await p.tolist()).toEqual([-1, -3, -5]);
  });

  it('threads state from run to run', async () => {
    const counter = await trace(rt, { name: 'count', inputs: { x: {} }, state: { n: rt.zeros([]), sum: rt.zeros([2]) } }, ({ x }, s) => {
      s.n = s.n.add(1);
      s.sum = s.sum.add(x);
      return s.sum.div(s.n);
    });
    let mean!: Tensor;
    for (const v of [[1, 2], [3, 4], [5, 6]]) mean = counter.run({ x: rt.tensor(v) });
    expect(await mean.tolist()).toEqual([3, 4]);
    expect(await counter.state('n').item()).toBe(3);
  });

  it('captures data uploaded inside the trace as a constant', async () => {
    const prog = await trace(rt, { name: 'const', inputs: { x: {} } }, ({ x }) => x.mul(rt.tensor([10, 100])));
    expect(await prog.run({ x: rt.tensor([1, 2]) }).tolist()).toEqual([10, 200]);
  });

  it('refuses a value read at trace time, with a clear error', async () => {
    // (the types refuse an async function; plain JavaScript gets the runtime check)
    const branchy = async ({ x }: { x: Tensor }) => ((await x.sum().item()) > 0 ? x : x.neg());
    const err = await trace(rt, { name: 'branchy', inputs: { x: {} } }, branchy as never).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_TRACE');
    expect((err as LiaisonError).message).toMatch(/program 'branchy': reads the value of tensor #\d+.*use where\(\)/s);
  });

  it('refuses reads the traced code did not await, without an unhandled rejection', async () => {
    // vitest fails the run on an unhandled rejection: these must be reported by trace() alone
    const unawaited = await trace(rt, { name: 'careless', inputs: { x: {} } }, ({ x }) => {
      void x.sum().item();
      void x.toArray();
      void rt.flush();
      return x.mul(2);
    }).catch((e: unknown) => e);
    expect((unawaited as LiaisonError).code).toBe('E_TRACE');
    expect((unawaited as LiaisonError).message).toMatch(/program 'careless': reads the value of tensor/);
  });

  it('refuses an async traced function', async () => {
    const asyncFn = async ({ x }: { x: Tensor }) => x;
    const err = await trace(rt, { name: 'async', inputs: { x: {} } }, asyncFn as never).catch((e: unknown) => e);
    expect((err as LiaisonError).message).toMatch(/returned a promise/);
  });

  it('refuses a traced tensor used outside its program', async () => {
    let leaked!: Tensor;
    await trace(rt, { name: 'leaky', inputs: { x: {} } }, ({ x }) => { leaked = x.add(1); return leaked; });
    expect(() => leaked.mul(2)).toThrow(/belongs to the trace of program 'leaky'/);
    await expect(leaked.toArray()).rejects.toThrow(/E_TRACE|program 'leaky'/);
  });

  it('reports a bad op at definition, naming it', async () => {
    const err = await trace(rt, { name: 'bad', inputs: { x: {} } }, ({ x }) => x.softmax(7).add(1)).then(
      () => null, (e: unknown) => e);
    // softmax's dim is checked when it runs (it depends on the rank), so this one is caught at run time
    if (err === null) {
      const prog = await trace(rt, { name: 'bad2', inputs: { x: {} } }, ({ x }) => x.softmax(7).add(1));
      await expect(prog.run({ x: rt.tensor([1, 2]) }).toArray()).rejects.toThrow(/program 'bad2', op 0 \(softmax\)/);
    }
    const unknown = await trace(rt, { name: 'unknown', inputs: { x: {} } }, ({ x }) => rt.call('no_such_op', [x]) as Tensor).catch((e: unknown) => e);
    expect((unknown as LiaisonError).code).toBe('E_UNKNOWN_OP');
    expect((unknown as LiaisonError).message).toMatch(/program 'unknown', op 0: unknown op 'no_such_op'/);
  });

  it('checks inputs against their specs at every run', async () => {
    const prog = define(rt, { name: 'typed', inputs: { x: { dtype: 'f32', shape: ['N', 3] } } }, ({ x }) => x.relu());
    await expect(prog.run({ x: rt.zeros([2, 4]) }).toArray()).rejects.toThrow(/input x must have shape \(N, 3\), got \[2, 4\]/);
    expect(() => prog.run({} as never)).toThrow(/input 'x' is missing/);
  });

  it('replays a thousand-op program as one op on the wire, with the batch\'s result', async () => {
    // (how much faster that is is a benchmark's question: bridge.batched_ops_program)
    const x0 = rt.ones([8]);
    const body = (x: Tensor) => { let y = x; for (let i = 0; i < 1000; i++) y = y.mul(1.0001).add(0.0001); return y; };
    const prog = await trace(rt, { name: 'long', inputs: { x: {} } }, ({ x }) => body(x));
    const ran = async () => (await rt.stats()).ops_run;
    const before = await ran();
    const replayed = await prog.run({ x: x0 }).toArray();
    const afterReplay = await ran();
    const batched = await body(x0).toArray();
    const afterBatch = await ran();
    expect(afterReplay - before).toBe(1);
    expect(afterBatch - afterReplay).toBe(2000);
    expect(replayed).toEqual(batched);
  });
});

describe('traceEach: one computation per item, replayed side by side', () => {
  it('marks a group the runtime fuses after the first run (describe() shows it), with the values of the ops as written', async () => {
    const params = [rt.ones([3, 2]), rt.ones([4]), rt.ones([2, 2, 2])];
    const bufs = params.map((p) => p.mul(0));
    const prog = await trace(rt, { name: 'momentum-like', inputs: { lr: { dtype: 'f32', shape: [] } } }, ({ lr }) => {
      traceEach(rt, params, (p, i) => {
        bufs[i].mul_(0.5).add_(p); // b ← 0.5·b + p
        p.addcmul_(bufs[i], lr, -1); // p ← p − lr·b
      });
    });
    expect((await prog.describe()).ops).toEqual(Array(3).fill(['mul_', 'add_', 'addcmul_']).flat());
    let want = 1, b = 0;
    for (let s = 0; s < 3; s++) {
      prog.run({ lr: rt.full([], 0.25) });
      b = 0.5 * b + want;
      want -= 0.25 * b;
    }
    expect((await prog.describe()).ops).toEqual(['mul_', 'add_', 'addcmul_'].map((n) => `${n} (fused over 3 segments)`));
    for (const p of params) for (const v of (await p.data()).data as Float32Array) expect(v).toBeCloseTo(want, 6);
    prog.free();
  });

  it('outside a trace, and inside another traceEach, is a plain loop', async () => {
    const seen: number[] = [];
    traceEach(rt, [10, 20], (x, i) => { seen.push(x + i); });
    expect(seen).toEqual([10, 21]);
    const ts = [rt.ones([2]), rt.ones([2])];
    const prog = await trace(rt, { name: 'nested' }, () => {
      traceEach(rt, [0, 1], (i) => { traceEach(rt, ts, (t) => { t.add_(i); }); });
    });
    prog.run();
    prog.run();
    // the outer calls differ in their constants (0 and 1): they stay as written, and still compute
    expect(await ts[0].tolist()).toEqual([3, 3]);
    prog.free();
  });
});
