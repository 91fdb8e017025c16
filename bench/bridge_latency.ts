/**
 * Tiny requests: one at a time (bridge.roundtrip) and many in flight (bridge.pipelined).
 *
 * Baseline: a zeromq.js DEALER talking to `baselines/raw_echo.py` (a bare pyzmq ROUTER that
 * echoes), with messages the size of the SDK's ping reply, no msgpack. The SDK and the
 * baseline run in alternating rounds in the same process, so that a noisy neighbour costs
 * both sides alike.
 */
import type { Dealer } from 'zeromq';
import { Runtime } from '../bridge/index.js';
import { pack } from '../bridge/protocol.js';
import { type BenchOptions, type BenchResult, median, nowUs, quantile, rawDealer, result, startEcho, using } from './lib.js';

/** A raw message as large as the larger of the SDK's ping request and reply. */
function rawPing(): Buffer[] {
  const req = pack({ v: 1, id: 123456, kind: 'ping' });
  const rep = pack({ stats: { sessions: 1, objects: 0, ops_run: 0 }, v: 1, id: 123456, ok: true });
  return [Buffer.alloc(Math.max(req.length, rep.length), 0x61)]; // one frame, as the SDK's unsigned messages
}

export async function benchLatency(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const echo = await startEcho();
    defer(() => echo.close());
    const rt = await Runtime.start();
    defer(() => rt.close());
    const sock = rawDealer(echo.endpoint);
    defer(() => sock.close());
    const out: BenchResult[] = [];
    if (opts.wants('bridge.roundtrip')) out.push(await roundtrip(rt, sock, opts));
    if (opts.wants('bridge.pipelined')) out.push(await pipelined(rt, sock, opts));
    return out;
  });
}

/** Median latency of one `await rt.ping()` against one raw send + receive. */
async function roundtrip(rt: Runtime, sock: Dealer, opts: BenchOptions): Promise<BenchResult> {
  const msg = rawPing();
  const warm = opts.quick ? 5 : 1000;
  const rounds = opts.quick ? 1 : 6;
  const perRound = opts.quick ? 20 : 1000;
  const sdkLat: number[] = [];
  const rawLat: number[] = [];
  const sdkOnce = async () => { const t = nowUs(); await rt.ping(); return nowUs() - t; };
  const rawOnce = async () => { const t = nowUs(); await sock.send(msg); await sock.receive(); return nowUs() - t; };
  for (let i = 0; i < warm; i++) { await sdkOnce(); await rawOnce(); }
  for (let r = 0; r < rounds; r++) {
    // alternate which side goes first, so neither always follows the other's wake-ups
    const [first, second, a, b] = r % 2 ? [rawOnce, sdkOnce, rawLat, sdkLat] : [sdkOnce, rawOnce, sdkLat, rawLat];
    for (let i = 0; i < perRound; i++) a.push(await first());
    for (let i = 0; i < perRound; i++) b.push(await second());
  }
  const sdkUs = median(sdkLat), rawUs = median(rawLat);
  const p90 = `p90 ${quantile(sdkLat, 0.9).toFixed(0)} vs ${quantile(rawLat, 0.9).toFixed(0)} us`;
  opts.log(`roundtrip: sdk median ${sdkUs.toFixed(1)} us, raw ${rawUs.toFixed(1)} us; ${p90}`);
  return result({
    name: 'bridge.roundtrip', value: sdkUs, baseline: rawUs, unit: 'us', target: '<= 1.3x',
    met: sdkUs / rawUs <= 1.3,
    note: `median of ${sdkLat.length} each; ${p90}`,
  });
}

/**
 * Completions per second with N pings fired at once (the Connection keeps at most
 * `maxInFlight` on the wire), against a raw sender keeping 256 messages in flight.
 */
async function pipelined(rt: Runtime, sock: Dealer, opts: BenchOptions): Promise<BenchResult> {
  const msg = rawPing();
  const N = opts.quick ? 300 : 50_000;
  const window = 256;
  const rounds = opts.quick ? 1 : 3;
  const sdkRate: number[] = [];
  const rawRate: number[] = [];
  const sdkBurst = async () => {
    const t = nowUs();
    const all: Promise<void>[] = new Array(N);
    for (let i = 0; i < N; i++) all[i] = rt.ping();
    await Promise.all(all);
    return N / ((nowUs() - t) / 1e6);
  };
  const rawBurst = async () => {
    const t = nowUs();
    let sent = 0, got = 0;
    let wake = null as (() => void) | null; // set by the sender while it waits for room
    const reader = (async () => {
      while (got < N) {
        await sock.receive();
        got++;
        if (wake) { const w = wake; wake = null; w(); }
      }
    })();
    while (sent < N) {
      if (sent - got >= window) { await new Promise<void>((res) => { wake = res; }); continue; }
      await sock.send(msg);
      sent++;
    }
    await reader;
    return N / ((nowUs() - t) / 1e6);
  };
  if (!opts.quick) { await sdkBurst(); await rawBurst(); } // warm-up
  for (let r = 0; r < rounds; r++) {
    if (r % 2) { rawRate.push(await rawBurst()); sdkRate.push(await sdkBurst()); }
    else { sdkRate.push(await sdkBurst()); rawRate.push(await rawBurst()); }
  }
  const sdkPs = median(sdkRate), rawPs = median(rawRate);
  const f = (xs: number[]) => xs.map((x) => x.toFixed(0)).join(' ');
  opts.log(`pipelined: sdk [${f(sdkRate)}] req/s; raw, window ${window} [${f(rawRate)}] req/s`);
  return result({
    name: 'bridge.pipelined', value: sdkPs, baseline: rawPs, unit: 'req/s', target: '>= 50000/s',
    met: sdkPs >= 50_000,
    note: `${N} pings at once, median of ${rounds}; absolute target ${sdkPs >= 50_000 ? 'met' : 'NOT met'}`,
  });
}
