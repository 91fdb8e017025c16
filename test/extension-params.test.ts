// Parameters plugins own, freezing, snapshots and rewinding (sdk/trainer-params.ts,
// sdk/snapshots.ts), used as the family issues will: a component that joins at round 3,
// a frozen model parameter, rewinding to init, and a checkpoint that carries all of it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { adam, heavyBall, magnitude } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import type { LoopInfo, TrainerPlugin, TrainingHooks } from '../sdk/hooks.js';
import { Model } from '../sdk/model.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

const SPEC = { kind: 'mlp', sizes: [64, 16, 10] } as const;
const C = [0.5, -1, 2, 0.25];

/**
 * A plugin with a component that joins at round `joinAt` (from 1): a (4,) parameter, frozen
 * until then, entering the loss as Σ bᵢ·cᵢ, which is 0 while b is 0 and does not touch the
 * model's gradients. `traces` counts how often the step program was traced.
 */
class Joiner implements TrainerPlugin {
  traces = 0;
  /** `hooks.step` at each epoch end. */
  steps: number[] = [];
  b: Tensor | null = null;
  hooks: TrainingHooks | null = null;
  constructor(readonly joinAt: number, readonly shape = [4]) {}
  attach(h: TrainingHooks): void {
    this.hooks = h;
    this.b = h.addParam('b', { shape: this.shape, trainable: false, module: 'layers.0' });
    const c = h.rt.tensor(C).keep();
    h.on('beforeStep', () => { this.traces++; });
    h.addLoss('component', () => this.b!.mul(c).sum());
    h.on('epochEnd', (info: LoopInfo) => {
      this.steps.push(h.step);
      if (info.epoch + 2 === this.joinAt) h.unfreeze('b');
    });
  }
}

const values = async (t: Tensor) => Array.from((await t.toArray()) as Float32Array);
async function weights(model: Model): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const p of model.params) out[p.name] = await values(model.param(p.name));
  return out;
}

let rt: Runtime;
let data: Dataset;
let dir: string;
beforeAll(async () => {
  rt = await startRuntime();
  dir = mkdtempSync(join(tmpdir(), 'liaison-params-'));
  data = await Dataset.builtin(rt, 'digits');
});
afterAll(async () => {
  await rt?.close();
  rmSync(dir, { recursive: true, force: true });
});

const opts = { batchSize: 300, seed: 1, progress: 'none' as const };

describe('a plugin parameter that joins at round 3', () => {
  it('is not moved before it joins, gets fresh Adam state counting from its own first step, and leaves the model as a run without it', async () => {
    const plain = await Model.build(rt, SPEC, { seed: 0 });
    const ref = new Trainer({ model: plain, optimizer: adam({ lr: 0.01 }), ...opts });
    const refHistory = await ref.fit(data, { epochs: 4 });

    const model = await Model.build(rt, SPEC, { seed: 0 });
    const joiner = new Joiner(3);
    const t = new Trainer({ model, optimizer: adam({ lr: 0.01 }), plugins: [joiner], ...opts });
    const seen: number[][] = [];
    t.on('epoch', () => { seen.push([]); });
    const history = await t.fit(data, { epochs: 2 });
    expect(await values(joiner.b!)).toEqual([0, 0, 0, 0]); // frozen: not moved
    // while b is 0 the extra term adds exactly 0: the losses are the reference's
    expect(history.map((h) => h.loss)).toEqual(refHistory.slice(0, 2).map((h) => h.loss));
    expect(joiner.traces).toBe(1);
    // the epochEnd of round 2 unfroze it: it joins at round 3
    expect(t.paramList().find((p) => p.name === 'b')).toMatchObject({ trainable: true, plugin: true, hasState: true, module: 'layers.0' });
    await t.fit(data, { epochs: 2 });
    expect(joiner.traces).toBe(2); // traced again once, when the set changed
    expect(joiner.steps).toEqual([1, 2, 3, 4].map((e) => e * data.countBatches(300)));
    // Adam from fresh state with a constant gradient c moves each entry by lr·sign(c) a step
    // (m̂/√v̂ = c/|c| when its own step count starts at 1; with the global count it would not)
    const steps = 2 * data.countBatches(300);
    const b = await values(joiner.b!);
    b.forEach((v, i) => expect(v).toBeCloseTo(-0.01 * steps * Math.sign(C[i]), 4));
    // the model's parameters and their state went on as if b had never been there
    expect(await weights(model)).toEqual(await weights(plain));
    const state = joiner.hooks!.optimizerState('layers.0.weight');
    expect(Object.keys(state).sort()).toEqual(Object.keys(ref['control'].optimizerState('layers.0.weight')).sort());
    t.free(); ref.free(); model.free(); plain.free();
  });

  it('is refused with a name taken, a bad shape or init', async () => {
    const model = await Model.build(rt, SPEC, { seed: 0 });
    const errs: unknown[] = [];
    const p: TrainerPlugin = {
      attach(h) {
        for (const f of [() => h.addParam('layers.0.weight', { shape: [1] }), () => h.addParam('x', { shape: [-1] }), () => h.addParam('y', { shape: [2], init: 'gaussian' as never }), () => h.freeze('nope.*')]) {
          try { f(); } catch (e) { errs.push(e); }
        }
      },
    };
    const t = new Trainer({ model, optimizer: adam({ lr: 0.01 }), plugins: [p], ...opts, epochs: 1 });
    await t.fit(data);
    expect(errs.map((e) => (e as LiaisonError).code)).toEqual(['E_ARG', 'E_ARG', 'E_ARG', 'E_ARG']);
    expect((errs[0] as Error).message).toMatch(/'layers.0.weight' exists already/);
    expect((errs[2] as Error).message).toMatch(/init must be 'zeros', 'ones', 'normal', 'uniform' or a tensor, got "gaussian"/);
    expect((errs[3] as Error).message).toMatch(/nope\.\* matches no parameter; there are layers\.0\.weight/);
    t.free(); model.free();
  });
});

describe('freezing a model parameter', () => {
  it('keeps its value bit for bit and gives it no gradient, while the others move', async () => {
    const model = await Model.build(rt, SPEC, { seed: 0 });
    const before = await weights(model);
    const t = new Trainer({ model, optimizer: heavyBall({ lr: 0.1, momentum: 0.9 }), ...opts });
    expect(t.freeze('layers.0.*')).toEqual(['layers.0.weight', 'layers.0.bias']);
    expect(t.freeze('layers.0.weight')).toEqual([]); // already frozen: nothing changes
    await t.fit(data, { epochs: 2 });
    const after = await weights(model);
    expect(after['layers.0.weight']).toEqual(before['layers.0.weight']);
    expect(after['layers.0.bias']).toEqual(before['layers.0.bias']);
    expect(after['layers.1.weight']).not.toEqual(before['layers.1.weight']);
    // requires_grad false: backward left no gradient (read as zeros), the next layer has one
    expect((await values(model.grad('layers.0.weight'))).every((v) => v === 0)).toBe(true);
    expect((await values(model.grad('layers.1.weight'))).some((v) => v !== 0)).toBe(true);
    // unfrozen, it moves again, from its kept (zero) momentum
    t.unfreeze(/^layers\.0\./);
    await t.fit(data, { epochs: 1 });
    expect((await weights(model))['layers.0.weight']).not.toEqual(before['layers.0.weight']);
    t.free(); model.free();
  });
});

describe('snapshots and rewinding', () => {
  it('rewinding to init after training gives the initial weights, and after resetOptimizer the next step is a first step from init', async () => {
    const one = { ...opts, batchSize: 2048, shuffle: false }; // one step per epoch, the same batch every time
    const fresh = await Model.build(rt, SPEC, { seed: 0 });
    const init = await weights(fresh);
    const first = new Trainer({ model: fresh, optimizer: adam({ lr: 0.01 }), ...one });
    await first.fit(data, { epochs: 1 });

    const model = await Model.build(rt, SPEC, { seed: 0 });
    const t = new Trainer({ model, optimizer: adam({ lr: 0.01 }), ...one });
    t.snapshot('init');
    t.snapshot('k', { at: 2 });
    await t.fit(data, { epochs: 3 });
    expect(t.snapshots()).toEqual({ init: 0, k: 2 });
    expect(await weights(model)).not.toEqual(init);
    t.rewind('init');
    expect(await weights(model)).toEqual(init);
    t.resetOptimizer();
    for (const v of Object.values(t['control'].optimizerState('layers.1.weight'))) expect((await values(v)).every((x) => x === 0)).toBe(true);
    // reset together, they count from one shared offset: the step updates them as one multi-tensor group
    expect(new Set(t['params'].trainable().map((e) => e.offset)).size).toBe(1);
    await t.fit(data, { epochs: 1 });
    const got = await weights(model);
    const want = await weights(fresh);
    for (const k of Object.keys(want)) got[k].forEach((v, i) => expect(v).toBeCloseTo(want[k][i], 6));
    // rewinding chosen parameters only
    t.rewind('k', 'layers.1.*');
    expect(t.rewind.bind(t, 'nope')).toThrow(/no snapshot 'nope'; there are init, k/);
    t.free(); first.free(); model.free(); fresh.free();
  });
});

describe('the lottery ticket: train, prune by magnitude, rewind the survivors to init, retrain', () => {
  it('rewinds every surviving weight to its initial value, keeps the pruned ones 0, and retrains from a fresh optimizer', async () => {
    const model = await Model.build(rt, SPEC, { seed: 0 });
    const init = await weights(model);
    const t = new Trainer({ model, optimizer: heavyBall({ lr: 0.1, momentum: 0.9 }), plugins: [magnitude({ sparsity: 0.5, atEpoch: 1 })], ...opts });
    t.snapshot('init');
    await t.fit(data, { epochs: 2 }); // pruned after the first epoch, trained masked in the second
    const trained = await weights(model);
    t.rewind('init', 'layers.*', { keepZeros: true });
    t.resetOptimizer();
    const rewound = await weights(model);
    let pruned = 0;
    for (const k of Object.keys(init)) {
      rewound[k].forEach((v, i) => {
        if (trained[k][i] === 0) pruned++;
        expect(v + 0).toBe(trained[k][i] === 0 ? 0 : init[k][i]); // + 0: a pruned -0 reads as 0
      });
    }
    expect(pruned).toBeGreaterThan(0.4 * (64 * 16 + 16 * 10));
    for (const v of Object.values(t['control'].optimizerState('layers.0.weight'))) expect((await values(v)).every((x) => x === 0)).toBe(true);
    await t.fit(data, { epochs: 1 });
    const retrained = await weights(model);
    for (const k of ['layers.0.weight', 'layers.1.weight']) retrained[k].forEach((v, i) => { if (rewound[k][i] === 0) expect(v + 0).toBe(0); });
    expect(retrained['layers.0.weight']).not.toEqual(rewound['layers.0.weight']);
    t.free(); model.free();
  });
});

describe('checkpoints with plugin parameters, frozen flags and snapshots', () => {
  it('resume gives the same continuation as a straight run', async () => {
    const make = async (plugins: TrainerPlugin[], checkpointDir?: string) => {
      const model = await Model.build(rt, SPEC, { seed: 0 });
      const t = new Trainer({ model, optimizer: adam({ lr: 0.01 }), plugins, ...opts, ...(checkpointDir ? { checkpointDir, checkpointSnapshots: true } : {}) });
      t.freeze('layers.1.bias');
      return { model, t };
    };
    const straightJoiner = new Joiner(3);
    const straight = await make([straightJoiner], join(dir, 'run'));
    straight.t.snapshot('init');
    await straight.t.fit(data, { epochs: 3 });
    await straight.t.save(join(dir, 'with-snapshots.safetensors'), { snapshots: true });
    await straight.t.fit(data, { epochs: 2 });

    const fresh = await make([new Joiner(3)]);
    expect(fresh.t.paramList().map((p) => [p.name, p.trainable, p.hasState])).toEqual([['layers.0.weight', true, true], ['layers.0.bias', true, true], ['layers.1.weight', true, true], ['layers.1.bias', false, true]]);
    fresh.t.free(); fresh.model.free();
    const resumedJoiner = new Joiner(3);
    const resumed = await make([resumedJoiner]);
    resumed.t.unfreeze('layers.1.bias'); // the file's flags win
    await resumed.t.resume(join(dir, 'with-snapshots.safetensors'));
    expect(resumed.t.paramList().filter((p) => !p.trainable).map((p) => p.name)).toEqual(['layers.1.bias']);
    expect(resumed.t.snapshots()).toEqual({ init: 0 });
    await resumed.t.fit(data, { epochs: 2 });
    expect(await weights(resumed.model)).toEqual(await weights(straight.model));
    expect(await values(resumedJoiner.b!)).toEqual(await values(straightJoiner.b!));

    // a file from before the component joined (round 2's end: the hook unfreezes it, then the save)
    // and one from round 1: both go on as the straight run
    for (const epoch of [1, 2]) {
      const early = new Joiner(3);
      const r = await make([early]);
      await r.t.resume(join(dir, 'run', `epoch-${epoch}.safetensors`));
      expect(r.t.snapshots()).toEqual({ init: 0 }); // checkpointSnapshots: the automatic saves hold them
      await r.t.fit(data, { epochs: 5 - epoch });
      expect(await weights(r.model)).toEqual(await weights(straight.model));
      expect(await values(early.b!)).toEqual(await values(straightJoiner.b!));
      r.t.free(); r.model.free();
    }
    resumed.t.rewind('init');
    straight.t.rewind('init');
    expect(await weights(resumed.model)).toEqual(await weights(straight.model));
    for (const x of [straight, resumed]) { x.t.free(); x.model.free(); }
  });

  it('a plugin parameter of another shape is refused before anything changes', async () => {
    const model = await Model.build(rt, SPEC, { seed: 3 });
    const before = await weights(model);
    const t = new Trainer({ model, optimizer: adam({ lr: 0.01 }), plugins: [new Joiner(3, [5])], ...opts });
    t.freeze('layers.1.bias');
    const err = await t.resume(join(dir, 'with-snapshots.safetensors')).catch((e: unknown) => e);
    expect((err as LiaisonError).code).toBe('E_SHAPE');
    expect((err as Error).message).toMatch(/'param\/b' is f32 \[5\] here, f32 \[4\] in the file/);
    expect(await weights(model)).toEqual(before);
    // the flags as they were (the plugin attached, as a refused resume leaves it, with 'b' as it declares it)
    expect(t.paramList().filter((p) => !p.trainable).map((p) => p.name)).toEqual(['layers.1.bias', 'b']);
    expect([t.step, t.epoch]).toEqual([0, 0]);
    t.free(); model.free();
  });
});
