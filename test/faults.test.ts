// Bad input and faults: each gets a clear error and the runtime keeps serving.
import { randomBytes } from 'node:crypto';
import { Dealer } from 'zeromq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type ProcessRuntime, Runtime } from '../bridge/index.js';
import { HandleRef, encode, pack, unpack } from '../bridge/protocol.js';
import { alive, startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

async function failure(p: Promise<unknown>): Promise<LiaisonError> {
  const e = await p.then(() => null, (x: unknown) => x);
  expect(e, 'expected a LiaisonError').toBeInstanceOf(LiaisonError);
  return e as LiaisonError;
}

describe('bad ops', () => {
  it('unknown op', async () => {
    const e = await failure((rt.call('definitely_not_an_op', [rt.ones([1])]) as { toArray(): Promise<unknown> }).toArray());
    expect(e.code).toBe('E_UNKNOWN_OP');
    expect(e.message).toMatch(/definitely_not_an_op/);
  });

  it('wrong dtype', async () => {
    const e = await failure(rt.tensor(new Int32Array([1, 2])).softmax(0).toArray());
    expect(e.code).toBe('E_DTYPE');
    expect(e.op).toBe('softmax');
  });

  it('wrong shape', async () => {
    const e = await failure(rt.ones([6]).reshape([4, 2]).toArray());
    expect(e.code).toBe('E_SHAPE');
    expect(e.op).toBe('reshape');
  });

  it('wrong argument kind names the parameter', async () => {
    const e = await failure((rt.call('add', [rt.ones([1]), 'seven']) as { toArray(): Promise<unknown> }).toArray());
    expect(e.code).toBe('E_ARG');
    expect(e.param).toBe('other');
  });

  it('a handle that does not exist, and one whose op failed', async () => {
    const t = rt.ones([2]);
    t.free();
    await rt.flush();
    // the client refuses a freed tensor itself; send its id underneath to see the runtime's answer
    const e = await failure((rt as ProcessRuntime)['conn'].request('batch', { sid: rt.info.sid, ops: [{ op: 'neg', out: [new HandleRef(999_999)], args: [t.ref] }] }));
    expect(e.code).toBe('E_HANDLE');
    expect(e.message).toMatch(/does not exist/);
    const bad = rt.ones([2, 2]).matmul(rt.ones([3, 3]));
    await rt.flush().catch(() => undefined);
    expect(() => bad.add(1)).toThrow(/the op that makes it failed/);
  });

  it('an error in an un-awaited batch surfaces at the next flush', async () => {
    rt.ones([2]).reshape([3]);
    (rt as ProcessRuntime)['queue']['send']();
    const e = await failure(rt.flush());
    expect(e.code).toBe('E_SHAPE');
    await rt.flush(); // reported once
  });

  it('a session the runtime does not know fails fast', async () => {
    const e = await failure((rt as ProcessRuntime)['conn'].request('batch', { sid: 'feedfacefeedface', ops: [] }));
    expect(e.code).toBe('E_SESSION');
  });
});

describe('fuzzed messages', () => {
  it('answers a few thousand random, truncated and mutated messages and keeps serving', async () => {
    const sock = new Dealer({ linger: 0 });
    sock.connect(rt.endpoint);
    const valid = encode({ v: 1, id: 1, kind: 'batch', sid: rt.info.sid, ops: [{ op: 'upload', out: [new HandleRef(7_000_000)], args: [], kw: { dtype: 'f32', shape: [2], frame: 0 } }] }, [Buffer.from(new Float32Array([1, 2]).buffer)]);
    const N = 3000;
    const msgs: Buffer[][] = [];
    for (let i = 0; i < N; i++) {
      const r = i % 6;
      if (r === 0) msgs.push([randomBytes(i % 40)]); // one random frame
      else if (r === 1) msgs.push([randomBytes(1 + (i % 64))]); // random header
      else if (r === 2) { // truncated valid header
        const h = Buffer.from(valid[0]);
        msgs.push([h.subarray(0, 1 + (i % (h.length - 1)))]);
      } else if (r === 3) { // bit flips in a valid header
        const h = Buffer.from(valid[0]);
        for (let k = 0; k < 3; k++) h[(i * 7 + k * 13) % h.length] ^= 1 << ((i + k) % 8);
        msgs.push([h, Buffer.from(valid[1])]);
      } else if (r === 4) { // well-formed msgpack, wrong shapes of fields
        const bad = [{ v: 1, id: i, kind: 'batch', sid: rt.info.sid, ops: 'x' }, { v: 1, id: i, kind: 'batch', sid: rt.info.sid, ops: [{ op: 'add', out: 5, args: {} }] },
          { v: 1, id: i, kind: 'batch', sid: rt.info.sid, ops: [{ op: 'upload', out: [new HandleRef(1)], kw: { dtype: 'f32', shape: [1e9], frame: 0 } }] },
          { v: 1, id: i, kind: 'batch', sid: rt.info.sid, ops: [{ op: 'upload', out: [new HandleRef(1)], kw: { dtype: 'f32', shape: [3], frame: 9 } }] },
          { v: 1, id: i, kind: 'batch', sid: rt.info.sid, ops: [{ op: 'upload', out: [new HandleRef(1)], kw: { dtype: 'f32', shape: [1], shm: '/etc/passwd' } }] },
          { v: 1, id: i, kind: 'batch', sid: rt.info.sid, reads: [1, 2] }, [1, 2, 3], 'just a string', { v: 1, id: i, kind: 'batch', sid: rt.info.sid, ops: [{ op: 'zeros', out: [new HandleRef(2)], args: [[-1]] }] }];
        msgs.push([pack(bad[i % bad.length])]);
      } else { // random number of random frames
        msgs.push(Array.from({ length: 1 + (i % 5) }, (_, k) => randomBytes((i * k) % 100)));
      }
    }
    let replies = 0;
    const codes = new Set<string>();
    const reader = (async () => {
      while (replies < N) {
        const frames = await sock.receive();
        const h = unpack(frames[0]) as { ok: boolean; error?: { code: string } };
        expect(h.ok).toBe(false);
        codes.add(h.error!.code);
        replies++;
      }
    })();
    for (const m of msgs) await sock.send(m);
    await Promise.race([reader, new Promise((_, rej) => setTimeout(() => rej(new Error(`only ${replies}/${N} replies`)), 30_000))]);
    sock.close();
    expect(replies).toBe(N);
    expect([...codes].every((c) => ['E_PROTOCOL', 'E_VERSION', 'E_SESSION', 'E_ARG', 'E_SHAPE', 'E_DTYPE', 'E_UNKNOWN_OP', 'E_HANDLE'].includes(c))).toBe(true);
    expect(codes.has('E_INTERNAL')).toBe(false);
    // still serving, and the same session still works
    expect(await rt.ones([3]).sum().item()).toBe(3);
  });
});

describe('load', () => {
  it('loses none of 200,000 pipelined requests', async () => {
    const N = 200_000;
    let done = 0;
    const all: Promise<void>[] = [];
    for (let i = 0; i < N; i++) all.push(rt.ping().then(() => { done++; }));
    await Promise.all(all);
    expect(done).toBe(N);
  }, 120_000);

  it('keeps the store flat over a million ops', async () => {
    const base = (await rt.stats()).objects;
    let x = rt.zeros([8]).keep();
    for (let round = 0; round < 100; round++) {
      const prev = x;
      x = await rt.scope(async () => {
        let y = x;
        for (let i = 0; i < 5000; i++) y = y.add(1).mul(1);
        return y;
      });
      prev.free();
    }
    expect(await x.sum().item()).toBe(8 * 100 * 5000);
    const s = await rt.stats();
    expect(s.objects).toBeLessThanOrEqual(base + 2);
  }, 300_000);
});

describe('a runtime that dies', () => {
  it('rejects every pending request within a second when killed mid-batch', async () => {
    const victim = await startRuntime();
    const pid = victim.info.pid;
    let m = victim.randn([1500, 1500], { seed: 0 });
    for (let i = 0; i < 40; i++) m = m.matmul(m).tanh(); // seconds of work in one batch
    const pending: Promise<unknown>[] = [m.sum().item(), m.mean().item()];
    await new Promise((r) => setTimeout(r, 10));
    pending.push(victim.ping()); // queued behind the batch
    await new Promise((r) => setTimeout(r, 150));
    const t0 = Date.now();
    process.kill(pid, 'SIGKILL');
    const results = await Promise.allSettled(pending);
    const took = Date.now() - t0;
    expect(took).toBeLessThan(1000);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason.code).toBe('E_DEAD');
    }
    expect(((results[0] as PromiseRejectedResult).reason as Error).message).toMatch(/SIGKILL/);
    await expect(victim.ping()).rejects.toMatchObject({ code: 'E_DEAD' });
    await victim.close();
  });

  it('times out a request that takes too long, and the runtime goes on', async () => {
    const slow = await startRuntime({ timeoutMs: 300 });
    try {
      let m = slow.randn([1200, 1200], { seed: 0 });
      for (let i = 0; i < 40; i++) m = m.matmul(m).tanh();
      const e = await failure(m.sum().item());
      expect(e.code).toBe('E_TIMEOUT');
      expect(e.message).toMatch(/timeoutMs/);
    } finally {
      await slow.close();
    }
  });

  it('declares a runtime that stops answering heartbeats dead', async () => {
    const hb = await startRuntime({ heartbeatMs: 100, heartbeatTimeoutMs: 400 });
    const pid = hb.info.pid;
    try {
      process.kill(pid, 'SIGSTOP'); // alive but silent, as a hung machine would be
      await new Promise((r) => setTimeout(r, 1000));
      const e = await failure(hb.ping());
      expect(e.code).toBe('E_DEAD');
      expect(e.message).toMatch(/heartbeat/);
    } finally {
      process.kill(pid, 'SIGCONT');
      await hb.close();
    }
  });

  it('closing leaves no process behind', async () => {
    const r2 = await startRuntime();
    const pid = r2.info.pid;
    expect(alive(pid)).toBe(true);
    await r2.close();
    expect(alive(pid)).toBe(false);
  });
});

describe('thread settings', () => {
  it('LIAISON_THREADS sizes the runtime, and a bad value stops it with a clear reason', async () => {
    const r = await Runtime.start({ device: 'cpu', env: { LIAISON_THREADS: '1' } });
    try { expect(r.info.threads).toBe(1); } finally { await r.close(); }
    const e = await failure(Runtime.start({ device: 'cpu', env: { LIAISON_THREADS: 'lots' } }));
    expect(e.code).toBe('E_SPAWN');
    expect(e.message).toContain("LIAISON_THREADS must be a positive integer, got 'lots'");
  }, 60_000);
});

describe('values the wire cannot carry', () => {
  it('fail their own request and leave the connection up', async () => {
    const e = await failure((rt.call('full', [[2], 2n ** 70n as unknown as number]) as { toArray(): Promise<unknown> }).toArray());
    expect(e.code).toBe('E_ARG');
    expect(await rt.ones([2]).sum().item()).toBe(2);
  });
});
