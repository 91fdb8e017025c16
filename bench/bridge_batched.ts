/**
 * bridge.batched_ops: 1,000 small chained ops on a (16, 16) f32 tensor, queued by the SDK
 * and sent as one batch with one read, against the identical chain as a plain Python loop
 * over torch (`baselines/loop_ops.py`, kept alive between rounds so the two alternate).
 *
 * The op sequence is written once, here, and handed to the Python side as a file; both
 * sides' results are compared, so the two really ran the same thing.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Runtime, type Tensor } from '../bridge/index.js';
import { trace } from '../sdk/program.js';
import { type BenchOptions, type BenchResult, median, nowUs, removeDir, result, serveBaseline, tempDir, using } from './lib.js';

type Step = [name: 'add' | 'sub' | 'mul' | 'relu' | 'tanh' | 'sigmoid', arg: number | null];

/** Keeps values bounded and mixes binary-with-scalar and unary ops. */
const CYCLE: readonly Step[] = [
  ['add', 0.5], ['mul', 0.9], ['relu', null], ['sub', 0.25],
  ['tanh', null], ['mul', 1.5], ['sigmoid', null], ['add', -0.1],
];

export function opSequence(n: number): Step[] {
  return Array.from({ length: n }, (_, i) => CYCLE[i % CYCLE.length]);
}

function apply(x: Tensor, [name, arg]: Step): Tensor {
  switch (name) {
    case 'add': return x.add(arg!);
    case 'sub': return x.sub(arg!);
    case 'mul': return x.mul(arg!);
    case 'relu': return x.relu();
    case 'tanh': return x.tanh();
    case 'sigmoid': return x.sigmoid();
  }
}

export async function benchBatched(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const nOps = opts.quick ? 100 : 1000;
    const rounds = opts.quick ? 1 : 6;
    const perRound = opts.quick ? 2 : 15;
    const shape = [16, 16];
    const init = Array.from({ length: 256 }, (_, i) => (i % 17) / 8 - 1);
    const seq = opSequence(nOps);

    const dir = tempDir();
    defer(() => removeDir(dir));
    const specPath = join(dir, 'ops.json');
    writeFileSync(specPath, JSON.stringify({ shape, init, ops: seq }));

    const baseline = serveBaseline('loop_ops.py', [specPath, '--serve', '--warmup', opts.quick ? '2' : '30'], defer);
    const nextLine = () => baseline.next<Record<string, number | boolean>>();

    const rt = await Runtime.start();
    defer(() => rt.close());
    await nextLine(); // {"ready": true}: torch imported, warmed up

    const x0 = rt.tensor(Float32Array.from(init), shape);
    await rt.flush();
    const sdkOnce = async (): Promise<{ us: number; sum: number }> => {
      const t0 = nowUs();
      let x = x0;
      for (const step of seq) {
        const y = apply(x, step);
        if (x !== x0) x.free(); // the frees ride in the same batch, after the read
        x = y;
      }
      const out = await x.toArray();
      const us = nowUs() - t0;
      x.free();
      let sum = 0;
      for (const v of out as Float32Array) sum += v;
      return { us, sum };
    };

    // The same chain traced once into a program (sdk/program.ts): one op on the wire, replayed
    // by the runtime without decoding or binding each op again.
    const prog = await trace(rt, { name: 'chain', inputs: { x: {} } }, ({ x }) => seq.reduce(apply, x));
    const progOnce = async (): Promise<{ us: number; sum: number }> => {
      const t0 = nowUs();
      const y = prog.run({ x: x0 });
      const out = await y.toArray();
      const us = nowUs() - t0;
      y.free();
      let sum = 0;
      for (const v of out as Float32Array) sum += v;
      return { us, sum };
    };

    for (let i = 0; i < (opts.quick ? 1 : 20); i++) { await sdkOnce(); await progOnce(); }
    const sdkUs: number[] = [];
    const progUs: number[] = [];
    let progSum = NaN;
    const pyUs: number[] = [];
    let sdkSum = NaN, pySum = NaN;
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < perRound; i++) {
        const { us, sum } = await sdkOnce();
        sdkUs.push(us);
        sdkSum = sum;
        const p = await progOnce();
        progUs.push(p.us);
        progSum = p.sum;
      }
      baseline.ask(String(perRound));
      const m = await nextLine();
      pyUs.push(m.median_us as number);
      pySum = m.checksum as number;
    }
    await rt.flush();
    for (const [what, sum] of [['SDK', sdkSum], ['program', progSum]] as const) {
      if (!(Math.abs(sum - pySum) <= 1e-3 * Math.max(1, Math.abs(pySum)))) {
        throw new Error(`batched_ops: the ${what} and the Python loop disagree (sum ${sum} vs ${pySum}): not the same sequence`);
      }
    }
    const scale = 1000 / nOps;
    const sdk = median(sdkUs) * scale, base = median(pyUs) * scale, replay = median(progUs) * scale;
    opts.log(`batched_ops: sdk ${sdk.toFixed(0)} us / 1000 ops (${median(sdkUs).toFixed(0)} us for ${nOps}), traced program ${replay.toFixed(0)}, python loop ${base.toFixed(0)} us / 1000 ops; checksums ${sdkSum.toFixed(4)} / ${progSum.toFixed(4)} / ${pySum.toFixed(4)}`);
    return [result({
      name: 'bridge.batched_ops', value: sdk, baseline: base, unit: 'us', target: '<= 2x',
      met: sdk / base <= 2,
      note: `us per 1000 ops; ${nOps} chained ops on (16,16) f32, one batch + one read; median of ${sdkUs.length} vs ${rounds}x${perRound}`,
    }), result({
      name: 'bridge.batched_ops_program', value: replay, baseline: base, unit: 'us', target: '<= 2x',
      met: replay / base <= 2,
      note: `the same chain traced once into a program (sdk/program.ts) and replayed: one op on the wire`,
    })];
  });
}
