/**
 * sdk.program_replay: greedy decoding of a GPT-style decoder with the sliding-window KV
 * policy as a traced program (plugins/kv-policies/sliding-window.ts, replayed by the
 * runtime per layer per step) against the same policy hand-written in Python and called
 * by the same model code in a plain Python process (`baselines/kv_decode.py`).
 *
 * Both sides build the model from the same seeded spec; their generated tokens are
 * compared, so they really decoded the same thing. Rounds alternate between the two.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Runtime } from '../bridge/index.js';
import { slidingWindow } from '../plugins/kv-policies/sliding-window.js';
import { Model } from '../sdk/model.js';
import { type BenchOptions, type BenchResult, median, nowUs, removeDir, result, serveBaseline, tempDir, using } from './lib.js';

export async function benchProgramReplay(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const size = opts.quick
      ? { dim: 32, layers: 2, heads: 2, steps: 16, budget: 8, rounds: 1, perRound: 1 }
      : { dim: 128, layers: 4, heads: 4, steps: 256, budget: 64, rounds: 5, perRound: 3 };
    const context = 512;
    const prompt = Array.from({ length: 16 }, (_, i) => (i * 7 + 3) % 128);
    const pySpec = { kind: 'gpt', vocab: 128, context, dim: size.dim, layers: size.layers, heads: size.heads, mlp_ratio: 4, seed: 0 };

    const dir = tempDir();
    defer(() => removeDir(dir));
    const specPath = join(dir, 'decode.json');
    writeFileSync(specPath, JSON.stringify({ model: pySpec, budget: size.budget, prompt: [prompt], steps: size.steps }));
    const baseline = serveBaseline('kv_decode.py', [specPath, '--serve', '--warmup', opts.quick ? '1' : '2'], defer);
    const nextLine = () => baseline.next<Record<string, number | boolean>>();

    const rt = await Runtime.start();
    defer(() => rt.close());
    const model = await Model.build(rt, { kind: 'gpt', vocab: 128, context, dim: size.dim, layers: size.layers, heads: size.heads, mlpRatio: 4 }, { seed: 0 });
    model.setKVPolicy(slidingWindow({ budget: size.budget }));
    const p = rt.tensor(BigInt64Array.from(prompt.map(BigInt)), [1, prompt.length], 'i64');
    const once = async (): Promise<{ us: number; sum: number }> => {
      const t0 = nowUs();
      const out = model.generate(p, { steps: size.steps });
      const data = (await out.toArray()) as BigInt64Array;
      const us = nowUs() - t0;
      out.free();
      let sum = 0;
      for (const v of data) sum += Number(v);
      return { us, sum };
    };
    await nextLine(); // {"ready": true}: model built, warmed up
    for (let i = 0; i < (opts.quick ? 1 : 2); i++) await once();
    const sizes = (await model.kvCacheSize()).tokens;
    if (sizes.some((n) => n > size.budget)) throw new Error(`program_replay: the cache holds ${sizes} tokens, over the budget ${size.budget}`);

    const ours: number[] = [], base: number[] = [];
    let ourSum = NaN, baseSum = NaN;
    for (let r = 0; r < size.rounds; r++) {
      for (let i = 0; i < size.perRound; i++) {
        const o = await once();
        ours.push(o.us);
        ourSum = o.sum;
      }
      baseline.ask(String(size.perRound));
      const m = await nextLine();
      base.push(m.median_us as number);
      baseSum = m.checksum as number;
    }
    if (ourSum !== baseSum) throw new Error(`program_replay: the SDK and the Python baseline generated different tokens (checksum ${ourSum} vs ${baseSum})`);
    const v = median(ours) / 1000, b = median(base) / 1000;
    opts.log(`program_replay: traced policy ${v.toFixed(1)} ms, hand-written Python ${b.toFixed(1)} ms per decode of ${size.steps} tokens (${size.layers} layers, budget ${size.budget})`);
    return [result({
      name: 'sdk.program_replay', value: v, baseline: b, unit: 'ms', target: '<= 1.2x', met: v / b <= 1.2,
      note: `greedy decode of ${size.steps} tokens, ${size.layers}-layer GPT dim ${size.dim}, sliding window ${size.budget}; ${(size.steps * 1000 / v).toFixed(0)} tok/s`,
    })];
  });
}
