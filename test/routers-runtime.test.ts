// The router family's runtime side: the standalone `moe` model kind, the three route forms
// at the hook point, batched experts and the router metrics the Trainer reports.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Static, Type } from '@sinclair/typebox';
import type { Runtime, Tensor } from '../bridge/index.js';
import { gd } from '../plugins/index.js';
import { Dataset, TextCorpus } from '../sdk/data.js';
import type { EpochResult, ProgressEvent } from '../sdk/trainer-types.js';
import { RouterBase, RouterFields } from '../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec, RouterTraits } from '../sdk/families/routers/types.js';
import { definePlugin } from '../sdk/plugin.js';
import { LiaisonError } from '../bridge/index.js';
import { routerProgram } from '../sdk/families/routers/base.js';
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
  route(x: Tensor, { gate }: Record<string, Tensor>, _d?: RouterDims): RouteResult {
    const probs = x.matmul(gate).softmax(-1); // (N, E)
    const [top, idx] = probs.topk(this.config.k, -1);
    return { weights: probs.mul(0).scatter(1, idx, top), aux: probs.mean(0).pow(2).sum() };
  }
}
/** Expert choice ('indices'): each expert takes its 2 most probable tokens. */
class TestChoice extends TestTopK {
  override get traits(): RouterTraits { return { form: 'indices', routing: 'sparse', capacity: 1, dropsTokens: true }; }
  override route(x: Tensor, { gate }: Record<string, Tensor>): RouteResult {
    const probs = x.matmul(gate).softmax(-1); // (N, E)
    const [gates, indices] = probs.transpose(0, 1).topk(2, -1); // (E, C)
    return { indices, gates, probs };
  }
}
/** Soft MoE ('slots'), one slot per expert. */
class TestSlots extends TestTopK {
  override get traits(): RouterTraits { return { form: 'slots', routing: 'dense', slots: 1, dropsTokens: false }; }
  override route(x: Tensor, { gate }: Record<string, Tensor>, d?: RouterDims): RouteResult {
    const logits = x.matmul(gate).reshape([-1, d!.experts, 1]); // (N, E, S)
    return { dispatch: logits.softmax(0), combine: logits.softmax(1), zloss: logits.logsumexp(1).pow(2).mean() };
  }
}
/** Declares 'weights' but returns Soft MoE fields. */
class TestMixedUp extends TestSlots {
  override get traits(): RouterTraits { return { routing: 'dense', dropsTokens: false }; }
}
const make = <R>(name: string, C: new (c: Static<typeof TestTopKConfig>, m: never) => R) => definePlugin({ name, version: '1.0.0', family: 'router', schema: TestTopKConfig, description: `${name} (test)`, create: (c, m) => new C(c, m as never) as never });
const choice = make('test-choice', TestChoice);
const slots = make('test-slots', TestSlots);
const mixedUp = make('test-mixed-up', TestMixedUp);
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

describe('route forms', () => {
  it('an expert-choice and a Soft MoE router run their models through the hook point', async () => {
    const x = rt.randn([6, 4], { seed: 2 });
    for (const router of [choice({}), slots({})]) {
      const model = await Model.build(rt, { kind: 'moe', inputs: 4, experts: 3, hidden: 5, router, outputs: 2 }, { seed: 0 });
      const y = model.forward(x);
      expect((await y.data()).shape).toEqual([6, 2]);
      expect(Array.from(await y.toArray() as Float32Array).every(Number.isFinite)).toBe(true);
      model.free();
    }
  });

  it("the program's outputs sit at the form's fixed positions; a field of another form is E_ARG naming it", async () => {
    const prog = routerProgram(rt, slots({}), { dim: 4, experts: 3 });
    const outs = prog.run([rt.randn([5, 4], { seed: 3 }), rt.randn([4, 3], { seed: 4 })]) as Tensor[];
    expect(outs.map((t) => t.shape)).toEqual([[5, 3, 1], [5, 3, 1], [], [], [0]]);
    expect(await outs[2].item()).toBe(0); // no aux given
    expect(await outs[3].item()).toBeGreaterThan(0); // its zloss
    let e: unknown;
    try {
      routerProgram(rt, mixedUp({}), { dim: 4, experts: 3 });
    } catch (err) {
      e = err;
    }
    expect(e).toBeInstanceOf(LiaisonError);
    expect((e as LiaisonError).code).toBe('E_ARG');
    expect((e as LiaisonError).message).toMatch(/'dispatch', a field of form 'slots'.*declare form 'weights'/);
  });
});

describe('router metrics', () => {
  it("a GPT with MoE layers trains, and the Trainer's events carry the routers' entropy, load and dropped tokens", async () => {
    const router = topk({ k: 1, auxWeight: 0.01 });
    const model = await Model.build(rt, { kind: 'gpt', vocab: 32, context: 8, dim: 16, layers: 2, heads: 2, moe: { experts: 4, hidden: 16, router } }, { seed: 0 });
    const text = new TextEncoder().encode('the quick brown fox jumps over the lazy dog; '.repeat(20));
    const corpus = TextCorpus.fromBytes(rt, text.map((b) => b % 32));
    const trainer = new Trainer({ model, optimizer: gd({ lr: 0.05 }), plugins: [router], logEvery: 2, progress: 'none', seed: 0 });
    const progress: ProgressEvent[] = [];
    const epochs: EpochResult[] = [];
    trainer.on('progress', (p) => progress.push(p));
    trainer.on('epoch', (r) => epochs.push(r));
    await trainer.fitLM(corpus.sampler(4, 8), { epochs: 2, stepsPerEpoch: 4 });
    expect(epochs).toHaveLength(2);
    for (const r of [...epochs, ...progress]) {
      const m = r.metrics!;
      expect(Object.keys(m).sort()).toEqual(['router.aux', 'router.dropped', 'router.entropy', 'router.load', 'router.zloss']);
      const load = m['router.load'] as number[];
      expect(load).toHaveLength(4);
      expect(load.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5); // shares of the routed tokens
      expect(m['router.dropped']).toBe(0); // top-1 without a capacity serves every token
      expect(m['router.entropy']).toBe(0); // one expert per token: its dispatch mass has no spread
      expect(m['router.aux']).toBeGreaterThan(0);
      expect(m['router.zloss']).toBe(0); // a router that gives none
    }
    expect(progress.map((p) => p.step)).toEqual([2, 4, 6, 8]);
    model.free();
  });
});
