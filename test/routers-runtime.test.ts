// The router family's runtime side: the standalone `moe` model kind, the three route forms
// at the hook point, batched experts and the router metrics the Trainer reports.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Static, Type } from '@sinclair/typebox';
import type { Runtime, Tensor } from '../bridge/index.js';
import { gd } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import { RouterBase, RouterFields } from '../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec, RouterTraits } from '../sdk/families/routers/types.js';
import { definePlugin } from '../sdk/plugin.js';
import { Model } from '../sdk/model.js';
import { runtimeSpec } from '../sdk/model-spec.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
let dir: string;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'liaison-routers-'));
  rt = await startRuntime({ fileRoot: dir });
});
afterAll(async () => {
  await rt?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Top-k over a softmax gate, in the test's own hands (the shipped routers change under their own helpers). */
const TestTopKConfig = Type.Object({ ...RouterFields, k: Type.Integer({ minimum: 1, default: 1, description: 'experts per token' }) });
class TestTopK extends RouterBase<Static<typeof TestTopKConfig>> {
  override get traits(): RouterTraits { return { routing: 'sparse', k: this.config.k, dropsTokens: false }; }
  params(d: RouterDims): Record<string, RouterParamSpec> { return { gate: { shape: [d.dim, d.experts], init: 'normal', std: 0.5 } }; }
  route(x: Tensor, { gate }: Record<string, Tensor>): RouteResult {
    const probs = x.matmul(gate).softmax(-1); // (N, E)
    const [top, idx] = probs.topk(this.config.k, -1);
    return { weights: probs.mul(0).scatter(1, idx, top), aux: probs.mean(0).pow(2).sum() };
  }
}
const topk = definePlugin({ name: 'test-topk', version: '1.0.0', family: 'router', schema: TestTopKConfig, description: 'top-k (test)', create: (c, m) => new TestTopK(c, m) });

describe('the standalone moe model kind', () => {
  it('sends the router as its parameter specs at dims { dim: inputs, experts }', () => {
    const wire = runtimeSpec({ kind: 'moe', inputs: 5, experts: 3, hidden: 4, router: topk({ k: 2 }), activation: 'tanh', outputBias: true });
    expect(wire).toEqual({ kind: 'moe', inputs: 5, experts: 3, hidden: 4, activation: 'tanh', output_bias: true, params: { gate: { shape: [5, 3], init: 'normal', std: 0.5 } } });
  });

  it('builds, trains with topk and comes back from its checkpoint', async () => {
    const spec = { kind: 'moe', inputs: 4, experts: 3, hidden: 6, router: topk({ k: 2, auxWeight: 0.01 }), bias: true } as const;
    const model = await Model.build(rt, spec, { seed: 0 });
    expect(model.kind).toBe('moe');
    expect(model.hookPoints.router).toBe(1);
    expect(model.params.map((p) => p.name)).toContain('moe.experts.2.proj.weight');
    // a smooth target the MoE can fit: y = sin(x0) + x1·x2
    const n = 128;
    const x = new Float32Array(n * 4);
    const y = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < 4; j++) x[i * 4 + j] = Math.sin(i * 1.7 + j * 2.3) * 1.5;
      y[i] = Math.sin(x[i * 4]) + x[i * 4 + 1] * x[i * 4 + 2];
    }
    const data = Dataset.fromArrays(rt, x, [n, 4], y, [n, 1]);
    const history = await new Trainer({ model, optimizer: gd({ lr: 0.1 }), loss: 'mse', epochs: 6, batchSize: 32, progress: 'none', seed: 0 }).fit(data);
    expect(history[5].loss).toBeLessThan(history[0].loss);
    const path = join(dir, 'moe.safetensors');
    await model.save(path);
    const { model: back } = await Model.fromCheckpoint(rt, path);
    const probe = rt.randn([5, 4], { seed: 1 });
    expect(await back.forward(probe, { train: false }).tolist()).toEqual(await model.forward(probe, { train: false }).tolist());
  });
});
