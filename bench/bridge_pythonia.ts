/**
 * bridge.vs_pythonia: a 1M-element float32 array to Python and back, through the SDK
 * (upload, download) and through pythonia (a JS array into a Python function that builds a
 * torch tensor and returns it as a list, read back with `valueOf()`).
 *
 * pythonia runs in fast mode (no repr of every returned object): its best case.
 */
import { join } from 'node:path';
import { Runtime } from '../bridge/index.js';
import { BASELINES, type BenchOptions, type BenchResult, median, nowUs, python, result, using } from './lib.js';

interface Pythonia {
  python: ((file: string) => Promise<any>) & { exit(): void; setFastMode(v: boolean): void };
}

export async function benchPythonia(opts: BenchOptions): Promise<BenchResult[]> {
  const n = opts.quick ? 10_000 : 1 << 20;
  const rounds = opts.quick ? 1 : 5;
  const sdkPerRound = opts.quick ? 2 : 6;
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (i % 2000) * 0.25;
  const list = Array.from(data); // what pythonia can send: a plain JS array of numbers

  const check = (out: ArrayLike<number>, what: string) => {
    const k = n - 3;
    if (out.length !== n || out[k] !== data[k]) throw new Error(`${what}: the data came back wrong (${out.length} elements, [${k}] = ${out[k]})`);
  };

  return using(async (defer) => {
    // pythonia spawns its interpreter when the module loads: pick ours first
    process.env.PYTHON_BIN = python();
    const mod = (await import('pythonia')) as unknown as Pythonia & { default?: Pythonia };
    const py = mod.python ?? mod.default!.python;
    defer(() => py.exit());
    py.setFastMode(true);
    const rt = await Runtime.start();
    defer(() => rt.close());
    const pyMod = await py(join(BASELINES, 'pyia_roundtrip.py'));

    const sdkOnce = async () => {
      const t0 = nowUs();
      const t = rt.tensor(data);
      const out = await t.toArray();
      const ms = (nowUs() - t0) / 1000;
      t.free();
      check(out as Float32Array, 'sdk');
      return ms;
    };
    const pyOnce = async () => {
      const t0 = nowUs();
      const res = await pyMod.roundtrip(list);
      const out = (Array.isArray(res) ? res : await res.valueOf()) as number[];
      const ms = (nowUs() - t0) / 1000;
      check(out, 'pythonia');
      return ms;
    };

    await pyOnce(); // warm-up: torch import, first-call paths
    for (let i = 0; i < 3; i++) await sdkOnce();
    const sdkMs: number[] = [];
    const pyMs: number[] = [];
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < sdkPerRound; i++) sdkMs.push(await sdkOnce());
      pyMs.push(await pyOnce());
    }
    await rt.flush();
    const sdk = median(sdkMs), base = median(pyMs);
    opts.log(`vs_pythonia: sdk ${sdk.toFixed(2)} ms, pythonia ${base.toFixed(0)} ms [${pyMs.map((x) => x.toFixed(0)).join(' ')}]: ${(base / sdk).toFixed(0)}x`);
    return [result({
      name: 'bridge.vs_pythonia', value: sdk, baseline: base, unit: 'ms', target: '<= 0.01x',
      met: sdk / base <= 0.01,
      note: `SDK ${(base / sdk).toFixed(0)}x faster; ${n} f32 up+down, median of ${sdkMs.length} vs ${pyMs.length}`,
    })];
  });
}
