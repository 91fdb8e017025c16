// A runtime on tcp://, as on a GPU box: signed messages only, loopback unless told.
import { Dealer } from 'zeromq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, Runtime } from '../bridge/index.js';
import { encode, pack, unpack } from '../bridge/protocol.js';
import { exitOf, startTcpRuntime } from './helpers.js';

const KEY = 'test-key-0123456789abcdef';
let server: Awaited<ReturnType<typeof startTcpRuntime>>;
beforeAll(async () => { server = await startTcpRuntime(KEY); });
afterAll(async () => {
  server?.child.kill('SIGTERM');
  if (server) await exitOf(server.child);
});

async function rawRequest(frames: Uint8Array[]): Promise<Record<string, unknown>> {
  const sock = new Dealer({ linger: 0 });
  sock.connect(server.endpoint);
  await sock.send(frames as Buffer[]);
  const reply = await sock.receive();
  sock.close();
  return unpack(reply[1]) as Record<string, unknown>;
}

describe('tcp runtime', () => {
  it('serves a client with the key', async () => {
    expect(server.endpoint).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    const rt = await Runtime.connect(server.endpoint, { key: KEY });
    try {
      const a = rt.tensor(new Float32Array([1, 2, 3]));
      expect(await a.mul(a).sum().item()).toBe(14);
      expect(rt.info.shm).toBe(false); // never shared memory across machines
      const big = new Float32Array(1 << 20).fill(0.5);
      expect(await rt.tensor(big).sum().item()).toBe(1 << 19);
    } finally {
      await rt.close();
    }
  });

  it('refuses a client without a key before sending anything', async () => {
    const prev = process.env.LIAISON_KEY;
    delete process.env.LIAISON_KEY;
    try {
      await expect(Runtime.connect(server.endpoint)).rejects.toMatchObject({ code: 'E_AUTH' });
    } finally {
      if (prev !== undefined) process.env.LIAISON_KEY = prev;
    }
  });

  it('tells a client with the wrong key why it was refused', async () => {
    const err = await Runtime.connect(server.endpoint, { key: 'not-the-key' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_AUTH');
    expect((err as LiaisonError).message).toMatch(/same key/);
  });

  it('refuses unsigned, wrongly signed, stale and replayed messages', async () => {
    const hello = { v: 1, id: 1, kind: 'hello', ts: Date.now() };
    expect(await rawRequest([pack(hello)])).toMatchObject({ ok: false, error: { code: 'E_AUTH' } });
    expect(await rawRequest(encode(hello, [], Buffer.from('wrong')))).toMatchObject({ ok: false, error: { code: 'E_AUTH' } });
    const stale = { v: 1, id: 2, kind: 'ping', ts: Date.now() - 3_600_000 };
    expect(await rawRequest(encode(stale, [], Buffer.from(KEY)))).toMatchObject({ ok: false, error: { code: 'E_AUTH' } });
    const once = encode({ v: 1, id: 3, kind: 'ping', ts: Date.now() }, [], Buffer.from(KEY));
    expect(await rawRequest(once)).toMatchObject({ ok: true });
    expect(await rawRequest(once)).toMatchObject({ ok: false, error: { code: 'E_REPLAY' } });
    // a signed header with a tampered buffer frame
    const frames = encode({ v: 1, id: 4, kind: 'ping', ts: Date.now() }, [Buffer.from('abcd')], Buffer.from(KEY));
    (frames[2] as Buffer)[0] ^= 0xff; // [signature, header, buffer]
    expect(await rawRequest(frames)).toMatchObject({ ok: false, error: { code: 'E_AUTH' } });
  });
});

describe('binding rules', () => {
  it('refuses tcp without a key', async () => {
    await expect(startTcpRuntime(null)).rejects.toThrow(/needs a key/);
  });

  it('refuses a non-loopback address unless --allow-remote', async () => {
    await expect(startTcpRuntime(KEY, [], '0.0.0.0')).rejects.toThrow(/not a loopback address/);
    const ok = await startTcpRuntime(KEY, ['--allow-remote'], '0.0.0.0');
    expect(ok.endpoint).toMatch(/^tcp:\/\/0\.0\.0\.0:\d+$/);
    ok.child.kill('SIGTERM');
    await exitOf(ok.child);
  });
});

describe('nobody there', () => {
  it('says so clearly when no runtime answers', async () => {
    const err = await Runtime.connect('tcp://127.0.0.1:9', { key: KEY, timeoutMs: 500 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_TIMEOUT');
    expect((err as LiaisonError).message).toMatch(/no runtime answered at tcp:\/\/127\.0\.0\.1:9/);
  });
});
