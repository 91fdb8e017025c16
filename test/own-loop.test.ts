// An own training loop on the Trainer's public parts (sdk/loop.ts): the same losses as the
// Trainer on the same data order, checkpoint and resume of an own loop, and two step
// programs sharing one loop's step count.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { adam, magnitude, nesterov } from '../plugins/index.js';
import { Dataset, epochSeed, lossOf, Model, type MomentumOptimizer, Trainer, TrainingLoop, type TrainStep } from '../sdk/index.js';
import { startRuntime } from './helpers.js';

const BATCH = 128;
let rt: Runtime;
let train: Dataset;
const dirs: string[] = [];

beforeAll(async () => {
  rt = await startRuntime();
  [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
});
afterAll(async () => {
  await rt?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const mlp = () => Model.build(rt, { kind: 'mlp', sizes: [64, 32, 10] }, { seed: 0 });
const pruner = () => magnitude({ sparsity: 0.75, atEpoch: 1, rounds: 2 });

/** An own loop of `epochs` epochs over the Trainer's batch order (seed 0): each step's loss. */
async function ownEpochs(loop: TrainingLoop, step: TrainStep<{ x: object; y: object }>, epochs: number): Promise<number[]> {
  const out: number[] = [];
  for (let n = 0; n < epochs; n++) {
    const e = loop.epoch;
    rt.manualSeed(epochSeed(0, e));
    const losses: Tensor[] = [];
    for (const b of train.batches(BATCH, { shuffle: true, seed: epochSeed(0, e) })) {
      const r = await step.run({ x: b.x, y: b.y });
      losses.push(r.loss);
      b.x.free();
      b.y.free();
    }
    const all = rt.stack(losses);
    const values = Array.from(await all.toArray() as Float32Array);
    for (const t of [all, ...losses]) t.free();
    out.push(...values);
    await loop.epochEnd({ loss: values.reduce((a, b) => a + b, 0) / values.length });
  }
  return out;
}

async function ownLoop(model: Model, optimizer: MomentumOptimizer = nesterov({ lr: 0.05, momentum: 0.9 })) {
  const loop = await TrainingLoop.create({ model, optimizer, plugins: [pruner()] });
  const step = loop.stepProgram({ inputs: { x: {}, y: {} }, loss: ({ x, y }) => lossOf('cross_entropy', model.forward(x, { train: true }), y, 1) });
  return { loop, step };
}

describe('an own loop on the public parts', () => {
  it('gives the losses of the Trainer, step by step, with a pruner and nesterov', async () => {
    const trainer = new Trainer({ model: await mlp(), optimizer: nesterov({ lr: 0.05, momentum: 0.9 }), plugins: [pruner()], epochs: 3, batchSize: BATCH, logEvery: 1, progress: 'none' });
    const want: number[] = [];
    trainer.on('progress', (p) => want.push(p.loss));
    await trainer.fit(train);

    const model = await mlp();
    const { loop, step } = await ownLoop(model);
    const got = await ownEpochs(loop, step, 3);
    expect(got.length).toBe(want.length);
    got.forEach((v, i) => expect(Math.abs(v - want[i])).toBeLessThan(1e-5));
    // the pruner's two rounds ran at the epoch ends, alike in both: most of the first layer is zero
    const zeros = async (m: Model) => { const w = m.param('layers.0.weight'); const n = await w.eq(0).sum().item(); w.free(); return n; };
    expect(await zeros(model)).toBe(await zeros(trainer.model));
    expect(await zeros(model)).toBeGreaterThan(64 * 32 * 0.5);
    trainer.free();
    loop.free();
  });

  it('saves and resumes: the resumed loop goes on as the straight one', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'own-loop-'));
    dirs.push(dir);
    const straight = await ownLoop(await mlp());
    await ownEpochs(straight.loop, straight.step, 1);
    await straight.loop.save(join(dir, 'e1.safetensors'));
    const rest = await ownEpochs(straight.loop, straight.step, 2);

    const resumed = await ownLoop(await mlp());
    await resumed.loop.resume(join(dir, 'e1.safetensors'));
    expect([resumed.loop.epoch, resumed.loop.step]).toEqual([1, straight.loop.step / 3]);
    const again = await ownEpochs(resumed.loop, resumed.step, 2);
    again.forEach((v, i) => expect(Math.abs(v - rest[i])).toBeLessThan(1e-5));
    // a Trainer with the same optimizer and plugins opens the loop's checkpoint too
    const t = await Trainer.resume(join(dir, 'e1.safetensors'), { model: await mlp(), optimizer: nesterov({ lr: 0.05, momentum: 0.9 }), plugins: [pruner()], batchSize: BATCH, progress: 'none' });
    expect(t.step).toBe(resumed.loop.step - again.length);
    for (const l of [straight.loop, resumed.loop]) l.free();
    t.free();
  });

  it('keeps the step count of two step programs in step (Adam counts every step once)', async () => {
    const one = await ownLoop(await mlp(), adam({ lr: 0.01 }));
    const want = await ownEpochs(one.loop, one.step, 1);
    const model = await mlp();
    const two = await ownLoop(model, adam({ lr: 0.01 }));
    const other = two.loop.stepProgram({ name: 'other', inputs: { x: {}, y: {} }, loss: ({ x, y }) => lossOf('cross_entropy', model.forward(x, { train: true }), y, 1) });
    const got: number[] = [];
    let i = 0;
    for (const b of train.batches(BATCH, { shuffle: true, seed: epochSeed(0, 0) })) {
      const r = await (i++ % 2 ? other : two.step).run({ x: b.x, y: b.y });
      got.push(await r.loss.item());
      r.loss.free();
    }
    got.forEach((v, k) => expect(Math.abs(v - want[k])).toBeLessThan(1e-5));
    expect(() => two.step.queue({} as never)).toThrow(/needs input 'x', 'y'/);
    // a loop made with `new` runs no step before its plugins attached
    const bare = new TrainingLoop({ model, optimizer: adam({ lr: 0.01 }), plugins: [pruner()] });
    const [b, ...rest] = train.batches(BATCH);
    expect(() => bare.stepProgram({ inputs: { x: {}, y: {} }, loss: ({ x, y }) => lossOf('cross_entropy', model.forward(x), y, 1) }).queue(b)).toThrow(/plugins have not attached; make it with TrainingLoop.create\(\)/);
    for (const r of [b, ...rest]) { r.x.free(); r.y.free(); }
    bare.free();
    one.loop.free();
    two.loop.free();
  });

  it('stops at a non-finite loss: E_NONFINITE from the loop, its step count back to the last step that ran', async () => {
    const model = await mlp();
    const loop = await TrainingLoop.create({ model, optimizer: nesterov({ lr: 0.05, momentum: 0.9 }) });
    // the loss divided by d: d = 0 makes step 3's loss infinite
    const step = loop.stepProgram({ inputs: { x: {}, y: {}, d: { dtype: 'f32', shape: [] } }, loss: ({ x, y, d }) => lossOf('cross_entropy', model.forward(x), y, 1).div(d) });
    const [b, ...rest] = train.batches(BATCH);
    const one = rt.full([], 1), zero = rt.full([], 0);
    const err = await (async () => {
      for (const d of [one, one, zero, one]) await step.run({ x: b.x, y: b.y, d });
      await loop.sync();
    })().then(() => null, (e: unknown) => e as Error & { code?: string });
    expect(err?.code).toBe('E_NONFINITE');
    expect(loop.step).toBe(2);
    const again = await step.run({ x: b.x, y: b.y, d: one }); // goes on from there
    expect(again.step).toBe(3);
    expect(Number.isFinite(await again.loss.item())).toBe(true);
    for (const r of [b, ...rest]) { r.x.free(); r.y.free(); }
    loop.free();
  });
});
