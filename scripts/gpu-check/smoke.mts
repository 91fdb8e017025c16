// CUDA smoke test (run from .gpu/, where pack.sh copies it): start a runtime through the SDK, print its hello, do one matmul.
import { Runtime } from '../bridge/index.js';

const t0 = Date.now();
const rt = await Runtime.start({ inheritStderr: true });
console.log('start_ms', Date.now() - t0);
console.log('info', JSON.stringify(rt.info));
const dev = JSON.stringify(rt.info).match(/"device":"([^"]*)"/)?.[1] ?? '?';
console.log('device', dev);
try {
  const a = rt.tensor(new Float32Array([1, 2, 3, 4]), [2, 2]);
  console.log('matmul', JSON.stringify(await a.matmul(a).relu().tolist())); // expect [[7,10],[15,22]]
} catch (e) {
  console.log('matmul failed', e);
  process.exitCode = 2;
}
await rt.close();
if (!dev.startsWith('cuda')) { console.log('NOT CUDA'); process.exitCode = process.exitCode || 3; }
