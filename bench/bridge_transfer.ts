/**
 * A 64 MiB float32 tensor up to the runtime and back (bridge.transfer64mb with the
 * default /dev/shm path, bridge.transfer64mb_socket with `shm: false`), against the same
 * bytes echoed through `baselines/raw_echo.py` as one raw ZeroMQ frame.
 *
 * Throughput counts the bytes moved both ways: 2 x 64 MiB / wall time, in GB/s (1e9 B/s).
 */
import { Runtime } from '../bridge/index.js';
import { type BenchOptions, type BenchResult, median, nowUs, rawDealer, result, startEcho, using } from './lib.js';

export async function benchTransfer(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const n = opts.quick ? 1 << 19 : 16 << 20; // quick: 2 MiB, still above the shm threshold
    const bytes = n * 4;
    const reps = opts.quick ? 2 : 7;
    const warm = opts.quick ? 0 : 2;
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) data[i] = i % 1000;

    const echo = await startEcho();
    defer(() => echo.close());
    const dealer = rawDealer(echo.endpoint);
    defer(() => dealer.close());
    const variants: { name: string; rt: Runtime; times: number[] }[] = [];
    for (const [name, shm] of [['bridge.transfer64mb', true], ['bridge.transfer64mb_socket', false]] as const) {
      if (!opts.wants(name)) continue;
      const rt = await Runtime.start({ shm });
      defer(() => rt.close());
      variants.push({ name, rt, times: [] });
    }

    const check = (out: ArrayLike<number>, what: string) => {
      const k = n - 7;
      if (out.length !== n || out[k] !== data[k]) throw new Error(`${what}: the data came back wrong (${out.length} elements, [${k}] = ${out[k]})`);
    };
    const sdkOnce = async (rt: Runtime, what: string) => {
      const t0 = nowUs();
      const t = rt.tensor(data);
      const out = await t.toArray();
      const ms = (nowUs() - t0) / 1000;
      t.free();
      check(out as Float32Array, what);
      return ms;
    };
    const rawOnce = async () => {
      const t0 = nowUs();
      await dealer.send([Buffer.alloc(0), data]);
      const [, back] = await dealer.receive();
      const ms = (nowUs() - t0) / 1000;
      check(new Float32Array(back.buffer, back.byteOffset, back.byteLength / 4), 'raw echo');
      return ms;
    };

    const raw: number[] = [];
    const steps = [
      async (keep: boolean) => { const ms = await rawOnce(); if (keep) raw.push(ms); },
      ...variants.map((v) => async (keep: boolean) => { const ms = await sdkOnce(v.rt, v.name); if (keep) v.times.push(ms); }),
    ];
    for (let i = 0; i < warm + reps; i++) {
      // rotate the order so that no variant always runs right after the same other one
      for (let k = 0; k < steps.length; k++) await steps[(i + k) % steps.length](i >= warm);
    }
    await Promise.all(variants.map((v) => v.rt.flush())); // send the last frees

    const gbs = (ms: number) => (2 * bytes) / (ms / 1000) / 1e9;
    const f = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(' ');
    const rawMs = median(raw);
    opts.log(`transfer ${bytes >> 20} MiB up+down (ms): raw [${f(raw)}] ${variants.map((v) => `${v.name.endsWith('socket') ? 'socket' : 'default'} [${f(v.times)}]`).join(' ')}`);
    return variants.map((v) => {
      const ms = median(v.times);
      const shm = v.name === 'bridge.transfer64mb';
      const ratio = gbs(ms) / gbs(rawMs);
      return result({
        name: v.name, value: gbs(ms), baseline: gbs(rawMs), unit: 'GB/s',
        target: shm ? '>= 1.0x (>= 3x with shm)' : '>= 1.0x',
        met: ratio >= (shm && v.rt.info.shm ? 3 : 1),
        note: `${bytes >> 20} MiB up+down, median of ${reps}: ${ms.toFixed(1)} vs ${rawMs.toFixed(1)} ms` +
          (shm ? (v.rt.info.shm ? '; shm on (SDK default)' : '; the runtime offers no shm here') : '; shm off'),
      });
    });
  });
}
