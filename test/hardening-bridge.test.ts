// Issue 9, client side: a remote runtime that dies or hangs while requests are pending, the
// session id in the idle heartbeat, and the runtime's message-size limit honoured locally.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Router } from 'zeromq';
import { afterAll, describe, expect, it } from 'vitest';
import { LiaisonError, Runtime } from '../bridge/index.js';
import { Connection } from '../bridge/connection.js';
import { decode, encode, type ReplyHeader } from '../bridge/protocol.js';
import { exitOf, startRuntime, startTcpRuntime } from './helpers.js';

const KEY = 'hardening-bridge-key-0123456789';
const BOUND_MS = 30_000; // generous: only an upper bound is asserted, never a speed

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

/** A runtime on tcp:// with a client whose requests never time out by themselves. */
async function tcpClient(): Promise<{ rt: Runtime; pid: number; endpoint: string }> {
  const server = await startTcpRuntime(KEY);
  cleanups.push(async () => {
    if (server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGCONT');
      server.child.kill('SIGKILL');
    }
    await exitOf(server.child);
  });
  const rt = await Runtime.connect(server.endpoint, { key: KEY, timeoutMs: 0 });
  cleanups.push(() => rt.close());
  return { rt, pid: server.child.pid!, endpoint: server.endpoint };
}

/** A batch that keeps the runtime's one loop busy for a long while. */
function longOp(rt: Runtime): Promise<number> {
  let m = rt.randn([1500, 1500], { seed: 0 });
  for (let i = 0; i < 400; i++) m = m.matmul(m).tanh();
  return m.sum().item();
}

async function allDead(pending: Promise<unknown>[], endpoint: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new Error(`pending requests still unsettled after ${BOUND_MS} ms`)), BOUND_MS); });
  try {
    const results = await Promise.race([Promise.allSettled(pending), bound]);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      const e = (r as PromiseRejectedResult).reason as LiaisonError;
      expect(e).toBeInstanceOf(LiaisonError);
      expect(e.code).toBe('E_DEAD');
      expect(e.message).toContain(endpoint);
    }
  } finally {
    clearTimeout(timer);
  }
}

describe('a tcp runtime that dies with requests pending', () => {
  it('SIGKILL: every pending request, a long op and timeoutMs: 0 included, rejects with E_DEAD', async () => {
    const { rt, pid, endpoint } = await tcpClient();
    expect(await rt.ones([2]).sum().item()).toBe(2);
    const pending: Promise<unknown>[] = [longOp(rt)];
    await new Promise((r) => setTimeout(r, 200)); // the long batch is on the wire
    pending.push(rt.ping(), rt.ones([3]).sum().item());
    process.kill(pid, 'SIGKILL');
    await allDead(pending, endpoint);
    await expect(rt.ping()).rejects.toMatchObject({ code: 'E_DEAD' }); // and it stays dead
  }, 90_000);

  it('SIGSTOP (a hung host: heartbeats stop): every pending request rejects with E_DEAD', async () => {
    const { rt, pid, endpoint } = await tcpClient();
    expect(await rt.ones([2]).sum().item()).toBe(2);
    const pending: Promise<unknown>[] = [longOp(rt)];
    await new Promise((r) => setTimeout(r, 200));
    pending.push(rt.ping(), rt.ones([3]).sum().item());
    process.kill(pid, 'SIGSTOP');
    await allDead(pending, endpoint);
    expect(rt.closed).toBe(true);
  }, 90_000);
});

/**
 * A stand-in runtime: a ROUTER that answers as `answer` says (null: never). Its libzmq I/O
 * thread answers ZMTP heartbeats whatever the JavaScript does, as the real runtime's does
 * while Python computes.
 */
async function fakeRuntime(endpoint: string, key: Uint8Array | undefined, answer: (h: ReplyHeader, buffers: Uint8Array[]) => Record<string, unknown> | null | Promise<Record<string, unknown> | null>) {
  const sock = new Router({ linger: 0, ...(key ? { heartbeatInterval: 2000, heartbeatTimeout: 10_000 } : {}) });
  await sock.bind(endpoint);
  const seen: ReplyHeader[] = [];
  const loop = (async () => {
    for (;;) {
      const [ident, ...frames] = await sock.receive();
      const { header, buffers } = decode(frames, key);
      seen.push(header);
      void Promise.resolve(answer(header, buffers)).then((fields) => {
        if (fields) return sock.send([ident, ...encode({ v: 1, id: header.id, ok: true, ...fields }, [], key)] as Buffer[]);
      }).catch(() => undefined);
    }
  })().catch(() => undefined);
  const bound = sock.lastEndpoint!;
  return { endpoint: bound, seen, close: async () => { sock.close(); await loop; } };
}

function ipcEndpoint(): string {
  const dir = mkdtempSync(join(tmpdir(), 'liaison-hb-'));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return `ipc://${join(dir, 'fake.sock')}`;
}

describe('a busy runtime is not a dead one', () => {
  it('a request unanswered for longer than the ZMTP heartbeat timeout still gets its reply', async () => {
    const key = Buffer.from(KEY);
    const fake = await fakeRuntime('tcp://127.0.0.1:0', key, async (h) => {
      if (h.kind === 'ping') await new Promise((r) => setTimeout(r, 14_000)); // "computing" past the 10 s heartbeat timeout
      return {};
    });
    cleanups.push(() => fake.close());
    const conn = new Connection({ endpoint: fake.endpoint, key, timeoutMs: 0 });
    cleanups.push(() => conn.close());
    const reply = await conn.request('ping');
    expect(reply.header.ok).toBe(true);
    expect(conn.closed).toBe(false);
  }, 60_000);
});

describe('the session and limits from hello', () => {
  /** A stand-in runtime whose hello answers `hello`, and a connection that has said hello to it. */
  async function helloFake(hello: Record<string, unknown>, heartbeatMs = 0) {
    const fake = await fakeRuntime(ipcEndpoint(), undefined, (h) => (h.kind === 'hello' ? hello : {}));
    cleanups.push(() => fake.close());
    const conn = new Connection({ endpoint: fake.endpoint, heartbeatMs });
    cleanups.push(() => conn.close());
    await conn.request('hello');
    return { fake, conn };
  }

  it('the idle heartbeat names the session, so an idle client keeps it', async () => {
    const { fake } = await helloFake({ sid: 'feedfacefeedface' }, 50);
    const deadline = Date.now() + BOUND_MS;
    while (!fake.seen.some((h) => h.kind === 'ping') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const ping = fake.seen.find((h) => h.kind === 'ping');
    expect(ping, 'no heartbeat ping arrived').toBeDefined();
    expect(ping!.sid).toBe('feedfacefeedface');
  });

  it('refuses locally, with E_LIMIT naming size and limit, a message over the runtime\'s max_message_bytes', async () => {
    const { fake, conn } = await helloFake({ sid: 's1', limits: { max_message_bytes: 4096, max_sessions: 64, session_idle_s: 900 } });
    const before = fake.seen.length;
    // buffers alone over the limit
    const e1 = await conn.request('batch', { sid: 's1', ops: [] }, [new Uint8Array(5000)]).catch((e: unknown) => e) as LiaisonError;
    expect(e1.code).toBe('E_LIMIT');
    expect(e1.message).toMatch(/5000 bytes.*4096 bytes.*--max-message-bytes/);
    // buffers under it, header and buffers together over it
    const e2 = await conn.request('batch', { sid: 's1', ops: [], pad: 'x'.repeat(2000) }, [new Uint8Array(3000)]).catch((e: unknown) => e) as LiaisonError;
    expect(e2.code).toBe('E_LIMIT');
    expect(fake.seen.length).toBe(before); // neither was sent
    // at the limit and below still go out, and the connection is fine
    expect((await conn.request('batch', { sid: 's1', ops: [] }, [new Uint8Array(3000)])).header.ok).toBe(true);
    expect(fake.seen.length).toBe(before + 1);
  });

  it('an older runtime without limits: no local check', async () => {
    const { conn } = await helloFake({ sid: 's1' });
    expect((await conn.request('batch', { sid: 's1', ops: [] }, [new Uint8Array(1 << 20)])).header.ok).toBe(true);
  });
});

describe('SpawnOptions.limits', () => {
  it('reach the runtime as flags, and the client honours the size it reports', async () => {
    const rt = await startRuntime({ limits: { maxMessageBytes: 1 << 20, maxSessions: 1, sessionIdleS: 30 }, shm: false });
    cleanups.push(() => rt.close());
    expect((rt.info as unknown as { limits: unknown }).limits).toEqual({ max_message_bytes: 1 << 20, max_sessions: 1, session_idle_s: 30 });
    const e = await rt.tensor(new Float32Array(1 << 19)).sum().item().catch((x: unknown) => x) as LiaisonError;
    expect(e.code).toBe('E_LIMIT');
    expect(e.message).toMatch(/max_message_bytes of 1\.0 MiB \(1048576 bytes\).*--max-message-bytes/);
    expect(await rt.ones([4]).sum().item()).toBe(4); // nothing else was lost
    // the runtime refuses a second session itself
    await expect(Runtime.open(rt.endpoint, undefined, { heartbeatMs: 0 })).rejects.toMatchObject({ code: 'E_LIMIT' });
  });

  it('an idle client keeps its session through the heartbeat; one without heartbeats loses it', async () => {
    const rt = await startRuntime({ limits: { sessionIdleS: 1 }, heartbeatMs: 100 });
    cleanups.push(() => rt.close());
    const silent = await Runtime.open(rt.endpoint, undefined, { heartbeatMs: 0 });
    cleanups.push(() => silent.close());
    const kept = rt.ones([3]).keep();
    const lost = silent.ones([3]).keep();
    expect(await kept.sum().item()).toBe(3);
    expect(await lost.sum().item()).toBe(3);
    await new Promise((r) => setTimeout(r, 3000)); // well past the 1 s idle expiry
    expect(await kept.sum().item()).toBe(3);
    await expect(lost.sum().item()).rejects.toMatchObject({ code: 'E_SESSION' });
  });
});
