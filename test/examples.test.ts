// examples/generate.ts runs as a user runs it (a short training run), and the Adam plugin
// it trains with (plugins/momentum/adam.ts) passes its family's conformance suite and computes
// what torch.optim.Adam computes.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../bridge/index.js';
import { adam } from '../plugins/momentum/adam.js';
import { formatReport, runConformance } from '../sdk/conformance/index.js';
import { trace } from '../sdk/program.js';
import { runExample, startRuntime } from './helpers.js';


describe('examples/generate.ts', () => {
  it('trains a GPT on pydoc text, generates from a prompt and compares KV caches', async () => {
    const { code, out, err } = await runExample(['examples/generate.ts', 'def '], { LIAISON_EXAMPLE_STEPS: '60' });
    expect(code, `${out}\n${err}`).toBe(0);
    const num = (re: RegExp) => {
      const m = re.exec(out);
      expect(m, `${re} in:\n${out}`).not.toBeNull();
      return Number(m![1]);
    };
    const before = num(/before training: held-out perplexity ([\d.]+)/);
    const after = num(/after 60 steps \(.*\): held-out perplexity ([\d.]+)/);
    expect(before).toBeGreaterThan(90); // about uniform over 128 bytes
    expect(after).toBeLessThan(before / 2); // sixty steps of Adam already learn the byte frequencies
    expect(out).toMatch(/generated, full cache \(temperature 0\.7, [\d,]+ tokens\/s\):\n {4}def /);
    expect(out).toMatch(/generated, sliding-window budget 16 \(cache now 16 and 16 tokens per layer;/);
    // full cache: 127 tokens per layer after a 128-token window, in 128 slots allocated; each window
    // policy keeps its budget. Per slot, layer and sequence: f32 keys and values (2 x 64 x 4 bytes)
    // and an i64 position per head (4 x 8): 17/16 KiB per 2 layers
    expect(out).toMatch(/full cache +127 tokens +136 KiB +[\d.]+ +[\d,]+/);
    for (const b of [64, 32, 16]) {
      const ppl = num(new RegExp(`sliding-window ${b} +${b} tokens +${(b * 17) / 16} KiB +([\\d.]+) +[\\d,]+`));
      expect(ppl).toBeLessThan(before);
    }
    expect(out).toMatch(/runtime stopped/);
  }, 300_000);
});

describe('plugins/momentum/adam.ts', () => {
  let rt: Runtime;
  beforeAll(async () => { rt = await startRuntime(); });
  afterAll(async () => { await rt?.close(); });

  it('passes the momentum-optimizer conformance suite', async () => {
    const report = await runConformance(adam, { rt });
    expect(report.ok, formatReport(report)).toBe(true);
  }, 30_000);

  it('takes the steps torch.optim.Adam takes, bias corrections included', async () => {
    const opt = adam({ lr: 0.01, beta1: 0.8, beta2: 0.9, eps: 1e-3 });
    const p0 = [0.5, -1, 2, 0];
    const grads = [[1, -2, 0.5, 0], [0.3, 0.1, -4, 1], [-1, 1, 1, 1]];
    const p = rt.tensor(p0);
    const g = rt.zeros([4]);
    const state = opt.init(p, { name: 'p', shape: [4], dtype: 'f32', numel: 4 }, rt);
    const step = await trace(rt, { name: 'adam-step', inputs: { lr: { dtype: 'f32', shape: [] }, t: { dtype: 'f32', shape: [] } } }, ({ lr, t }) => {
      opt.update(p, g, state, { lr, step: t });
    });
    // the reference, in float64: torch.optim.Adam's update as its documentation writes it
    const want = [...p0];
    const m = [0, 0, 0, 0], v = [0, 0, 0, 0];
    for (const [i, grad] of grads.entries()) {
      g.copy_(rt.tensor(grad));
      step.run({ lr: rt.full([], 0.01), t: rt.full([], i + 1) });
      for (let j = 0; j < 4; j++) {
        m[j] = 0.8 * m[j] + 0.2 * grad[j];
        v[j] = 0.9 * v[j] + 0.1 * grad[j] ** 2;
        const mHat = m[j] / (1 - 0.8 ** (i + 1)), vHat = v[j] / (1 - 0.9 ** (i + 1));
        want[j] -= (0.01 * mHat) / (Math.sqrt(vHat) + 1e-3);
      }
      const got = (await p.tolist()) as number[];
      got.forEach((x, j) => expect(x).toBeCloseTo(want[j], 5));
    }
  });
});
