// Weight hooks as the family issues will use them, with a hand-written training loop of
// runtime ops (forward, loss, backward, in-place SGD): a straight-through top-k mask over
// frozen random weights whose scores learn, and a frozen base with a trained low-rank
// delta W + B·A. The stored weights must come out bit for bit what they were.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { HOOK_POINTS, LAYER_POINTS, MODULE_POINTS } from '../sdk/hook-points.js';
import { Model } from '../sdk/model.js';
import { removeWeightHook, straightThroughTopK, weightHook } from '../sdk/weight-hooks.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => {
  rt = await startRuntime();
});
afterAll(async () => {
  await rt?.close();
});

const LAYERS = ['layers.0', 'layers.1', 'layers.2'];

async function values(ts: Record<string, Tensor>): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, t] of Object.entries(ts)) out[k] = Array.from(await t.toArray() as Float32Array);
  return out;
}

/** Freeze the model's own parameters: no gradient, so nothing but the hook's tensors can learn. */
function freeze(model: Model): void {
  for (const p of model.params) rt.call('set_requires_grad', [model.param(p.name), false], undefined, 0);
}

/** A leaf that backward gives a gradient. */
function trainable(t: Tensor): Tensor {
  rt.call('set_requires_grad', [t, true], undefined, 0);
  return t;
}

/** `steps` of forward, cross-entropy, backward, `p -= lr * grad` on `params`; the first and last losses. */
async function train(model: Model, x: Tensor, y: Tensor, params: Tensor[], lr: number, steps: number): Promise<[number, number]> {
  const losses: number[] = [];
  for (let i = 0; i < steps; i++) {
    const logits = model.forward(x);
    const loss = rt.call('cross_entropy', [logits, y]) as Tensor;
    rt.call('backward', [loss], undefined, 0);
    for (const p of params) {
      const g = rt.call('grad_of', [p]) as Tensor;
      const step = g.mul(lr);
      p.sub_(step);
      g.free();
      step.free();
    }
    rt.call('clear_grads', [params], undefined, 0);
    if (i === 0 || i === steps - 1) losses.push(await loss.item());
    logits.free();
    loss.free();
  }
  return [losses[0], losses[1]];
}

function data(): { x: Tensor; y: Tensor } {
  const x = rt.randn([64, 8], { seed: 0 });
  return { x, y: x.narrow(1, 0, 4).argmax(1) }; // a rule the net can learn
}

describe('hook points, declared once', () => {
  it('splits into layer-indexed points (counted) and module-named ones (listed), as the runtime describes them', async () => {
    expect(Object.keys(HOOK_POINTS)).toEqual(['kv', 'router', 'weight', 'output']);
    expect(LAYER_POINTS).toEqual(['kv', 'router']);
    expect(MODULE_POINTS).toEqual(['weight', 'output']);
    const m = await Model.build(rt, { kind: 'mlp', sizes: [8, 16, 4] }, { seed: 0 });
    expect(m.hookPoints).toEqual({ kv: 0, router: 0 });
    expect(m.hookModules).toEqual({ weight: ['layers.0', 'layers.1'], output: ['layers.0', 'layers.1'] });
    const gpt = await Model.build(rt, { kind: 'gpt', vocab: 16, context: 8, dim: 16, layers: 1, heads: 2 }, { seed: 0 });
    expect(gpt.hookModules.weight).toEqual(['blocks.0.attn.qkv', 'blocks.0.attn.proj', 'blocks.0.mlp.fc', 'blocks.0.mlp.proj', 'head']);
    expect(() => weightHook(m, 'blocks\\..*', (w) => w.mul(2))).toThrow(/matches no module with a weight hook point; the model's are layers\.0, layers\.1/);
    expect(() => m.setWeightHook('(', null)).toThrow(LiaisonError);
    m.free();
    gpt.free();
  });
});

describe('weight hooks', () => {
  it('trains the scores of a straight-through top-k mask over frozen random weights', async () => {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [8, 32, 32, 4] }, { seed: 0 });
    freeze(model);
    for (const n of LAYERS) model.param(`${n}.weight`).mul_(3); // random weights wide enough that a subnetwork fits
    const before = await values(model.state());
    const { x, y } = data();
    const unmasked = await evalLoss(model, x, y);
    const scores: Record<string, Tensor> = {};
    for (const n of LAYERS) {
      const shape = model.params.find((p) => p.name === `${n}.weight`)!.shape;
      scores[n] = trainable(rt.rand(shape, { seed: 1 }).mul(0.01));
    }
    const programs = weightHook(model, 'layers\\.\\d+', (w, site) => w.mul(straightThroughTopK(rt, scores[site.module], 0.5)), { name: 'edge-popup' });
    expect(Object.keys(programs)).toEqual(LAYERS);
    const scoresBefore = await values(scores);
    const [first, last] = await train(model, x, y, Object.values(scores), 0.5, 60);
    expect(last).toBeLessThan(0.5 * first); // the mask learned
    expect(await values(model.state())).toEqual(before); // the weights it masks did not move
    expect(await values(scores)).not.toEqual(scoresBefore);
    // removing the hooks gives the forward of the stored weights back
    const masked = await evalLoss(model, x, y);
    removeWeightHook(model, LAYERS);
    expect(await evalLoss(model, x, y)).toBeCloseTo(unmasked, 6);
    expect(Math.abs(masked - unmasked)).toBeGreaterThan(0.1);
    model.free();
  });

  it('trains only the factors of a low-rank delta W + B·A over a frozen base', async () => {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [8, 32, 32, 4] }, { seed: 0 });
    freeze(model);
    const before = await values(model.state());
    const { x, y } = data();
    const plain = await evalLoss(model, x, y);
    const factors: Record<string, { a: Tensor; b: Tensor }> = {};
    let seed = 2;
    for (const n of ['layers.0', 'layers.1']) {
      const [out, inp] = model.params.find((p) => p.name === `${n}.weight`)!.shape;
      factors[n] = { a: trainable(rt.randn([2, inp], { seed: seed++ }).mul(0.1)), b: trainable(rt.zeros([out, 2])) };
    }
    weightHook(model, ['layers.0', 'layers.1'], (w, site) => w.add(factors[site.module].b.matmul(factors[site.module].a)), { name: 'lora' });
    const params = Object.values(factors).flatMap(({ a, b }) => [a, b]);
    // one backward: the gradient reaches B (A's is B-weighted, so 0 while B = 0), and nothing of the model
    const loss = rt.call('cross_entropy', [model.forward(x), y]) as Tensor;
    expect(await loss.item()).toBeCloseTo(plain, 6); // B = 0: W + B·A starts at W
    rt.call('backward', [loss], undefined, 0);
    const gradSize = (t: Tensor) => (rt.call('grad_of', [t]) as Tensor).abs().sum().item();
    for (const { a, b } of Object.values(factors)) {
      expect(await gradSize(b)).toBeGreaterThan(0);
      expect(await gradSize(a)).toBe(0);
    }
    for (const p of model.params) expect(await model.grad(p.name).abs().sum().item()).toBe(0);
    rt.call('clear_grads', [params], undefined, 0);
    const start = await values(Object.fromEntries(params.map((p, i) => [String(i), p])));
    const [first, last] = await train(model, x, y, params, 1.0, 100);
    expect(last).toBeLessThan(0.9 * first);
    const end = await values(Object.fromEntries(params.map((p, i) => [String(i), p])));
    for (const k of Object.keys(start)) expect(end[k]).not.toEqual(start[k]); // A and B both learned
    expect(await values(model.state())).toEqual(before);
    model.free();
  });
});

async function evalLoss(model: Model, x: Tensor, y: Tensor): Promise<number> {
  return (rt.call('cross_entropy', [model.forward(x, { train: false }), y]) as Tensor).item();
}

describe('the golden hook messages (test/protocol/vectors.json)', () => {
  it('install at declared points with the options those points take', async () => {
    const { readFileSync } = await import('node:fs');
    const file = JSON.parse(readFileSync(new URL('./protocol/vectors.json', import.meta.url), 'utf8')) as { vectors: { name: string; header: { ops: { op: string; args: unknown[] }[] } }[] };
    const records = file.vectors.filter((v) => v.name.startsWith('hook_')).flatMap((v) => v.header.ops);
    expect(new Set(records.map((r) => r.args[1]))).toEqual(new Set(Object.keys(HOOK_POINTS)));
    for (const r of records) {
      expect(r.op).toBe('model_hook');
      const point = HOOK_POINTS[r.args[1] as keyof typeof HOOK_POINTS];
      for (const k of Object.keys(r.args[3] as object)) expect(point.options).toContain(k);
    }
  });
});
