/**
 * `npm run demo`: a TypeScript program drives tensors in a PyTorch process.
 *
 * Starts a local runtime (CUDA when present), then: uploads data, fits a least-squares
 * model with a QR decomposition on the runtime, shows that a thousand queued ops cost one
 * round trip, moves 64 MiB each way, and shows what an error looks like. Nothing to start
 * by hand; the runtime stops when the program ends.
 *
 * The same program drives a runtime on another machine when given its endpoint and key:
 *     LIAISON_ENDPOINT=tcp://gpu-box:5555 LIAISON_KEY=… npm run demo
 */
import { LiaisonError, Runtime } from '../bridge/index.js';

const ms = (t0: number) => `${(performance.now() - t0).toFixed(1)} ms`;

async function main(): Promise<void> {
  let t0 = performance.now();
  const remote = process.env.LIAISON_ENDPOINT;
  const rt = remote ? await Runtime.connect(remote) : await Runtime.start();
  console.log(`${remote ? `connected to ${remote}` : 'runtime up'} in ${ms(t0)}: torch ${rt.info.torch} on ${rt.info.device} (pid ${rt.info.pid}), ${rt.info.ops.length} ops`);

  // 1. Values in and out.
  const a = rt.tensor(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
  console.log('\na =', await a.tolist());
  console.log('a @ aᵀ =', await a.matmul(a.T).tolist());
  console.log('softmax(a, -1) =', (await a.softmax(-1).tolist() as number[][]).map((r) => r.map((x) => +x.toFixed(4))));
  const [top, idx] = a.flatten().topk(2);
  console.log('top-2 of a:', await top.tolist(), 'at', await idx.tolist());

  // 2. Least squares on the runtime: y = X w + noise, solved through QR. Only w comes back.
  const n = 2000, d = 8;
  const w = await rt.scope(async () => {
    const X = rt.randn([n, d], { seed: 1 });
    const wTrue = rt.arange(1, d + 1).to('f32').reshape([d, 1]);
    const y = X.matmul(wTrue).add(rt.randn([n, 1], { seed: 2 }).mul(0.01));
    const [Q, R] = X.qr();
    return rt.call('solve', [R, Q.T.matmul(y)]) as ReturnType<typeof rt.ones>; // R w = Qᵀ y
  });
  console.log(`\nleast squares, ${n}×${d}: w =`, (await w.flatten().tolist() as number[]).map((x) => +x.toFixed(3)));

  // 3. Batching: a thousand ops are queued on the client and cost one round trip.
  t0 = performance.now();
  const s = await rt.scope(async () => {
    let x = rt.zeros([64]);
    for (let i = 0; i < 1000; i++) x = x.add(1).mul(0.999);
    return x.mean().item();
  });
  console.log(`\n2,000 queued ops + 1 read: ${ms(t0)} (result ${s.toFixed(4)})`);
  t0 = performance.now();
  for (let i = 0; i < 200; i++) await rt.ping();
  console.log(`one round trip: ${((performance.now() - t0) / 200 * 1000).toFixed(0)} µs`);

  // 4. Bulk transfer: 64 MiB up and back (shared memory on one host).
  const big = new Float32Array(16 << 20).fill(1.5);
  t0 = performance.now();
  const back = await rt.scope(async () => rt.tensor(big).toArray());
  const secs = (performance.now() - t0) / 1000;
  console.log(`64 MiB up and back: ${(secs * 1000).toFixed(0)} ms (${((128 << 20) / secs / 1e9).toFixed(2)} GB/s), intact: ${back[12345] === 1.5}`);

  // 5. Errors come back typed, with the op and the Python traceback; the runtime goes on.
  try {
    await rt.ones([2, 3]).matmul(rt.ones([4, 5])).toArray();
  } catch (e) {
    const err = e as LiaisonError;
    console.log(`\nan error, as it arrives: ${err.code} in op '${err.op}': ${err.message}`);
  }
  console.log('still serving:', await rt.ones([3]).sum().item());

  await rt.close();
  console.log(remote ? '\nsession closed (the remote runtime keeps running).' : '\nruntime stopped.');
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
