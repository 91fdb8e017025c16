/**
 * Where bridge.batched_ops spends its time (bench/bridge_batched.ts): queuing the ops on the
 * Node side, encoding the batch, and the round trip with the runtime's decode and dispatch.
 *
 *     npx tsx bench/bridge_profile.ts [nOps] [reps]
 */
import { Runtime, type Tensor } from '../bridge/index.js';
import { encode } from '../bridge/protocol.js';
import { opSequence } from './bridge_batched.js';
import { median, nowUs } from './lib.js';

const nOps = Number(process.argv[2] ?? 1000);
const reps = Number(process.argv[3] ?? 40);

function chain(x0: Tensor): Tensor {
  let x = x0;
  for (const [name, arg] of opSequence(nOps)) {
    const y = name === 'add' ? x.add(arg!) : name === 'sub' ? x.sub(arg!) : name === 'mul' ? x.mul(arg!)
      : name === 'relu' ? x.relu() : name === 'tanh' ? x.tanh() : x.sigmoid();
    if (x !== x0) x.free();
    x = y;
  }
  return x;
}

const rt = await Runtime.start();
try {
  const x0 = rt.tensor(Float32Array.from({ length: 256 }, (_, i) => i / 256), [16, 16]);
  await rt.flush();
  const queue: number[] = [], total: number[] = [], enc: number[] = [], ping: number[] = [], inRuntime: number[] = [];
  // the runtime's own time for each batch (reply field `us`: running the ops, without decoding)
  const conn = (rt as unknown as { conn: { request: (...a: unknown[]) => Promise<{ header: Record<string, unknown> }> } }).conn;
  const request = conn.request.bind(conn);
  let lastUs = 0;
  conn.request = async (...a: unknown[]) => {
    const r = await request(...a);
    if (typeof r.header.us === 'number') lastUs = r.header.us;
    return r;
  };
  for (let r = 0; r < reps + 10; r++) {
    const t0 = nowUs();
    const y = chain(x0);
    const t1 = nowUs();
    const ops = (rt as unknown as { queue: { ops: unknown[] } }).queue.ops; // bridge/queue.ts
    const e0 = nowUs();
    encode({ v: 1, id: 1, kind: 'batch', sid: rt.info.sid, ops }, []);
    const e1 = nowUs();
    const t2 = nowUs();
    await y.toArray();
    const t3 = nowUs();
    y.free();
    const p0 = nowUs();
    await rt.ping();
    const p1 = nowUs();
    if (r >= 10) { queue.push(t1 - t0); enc.push(e1 - e0); total.push(t3 - t2 + (t1 - t0)); ping.push(p1 - p0); inRuntime.push(lastUs); }
  }
  const m = (a: number[]) => median(a).toFixed(0);
  console.log(`${nOps} ops: queue ${m(queue)} us, encode ${m(enc)} us, queue+round trip ${m(total)} us (running the ops in the runtime ${m(inRuntime)} us), empty ping ${m(ping)} us`);
} finally {
  await rt.close();
}
