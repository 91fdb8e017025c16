// The Trainer end to end in a real runtime: learning, hook points, plugins, events,
// metrics, progress output, checkpoints and resume, and what a step costs on the wire.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { Dataset, TextCorpus } from '../sdk/data.js';
import { MomentumOptimizerBase, OptimizerFields, type OptimizerConfig } from '../sdk/families/momentum/base.js';
import type { StepHyper } from '../sdk/families/momentum/types.js';
import { PrunerBase, type PrunerBaseConfig, PrunerFields } from '../sdk/families/pruners/base.js';
import type { PruneContext, PrunableWeight } from '../sdk/families/pruners/types.js';
import type { ParamInfo, TrainingHooks } from '../sdk/hooks.js';
import { readMetrics } from '../sdk/metrics.js';
import { Model } from '../sdk/model.js';
import { checkAgainstSchema, definePlugin } from '../sdk/plugin.js';
import { evaluate } from '../sdk/evaluate.js';
import { readSafetensors } from '../sdk/safetensors.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

// ---- plugins written for these tests (the reference ones live in plugins/) ----

class GD extends MomentumOptimizerBase<OptimizerConfig> {
  update(param: Tensor, grad: Tensor, _state: Record<string, Tensor>, hp: StepHyper): void {
    param.sub_(grad.mul(hp.lr));
  }
}
const gd = definePlugin({
  name: 'test-gd', version: '1.0.0', family: 'momentum-optimizer', schema: Type.Object({ ...OptimizerFields }),
  description: 'plain gradient descent', create: (c, m) => new GD(c, m),
});

/** Heavy ball: v = βv + g, p -= lr·v. It keeps state, so a checkpoint must carry it. */
class HeavyBall extends MomentumOptimizerBase<OptimizerConfig & { beta: number }> {
  override init(_p: Tensor, info: ParamInfo, rt: Runtime): Record<string, Tensor> {
    return { velocity: rt.zeros(info.shape) };
  }
  update(param: Tensor, grad: Tensor, state: Record<string, Tensor>, hp: StepHyper): void {
    state.velocity.mul_(this.config.beta).add_(grad);
    param.sub_(state.velocity.mul(hp.lr));
  }
}
const heavyBall = definePlugin({
  name: 'test-heavy-ball', version: '1.0.0', family: 'momentum-optimizer',
  schema: Type.Object({ ...OptimizerFields, beta: Type.Number({ minimum: 0, maximum: 1, default: 0.9, description: 'momentum' }) }),
  description: 'heavy-ball momentum', create: (c, m) => new HeavyBall(c, m),
});

/** Global magnitude pruning: keep |w| ≥ the k-th largest |w| over all selected weights. */
class GlobalMagnitude<C extends PrunerBaseConfig = PrunerBaseConfig> extends PrunerBase<C> {
  masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
    const mags = weights.map((w, i) => w.weight.abs().mul(ctx.current[i]));
    const all = ctx.rt.cat(mags.map((m) => m.flatten()));
    const total = weights.reduce((a, w) => a + w.shape.reduce((p, d) => p * d, 1), 0);
    const keep = Math.max(1, Math.round(total * (1 - ctx.sparsity)));
    const kth = all.topk(keep)[0].narrow(0, keep - 1, 1); // (1,): the smallest kept magnitude
    return mags.map((m) => m.ge(kth).to('f32'));
  }
}
const globalMagnitude = definePlugin({
  name: 'test-global-magnitude', version: '1.0.0', family: 'pruner', schema: Type.Object({ ...PrunerFields }),
  description: 'global magnitude pruning', create: (c, m) => new GlobalMagnitude(c, m),
});

/** The same, on one layer's weight only: two of them in one Trainer prune two layers. */
class LayerMagnitude extends GlobalMagnitude<PrunerBaseConfig & { layer: number }> {
  override selects(p: ParamInfo): boolean {
    return p.name === `layers.${this.config.layer}.weight`;
  }
}
const layerMagnitude = definePlugin({
  name: 'test-layer-magnitude', version: '1.0.0', family: 'pruner',
  schema: Type.Object({ ...PrunerFields, layer: Type.Integer({ minimum: 0, default: 0, description: 'the layer whose weight it prunes' }) }),
  description: 'magnitude pruning of one layer', create: (c, m) => new LayerMagnitude(c, m),
});

/** Gradient descent whose schedule breaks at step 7 (a fit that fails with steps in flight). */
class BrokenSchedule extends GD {
  override learningRate(step: number): number {
    return step === 7 ? Number.NaN : 0.1;
  }
}
const brokenSchedule = definePlugin({
  name: 'test-broken-schedule', version: '1.0.0', family: 'momentum-optimizer', schema: Type.Object({ ...OptimizerFields }),
  description: 'a schedule that returns NaN at step 7', create: (c, m) => new BrokenSchedule(c, m),
});

// ---- shared fixtures ----

let rt: Runtime;
let train: Dataset;
let test: Dataset;
const dirs: string[] = [];
const tempDir = () => { const d = mkdtempSync(join(tmpdir(), 'liaison-trainer-')); dirs.push(d); return d; };

beforeAll(async () => {
  rt = await startRuntime({ env: { OMP_NUM_THREADS: '1' } });
  [train, test] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
});
afterAll(async () => {
  await rt?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const mlp = (seed = 0) => Model.build(rt, { kind: 'mlp', sizes: [64, 64, 10] }, { seed });
const values = async (model: Model) => Promise.all(model.params.map(async (p) => Array.from((await model.param(p.name).toArray()) as Float32Array)));

describe('Trainer', () => {
  it('trains an MLP on digits past 90% held-out accuracy, with events and a JSONL metrics file', async () => {
    const metricsFile = join(tempDir(), 'run', 'metrics.jsonl');
    const trainer = new Trainer({ model: await mlp(), optimizer: gd({ lr: 0.5 }), epochs: 4, batchSize: 32, logEvery: 20, progress: 'none', metricsFile });
    const events: Record<string, unknown[]> = { progress: [], epoch: [], eval: [] };
    for (const k of ['progress', 'epoch', 'eval'] as const) trainer.on(k, (e: unknown) => events[k].push(e));
    const history = await trainer.fit(train, { eval: test });
    expect(history.map((h) => h.epoch)).toEqual([0, 1, 2, 3]);
    expect(history[3].accuracy).toBeGreaterThan(0.9);
    expect(history[3].loss).toBeLessThan(history[0].loss);
    expect(history[3].step).toBe(4 * Math.ceil(train.size / 32));
    expect(events.epoch).toEqual(history);
    expect(events.eval).toHaveLength(4);
    // a progress event every 20 steps and one at each epoch's end, in step order
    const steps = (events.progress as { step: number }[]).map((p) => p.step);
    expect(steps).toEqual([...steps].sort((a, b) => a - b));
    expect(steps.filter((s) => s % 20 === 0)).toHaveLength(Math.floor(history[3].step / 20));
    const ev = await trainer.evaluate(test);
    expect(ev.accuracy).toBeCloseTo(history[3].accuracy!, 5);
    const recs = readMetrics(metricsFile);
    expect(recs.filter((r) => r.kind === 'epoch').map((r) => r.loss)).toEqual(history.map((h) => h.loss));
    expect(recs.filter((r) => r.kind === 'eval')).toHaveLength(4);
    expect(recs.filter((r) => r.kind === 'step').length).toBe(events.progress.length);
    for (const r of recs) expect(Number.isNaN(Date.parse(r.time))).toBe(false);
  });

  it('runs the hook points in order, adds losses, counts steps and retraces on request', async () => {
    const order = rt.zeros([], 'f64'); // each traced hook appends a digit: 1, 2, 3 per step
    const lastStep = rt.zeros([]);
    const gradSeen = rt.zeros([]);
    const traced: string[] = [];
    const loop: string[] = [];
    const recorder = {
      attach(h: TrainingHooks) {
        h.on('beforeStep', () => { traced.push('beforeStep'); order.mul_(10).add_(1); });
        h.on('afterBackward', (t) => { traced.push('afterBackward'); order.mul_(10).add_(2); gradSeen.copy_(t.model.grad(t.model.params[0].name).abs().sum()); });
        h.on('afterOptimizerStep', (t) => { traced.push('afterOptimizerStep'); order.mul_(10).add_(3); lastStep.copy_(t.step); });
        h.addLoss('constant', (t) => t.lr.mul(0).add(5));
        h.on('epochEnd', ({ epoch }) => { loop.push(`epochEnd ${epoch}`); h.retrace(); });
        h.on('evaluation', ({ epoch, metrics }) => { loop.push(`evaluation ${epoch} ${metrics.accuracy !== undefined}`); });
      },
    };
    const small = (await Dataset.builtin(rt, 'iris')).split(0.2, 1);
    const trainer = new Trainer({ model: await Model.build(rt, { kind: 'mlp', sizes: [4, 8, 3] }, { seed: 1 }), optimizer: gd({ lr: 0.1 }), plugins: [recorder], epochs: 2, batchSize: 200, logEvery: 1, progress: 'none' });
    const progress: number[] = [];
    trainer.on('progress', (p) => progress.push(p.loss));
    await trainer.fit(small[0], { eval: small[1] });
    expect(await order.item()).toBe(123123); // two steps (one per epoch), three points each, in order
    expect(await lastStep.item()).toBe(2);
    expect(await gradSeen.item()).toBeGreaterThan(0);
    expect(progress[0]).toBeGreaterThan(5); // the added loss is part of the training loss
    expect(traced).toEqual(['beforeStep', 'afterBackward', 'afterOptimizerStep', 'beforeStep', 'afterBackward', 'afterOptimizerStep']); // traced twice: retrace() after epoch 0
    expect(loop).toEqual(['epochEnd 0', 'evaluation 0 true', 'epochEnd 1', 'evaluation 1 true']);
  });

  it('keeps a pruner\'s sparsity after every step', async () => {
    const model = await mlp();
    const pruner = globalMagnitude({ sparsity: 0.7 });
    const selected = model.params.filter((p) => p.shape.length >= 2);
    const lowest = rt.ones([]); // the lowest sparsity seen after any optimizer step
    const checker = {
      attach(h: TrainingHooks) {
        h.on('afterOptimizerStep', (t) => {
          const zeros = selected.map((p) => t.model.param(p.name).eq(0).to('f32').sum());
          const numel = selected.reduce((a, p) => a + p.numel, 0);
          lowest.copy_(lowest.minimum(rt.stack(zeros).sum().div(numel)));
        });
      },
    };
    const trainer = new Trainer({ model, optimizer: heavyBall({ lr: 0.1 }), plugins: [pruner, checker], epochs: 3, batchSize: 64, progress: 'none' });
    const h = await trainer.fit(train, { eval: test });
    expect(await lowest.item()).toBeGreaterThanOrEqual(0.699);
    expect(h[2].accuracy).toBeGreaterThan(0.8); // still learns with 70% of its weights gone
    const masks = pruner.currentMasks();
    let revived = 0;
    let pruned = 0;
    for (const p of selected) {
      const [w, m] = await Promise.all([model.param(p.name).toArray(), masks[p.name].toArray()]);
      (w as Float32Array).forEach((v, i) => { if (m[i] === 0) { pruned++; if (v !== 0) revived++; } });
    }
    expect(pruned).toBe(Math.round(selected.reduce((a, p) => a + p.numel, 0) * 0.7));
    expect(revived).toBe(0); // momentum kept pushing them; the masks held
  });

  it('resumes from a checkpoint as if it had never stopped', async () => {
    const dir = tempDir();
    const setup = async (seed: number) => ({
      // an iterative pruner (a round at the start and after each of the first three epochs):
      // the resumed run must know that three rounds are done and run only the fourth
      model: await mlp(seed), optimizer: heavyBall({ lr: 0.05, beta: 0.9 }), plugins: [globalMagnitude({ sparsity: 0.5, rounds: 4 })],
      batchSize: 64, seed: 3, progress: 'none' as const, checkpointDir: dir, checkpointEvery: 2,
    });
    const straight = new Trainer(await setup(0));
    const saved: string[] = [];
    straight.on('checkpoint', (c) => saved.push(c.path));
    const full = await straight.fit(train, { epochs: 4 });
    expect(saved).toEqual([join(dir, 'epoch-2.safetensors'), join(dir, 'epoch-4.safetensors')]);
    expect(readdirSync(dir).sort()).toEqual(['epoch-2.safetensors', 'epoch-4.safetensors']);

    const opts = await setup(99); // other initial weights: everything must come from the file
    delete (opts as { checkpointDir?: string }).checkpointDir;
    const resumed = await Trainer.resume(join(dir, 'epoch-2.safetensors'), opts);
    expect([resumed.epoch, resumed.step]).toEqual([2, full[1].step]);
    const rest = await resumed.fit(train, { epochs: 2 });
    expect(rest.map((r) => r.epoch)).toEqual([2, 3]);
    rest.forEach((r, i) => expect(r.loss).toBeCloseTo(full[i + 2].loss, 5));
    const [a, b] = await Promise.all([values(straight.model), values(resumed.model)]);
    a.forEach((pa, i) => pa.forEach((v, j) => expect(b[i][j]).toBeCloseTo(v, 5)));

    const other = new Trainer({ ...(await setup(0)), optimizer: gd({ lr: 0.1 }) });
    const mine = await values(other.model);
    await expect(other.resume(join(dir, 'epoch-2.safetensors'))).rejects.toThrow(/written with optimizer momentum-optimizer\/test-heavy-ball@1\.0\.0, this Trainer has momentum-optimizer\/test-gd@1\.0\.0/);
    // refused before anything changed: not loaded, and not pruned by an attach either
    expect(await values(other.model)).toEqual(mine);
  });

  it('survives an enclosing rt.scope(): what the Trainer, its pruner and the data hold is kept', async () => {
    const model = await rt.scope(async () => mlp(4));
    const data = await rt.scope(async () => (await Dataset.builtin(rt, 'digits')).split(0.2, 0)[0]);
    const pruner = globalMagnitude({ sparsity: 0.5, rounds: 2 });
    const trainer = new Trainer({ model, optimizer: heavyBall({ lr: 0.05 }), plugins: [pruner], epochs: 1, batchSize: 128, progress: 'none' });
    const first = await rt.scope(() => trainer.fit(data));
    // the next fit uses the step program, the parameters, the velocities and the masks
    // made inside that scope (it failed with 'tensor #… was freed')
    const next = await trainer.fit(data);
    expect(next[0].epoch).toBe(1);
    expect(next[0].loss).toBeLessThan(first[0].loss);
    expect(pruner.rounds).toBe(2);
    const path = join(tempDir(), 'scoped.safetensors');
    await rt.scope(() => trainer.save(path));
    await trainer.save(path);
  });

  it('evaluates before training without attaching the plugins: the weights are untouched', async () => {
    const model = await mlp(5);
    const before = await values(model);
    const pruner = globalMagnitude({ sparsity: 0.5 }); // prunes when attached (atEpoch 0)
    const trainer = new Trainer({ model, optimizer: heavyBall({ lr: 0.05 }), plugins: [pruner], epochs: 1, batchSize: 128, progress: 'none' });
    const baseline = await trainer.evaluate(test);
    expect(baseline.accuracy).toBeLessThan(0.5);
    expect(await values(model)).toEqual(before);
    expect(pruner.rounds).toBe(0);
    // a checkpoint before training holds the model and optimizer, not yet the plugins
    const path = join(tempDir(), 'baseline.safetensors');
    await trainer.save(path);
    const file = await readSafetensors(path);
    expect(Object.keys(file.tensors).filter((k) => k.startsWith('pruner'))).toEqual([]);
    expect(JSON.parse(file.metadata['liaison.trainer']).attached).toBe(false);
    expect(await values(model)).toEqual(before);
    // training attaches (and prunes); a Trainer resumed from the baseline does the same
    const h = await trainer.fit(train);
    expect(pruner.rounds).toBe(1);
    const again = new Trainer({ model: await mlp(6), optimizer: heavyBall({ lr: 0.05 }), plugins: [globalMagnitude({ sparsity: 0.5 })], epochs: 1, batchSize: 128, progress: 'none' });
    await again.resume(path);
    expect(await values(again.model)).toEqual(before);
    const h2 = await again.fit(train);
    expect(h2[0].loss).toBeCloseTo(h[0].loss, 5);
  });

  it('gives two plugins of one kind their own checkpoint names, and resumes both', async () => {
    const dir = tempDir();
    const setup = async (seed: number) => ({
      model: await mlp(seed), optimizer: heavyBall({ lr: 0.05, beta: 0.9 }),
      plugins: [layerMagnitude({ sparsity: 0.5, rounds: 2, layer: 0 }), layerMagnitude({ sparsity: 0.8, rounds: 2, layer: 1 })],
      batchSize: 64, seed: 1, progress: 'none' as const,
    });
    const straight = new Trainer({ ...(await setup(0)), checkpointDir: dir });
    const full = await straight.fit(train, { epochs: 3 });
    const zeros = async (name: string) => Array.from((await straight.model.param(name).toArray()) as Float32Array).filter((v) => v === 0).length;
    expect(await zeros('layers.0.weight')).toBe(64 * 64 * 0.5);
    expect(await zeros('layers.1.weight')).toBe(Math.round(10 * 64 * 0.8));
    // the first plugin keeps the prefix it asked for; the second, at position 1, gets '#1'
    const names = Object.keys((await readSafetensors(join(dir, 'epoch-1.safetensors'))).tensors).filter((k) => k.startsWith('pruner'));
    expect(names.sort()).toEqual(['pruner#1.#round', 'pruner#1.layers.1.weight', 'pruner.#round', 'pruner.layers.0.weight']);
    const resumed = await Trainer.resume(join(dir, 'epoch-1.safetensors'), await setup(7));
    const rest = await resumed.fit(train, { epochs: 2 });
    rest.forEach((r, i) => expect(r.loss).toBeCloseTo(full[i + 1].loss, 5));
    const [a, b] = await Promise.all([values(straight.model), values(resumed.model)]);
    a.forEach((pa, i) => pa.forEach((v, j) => expect(b[i][j]).toBeCloseTo(v, 5)));
  });

  it('lets the steps in flight land before a failed fit() rejects: their events and records are kept', async () => {
    const metricsFile = join(tempDir(), 'failed.jsonl');
    const trainer = new Trainer({ model: await mlp(), optimizer: brokenSchedule(), epochs: 1, batchSize: 32, logEvery: 1, inFlight: 8, progress: 'none', metricsFile });
    const seen: number[] = [];
    trainer.on('progress', (p) => seen.push(p.step));
    await expect(trainer.fit(train)).rejects.toThrow(/learningRate\(7\) returned NaN/);
    const atRejection = [...seen];
    await new Promise((r) => setTimeout(r, 200));
    expect(atRejection).toEqual([1, 2, 3, 4, 5, 6]);
    expect(seen).toEqual(atRejection); // nothing after the rejection
    expect(readMetrics(metricsFile).filter((r) => r.kind === 'step').map((r) => r.step)).toEqual([1, 2, 3, 4, 5, 6]);
  });

  it('rejects a failing evaluation once, with no unhandled rejection left behind', async () => {
    const stray: unknown[] = [];
    const onStray = (e: unknown) => { stray.push(e); };
    process.on('unhandledRejection', onStray);
    try {
      // 5 outputs, digits has 10 classes: cross_entropy fails in the runtime, and both reads
      // of the batch (loss and accuracy) reject
      const narrow = await Model.build(rt, { kind: 'mlp', sizes: [64, 16, 5] }, { seed: 0 });
      await expect(evaluate(narrow, test, { loss: 'cross_entropy' })).rejects.toThrow(/cross_entropy/);
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      process.off('unhandledRejection', onStray);
    }
    expect(stray).toEqual([]);
  });

  it('checks the eval set and the evaluation options when fit() starts, not an epoch later', async () => {
    const trainer = new Trainer({ model: await mlp(), optimizer: gd(), epochs: 1, progress: 'none' });
    const reg = await Dataset.builtin(rt, 'diabetes');
    await expect(trainer.fit(train, { eval: reg })).rejects.toThrow(/loss 'cross_entropy' needs integer class targets, and the eval set's y is float/);
    await expect(trainer.fit(train, { eval: {} as never })).rejects.toThrow(/opts\.eval must be a Dataset/);
    const text = TextCorpus.fromBytes(rt, new TextEncoder().encode('the quick brown fox jumps over the lazy dog. '.repeat(8)));
    await expect(trainer.fitLM(text.sampler(2, 8), { stepsPerEpoch: 2, eval: test as never })).rejects.toThrow(/opts\.eval must be a TextCorpus/);
    await expect(trainer.fitLM(text.sampler(2, 8), { stepsPerEpoch: 2, eval: text, evalWindows: 0 })).rejects.toThrow(/evalWindows must be an integer >= 1, got 0/);
    expect(trainer.step).toBe(0); // refused before any step
    const gpt = await Model.build(rt, { kind: 'gpt', vocab: 128, context: 8, dim: 16, layers: 1, heads: 2 }, { seed: 0 });
    await expect(evaluate(gpt, text, { loss: 'cross_entropy', context: 8, batchSize: 0 })).rejects.toThrow(/evaluate: batchSize must be an integer >= 1, got 0/);
    await expect(evaluate(gpt, text, { loss: 'cross_entropy', context: 8, maxWindows: 0 })).rejects.toThrow(/evaluate: maxWindows must be an integer >= 1, got 0/);
    expect((await evaluate(gpt, text, { loss: 'cross_entropy', context: 8, maxWindows: 3, batchSize: 2 })).perplexity).toBeGreaterThan(1);
  });

  it('costs at most one round trip per step and uploads nothing per step', async () => {
    const conn = (rt as unknown as { conn: { request: (kind: string, fields?: { ops?: { op: string }[] }) => Promise<unknown> } }).conn;
    const original = conn.request.bind(conn);
    const trainer = new Trainer({ model: await mlp(), optimizer: gd({ lr: 0.5 }), epochs: 3, batchSize: 64, logEvery: 5, inFlight: 2, progress: 'none' });
    await trainer.fit(train, { epochs: 1 }); // attach, set up and trace outside the count
    const before = trainer.step;
    let batches = 0;
    const ops: Record<string, number> = {};
    let unconfirmed = 0; // steps sent whose batch has not come back
    let most = 0;
    conn.request = (kind, fields) => {
      if (kind !== 'batch') return original(kind, fields as never);
      batches++;
      const runs = (fields?.ops ?? []).filter((o) => o.op === 'program_run').length;
      for (const o of fields?.ops ?? []) ops[o.op] = (ops[o.op] ?? 0) + 1;
      unconfirmed += runs;
      most = Math.max(most, unconfirmed);
      const p = original(kind, fields as never);
      p.finally(() => { unconfirmed -= runs; }).catch(() => undefined);
      return p;
    };
    let h;
    try {
      h = await trainer.fit(train);
    } finally {
      conn.request = original;
    }
    const steps = h[2].step - before;
    expect(ops.program_run).toBe(steps);
    expect(ops.upload ?? 0).toBe(0);
    expect(batches).toBeLessThanOrEqual(steps + 1); // each step, and the last frees; epoch ends ride with steps
    expect(batches).toBeGreaterThan(steps / 2); // and steps really are sent ahead, not all at the end
    expect(most).toBeLessThanOrEqual(2); // inFlight: never more steps unconfirmed than that
    expect(most).toBe(2); // and the window is used
  });

  it('refuses a bad config naming the field', async () => {
    const model = await mlp();
    const make = (c: object) => () => new Trainer({ model, optimizer: gd(), ...c });
    expect(make({ batchSize: 0 })).toThrow(/config field 'batchSize' \(rows per training step\): expected integer to be greater or equal to 1, got 0/);
    expect(make({ loss: 'hinge' })).toThrow(/config field 'loss'/);
    expect(make({ epoch: 3 })).toThrow(/unknown config field 'epoch'; the fields are model, optimizer, plugins, epochs/);
    expect(make({ progress: 'fancy' })).toThrow(LiaisonError);
    expect(make({ batchSize: undefined })().config.batchSize).toBe(64); // undefined takes the default
    // one check behind the Trainer's config and every plugin's: the same message, the same defaults
    const schema = Type.Object({ width: Type.Integer({ minimum: 1, default: 4, description: 'how wide' }) });
    expect(() => checkAgainstSchema(schema, { width: 0 }, 'widget')).toThrow(/^widget: config field 'width' \(how wide\): expected integer to be greater or equal to 1, got 0$/);
    expect(() => checkAgainstSchema(schema, { height: 1 }, 'widget', ['name'])).toThrow(/^widget: unknown config field 'height'; the fields are name, width$/);
    expect(checkAgainstSchema(schema, { width: undefined }, 'widget')).toEqual({ width: 4 });
    expect(() => heavyBall({ beta: 2 })).toThrow(/^momentum-optimizer 'test-heavy-ball': config field 'beta' \(momentum\): expected number to be less or equal to 1, got 2$/);
    expect(heavyBall({ beta: undefined }).config.beta).toBe(0.9);
    expect(() => new Trainer({ model, optimizer: {} as never })).toThrow(/optimizer must be a MomentumOptimizer/);
    const reg = await Dataset.builtin(rt, 'diabetes');
    await expect(new Trainer({ model, optimizer: gd(), progress: 'none' }).fit(reg)).rejects.toThrow(/loss 'cross_entropy' needs integer class targets/);
  });

  it("prints nothing with progress 'none', and a bar with 'bar'", async () => {
    const write = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    try {
      await new Trainer({ model: await mlp(), optimizer: gd(), epochs: 1, progress: 'none' }).fit(test);
      expect(write).not.toHaveBeenCalled();
      expect(out).not.toHaveBeenCalled();
      await new Trainer({ model: await mlp(), optimizer: gd(), epochs: 1, progress: 'bar' }).fit(test);
      expect(write.mock.calls.map((c) => String(c[0])).join('')).toMatch(/epoch 1\/1 \| step \d+\/\d+/);
    } finally {
      write.mockRestore();
      out.mockRestore();
    }
  });

  it('fits a regression with mse, and says once when TensorBoard is missing', async () => {
    const [tr, te] = (await Dataset.builtin(rt, 'diabetes')).split(0.2, 0);
    const logdir = join(tempDir(), 'tb');
    const notices: string[] = [];
    const write = vi.spyOn(process.stderr, 'write').mockImplementation((s) => { notices.push(String(s)); return true; });
    let h;
    try {
      const model = await Model.build(rt, { kind: 'mlp', sizes: [10, 16, 1] }, { seed: 0 });
      h = await new Trainer({ model, optimizer: gd({ lr: 0.05 }), loss: 'mse', epochs: 3, progress: 'none', tensorboardDir: logdir }).fit(tr, { eval: te });
    } finally {
      write.mockRestore();
    }
    expect(h[2].loss).toBeLessThan(h[0].loss);
    expect(h[2].accuracy).toBeUndefined();
    if (notices.length) {
      expect(notices).toHaveLength(1); // the runtime's Python has no tensorboard: one line, and training went on
      expect(notices[0]).toMatch(/TensorBoard/);
    } else {
      expect(readdirSync(logdir).some((f) => f.startsWith('events.out.tfevents'))).toBe(true);
    }
  });

  it('trains a small GPT on text drawn inside the step, and scores held-out text', async () => {
    const corpus = await TextCorpus.load(rt, 'pydoc');
    const [tr, held] = corpus.split(0.05);
    const model = await Model.build(rt, { kind: 'gpt', vocab: 128, context: 32, dim: 32, layers: 1, heads: 2 }, { seed: 0 });
    const trainer = new Trainer({ model, optimizer: gd({ lr: 0.5 }), logEvery: 10, progress: 'none' });
    const before = await trainer.evaluate(held, { context: 32, maxWindows: 64 });
    const h = await trainer.fitLM(tr.sampler(16, 32), { epochs: 2, stepsPerEpoch: 30, eval: held, evalWindows: 64 });
    expect(h[1].step).toBe(60);
    expect(h[1].perplexity).toBeLessThan(before.perplexity! * 0.6);
    expect(before.perplexity).toBeGreaterThan(60); // about uniform over 128 tokens at first
  });
});
