// The edge-popup pruner (plugins/pruners/edge-popup.ts) in a Trainer on the digits: the
// scores train while the stored weights stay; the forward is W ⊙ the masks it reports, each
// at the configured sparsity; with ε the weights move but stay in their ε-ball (ℓ∞ per
// entry, ℓ2 per layer); the forward's one-op mask trains the scores as the straight-through
// formula written out does; a resumed run ends where a straight one does; bad config is E_ARG
// naming the field; nothing is left behind. Plus the example's fast variant.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { heavyBall } from '../plugins/momentum/heavy-ball.js';
import { EdgePopup, edgePopup } from '../plugins/pruners/edge-popup.js';
import { Dataset } from '../sdk/data.js';
import type { TrainerPlugin, TrainingHooks } from '../sdk/hooks.js';
import { Model } from '../sdk/model.js';
import { noGrad } from '../sdk/program.js';
import { Trainer } from '../sdk/trainer.js';
import { weightHook } from '../sdk/weight-hooks.js';
import { runExample, settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
let train: Dataset;
const dirs: string[] = [];
beforeAll(async () => {
  rt = await startRuntime();
  [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
});
afterAll(async () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  await rt?.close();
});

const values = async (t: Tensor) => Array.from((await t.toArray()) as Float32Array);
const SIZES = [64, 32, 10];

/** A Trainer with `plugin` on a fresh MLP (seed 0), heavy-ball momentum. */
async function setup(plugin: EdgePopup, lr = 0.1) {
  const model = await Model.build(rt, { kind: 'mlp', sizes: SIZES }, { seed: 0 });
  const trainer = new Trainer({ model, optimizer: heavyBall({ lr, momentum: 0.9 }), plugins: [plugin], batchSize: 128, seed: 0, progress: 'none', logEvery: 1000 });
  const free = () => { trainer.free(); plugin.free(); model.free(); };
  return { model, trainer, free };
}

describe('edge-popup', () => {
  it('trains the scores, leaves every stored weight as it was, and the forward uses W ⊙ currentMasks() at the sparsity', async () => {
    const plugin = edgePopup({ sparsity: 0.7, seed: 3 });
    const { model, trainer, free } = await setup(plugin, 0.5);
    try {
      const before = await Promise.all(model.params.map((p) => values(model.param(p.name))));
      const h = await trainer.fit(train, { epochs: 3 });
      expect(h[2].loss).toBeLessThan(h[0].loss);
      // frozen: weights and biases bit for bit
      expect(await Promise.all(model.params.map((p) => values(model.param(p.name))))).toEqual(before);
      const masks = plugin.currentMasks();
      expect(Object.keys(masks)).toEqual(['layers.0.weight', 'layers.1.weight']);
      const scores = trainer.paramList().filter((p) => p.plugin);
      expect(scores.map((s) => [s.name, s.trainable])).toEqual([['scores.layers.0', true], ['scores.layers.1', true]]);
      for (const [name, m] of Object.entries(masks)) {
        const n = model.params.find((p) => p.name === name)!.numel;
        expect(await m.sum().item()).toBe(Math.round(0.3 * n)); // exactly the kept count, per layer
      }
      // the masks moved: the trained ticket is not the initial (seeded) one
      const initial = plugin.masks([{ name: 'other', weight: model.param('layers.0.weight'), shape: [32, 64] }], { rt, round: 0, current: [], sparsity: 0.7 })[0];
      expect(await initial.ne(masks['layers.0.weight']).sum().item()).toBeGreaterThan(0);
      // the forward: the hooked model against a twin holding W ⊙ mask
      const x = train.x.narrow(0, 0, 16);
      const twin = await Model.build(rt, { kind: 'mlp', sizes: SIZES }, { seed: 0 });
      for (const [name, m] of Object.entries(masks)) twin.param(name).mul_(m);
      expect(await model.forward(x).sub(twin.forward(x)).abs().amax().item()).toBeLessThan(1e-5);
      twin.free();
      const report = await plugin.report();
      expect(report.layers.map((l) => l.sparsity)).toEqual([Math.round(0.7 * 2048) / 2048, Math.round(0.7 * 320) / 320]);
    } finally {
      free();
    }
  }, 60_000);

  it("masks() of bare weights: seeded, exact per layer, and the mask a Trainer starts from", async () => {
    const ws = [[20, 8], [6, 2, 3, 3]].map((shape, i) => ({ name: `w${i}`, weight: rt.randn(shape, { seed: i }), shape }));
    const ctx = { rt, round: 0, current: [], sparsity: 0.6 };
    const a = edgePopup({ seed: 1 }).masks(ws, ctx), b = edgePopup({ seed: 1 }).masks(ws, ctx), c = edgePopup({ seed: 2 }).masks(ws, ctx);
    for (const [i, m] of a.entries()) {
      expect(await m.sum().item()).toBe(Math.round(0.4 * ws[i].shape.reduce((x, y) => x * y)));
      expect(await values(m)).toEqual(await values(b[i]));
    }
    expect(await a[0].ne(c[0]).sum().item()).toBeGreaterThan(0);
    // attached, before any step, the mask in force is the bare one of the same seed
    const plugin = edgePopup({ sparsity: 0.6, seed: 1 });
    // a rate too small to move an f32 score: the epoch attaches the plugin and changes nothing
    const { model, trainer, free } = await setup(plugin, 1e-12);
    try {
      await trainer.fit(train, { epochs: 1 });
      const w = model.param('layers.0.weight');
      const bare = edgePopup({ seed: 1 }).masks([{ name: 'x', weight: w, shape: [32, 64] }], ctx)[0];
      expect(await values(plugin.currentMasks()['layers.0.weight'])).toEqual(await values(bare));
    } finally {
      free();
    }
  }, 60_000);

  it("the forward's topk_mask trains the scores as GetSubnet written out: exact top-k, hard + (|s| − stop_grad |s|), bit for bit", async () => {
    // the straight-through estimator in plain ops, scores drawn as the plugin draws them (seed 0, layer i)
    class Written implements TrainerPlugin {
      scores: Record<string, Tensor> = {};
      constructor(readonly model: Model) {}
      attach(h: TrainingHooks): void {
        h.freeze(this.model.params.map((p) => p.name));
        this.model.hookModules.weight.forEach((m, i) => {
          const shape = this.model.params.find((p) => p.name === `${m}.weight`)!.shape;
          this.scores[m] = h.addParam(`scores.${m}`, { shape, init: 'uniform', scale: 1 / Math.sqrt(shape[1]), seed: i, module: m });
        });
        weightHook(this.model, this.model.hookModules.weight, (w, { module, shape }) => {
          const n = shape.reduce((a, b) => a * b, 1), mag = this.scores[module].abs();
          const [hard, frozen] = noGrad(h.rt, () => {
            const [, idx] = mag.reshape([-1]).topk(Math.round(0.4 * n), 0, true, false);
            return [rt.zeros([n]).scatter(0, idx, 1).reshape([...shape]), mag.clone()];
          });
          return w.mul(hard.add(mag.sub(frozen)));
        }, { name: 'written' });
      }
    }
    const plugin = edgePopup({ sparsity: 0.6 });
    const ours = await setup(plugin, 0.5);
    const model = await Model.build(rt, { kind: 'mlp', sizes: SIZES }, { seed: 0 });
    const written = new Written(model);
    const trainer = new Trainer({ model, optimizer: heavyBall({ lr: 0.5, momentum: 0.9 }), plugins: [written], batchSize: 128, seed: 0, progress: 'none', logEvery: 1000 });
    try {
      const [a, b] = [await ours.trainer.fit(train, { epochs: 2 }), await trainer.fit(train, { epochs: 2 })];
      expect(a.map((e) => e.loss)).toEqual(b.map((e) => e.loss));
      const mine = plugin.scores();
      expect(Object.keys(mine)).toEqual(Object.keys(written.scores));
      for (const [m, s] of Object.entries(written.scores)) {
        expect(await values(mine[m])).toEqual(await values(s));
        expect(await values(mine[m])).not.toEqual(await values(rt.rand(s.shape as number[], { seed: Number(m.slice(-1)) }).mul(2).sub(1).mul(1 / Math.sqrt(s.shape![1] as number)))); // they trained
      }
    } finally {
      ours.free(); trainer.free(); model.free();
    }
  }, 60_000);

  for (const norm of ['linf', 'l2'] as const) {
    it(`ε = 0.5 (${norm}): the weights train, each layer within its ball around W₀, biases frozen`, async () => {
      const plugin = edgePopup({ sparsity: 0.5, epsilon: 0.5, norm });
      const { model, trainer, free } = await setup(plugin, 0.5);
      try {
        const w0 = await Promise.all(model.params.map((p) => model.param(p.name).clone().keep()));
        await trainer.fit(train, { epochs: 2 });
        for (const [i, p] of model.params.entries()) {
          const d = model.param(p.name).sub(w0[i]);
          if (p.name.endsWith('bias')) {
            expect(await d.abs().amax().item()).toBe(0);
            continue;
          }
          const std = await w0[i].std().item();
          if (norm === 'linf') {
            const far = await d.abs().amax().item();
            expect(far).toBeLessThanOrEqual(0.5 * std * (1 + 1e-5));
            expect(far).toBeGreaterThan(0.49 * std); // lr 0.5 pushes some entries to the boundary
          } else {
            const length = await d.norm().item();
            const radius = 0.5 * std * Math.sqrt(p.numel);
            expect(length).toBeLessThanOrEqual(radius * (1 + 1e-4));
            expect(length).toBeGreaterThan(0.99 * radius);
          }
        }
        for (const t of w0) t.free();
      } finally {
        free();
      }
    }, 60_000);
  }

  it('resumed from a checkpoint after epoch 1: the scores, masks and perturbed weights of a straight run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'liaison-edge-popup-'));
    dirs.push(dir);
    const run = async (from?: string, epochs = 3) => {
      const plugin = edgePopup({ sparsity: 0.5, epsilon: 0.3, seed: 5 });
      const model = await Model.build(rt, { kind: 'mlp', sizes: SIZES }, { seed: 0 });
      const opts = { model, optimizer: heavyBall({ lr: 0.3, momentum: 0.9 }), plugins: [plugin], batchSize: 128, seed: 0, progress: 'none' as const, logEvery: 1000 };
      const trainer = from ? await Trainer.resume(from, opts) : new Trainer({ ...opts, checkpointDir: dir });
      if (epochs) await trainer.fit(train, { epochs: from ? epochs - 1 : epochs });
      const out = {
        weights: await Promise.all(model.params.map((p) => values(model.param(p.name)))),
        masks: await Promise.all(Object.values(plugin.currentMasks()).map(values)),
        scores: await Promise.all(Object.values(plugin.scores()).map(values)),
      };
      trainer.free(); plugin.free(); model.free();
      return out;
    };
    const straight = await run();
    const resumed = await run(join(dir, 'epoch-1.safetensors'));
    expect(resumed.masks).toEqual(straight.masks);
    expect(resumed.scores).toEqual(straight.scores);
    const gap = (a: number[][], b: number[][]) => Math.max(...a.map((w, i) => Math.max(...w.map((v, j) => Math.abs(v - b[i][j])))));
    expect(resumed.scores).toHaveLength(2);
    expect(gap(resumed.scores, straight.scores)).toBeLessThan(1e-6);
    expect(gap(resumed.weights, straight.weights)).toBeLessThan(1e-6);
    // and the run did move them: a resume that restored nothing would not match, a run that trained nothing would
    expect(gap(straight.weights, (await run(undefined, 0)).weights)).toBeGreaterThan(1e-3);
  }, 60_000);

  it('refuses bad config and a modules pattern that matches nothing with E_ARG naming the field', async () => {
    const field = (fn: () => unknown) => { try { fn(); } catch (e) { return e instanceof LiaisonError && e.code === 'E_ARG' ? e.param : `other: ${String(e)}`; } return 'no error'; };
    expect(field(() => edgePopup({ epsilon: -1 }))).toBe('epsilon');
    expect(field(() => edgePopup({ sparsity: 1 }))).toBe('sparsity');
    expect(field(() => edgePopup({ norm: 'l1' as never }))).toBe('norm');
    expect(field(() => edgePopup({ modules: '(' }).selects({ name: 'layers.0.weight', shape: [2, 2], dtype: 'f32', numel: 4 }))).toBe('modules');
    const plugin = edgePopup({ modules: 'convs\\.\\d+' });
    const { trainer, free } = await setup(plugin);
    try {
      const err = await trainer.fit(train, { epochs: 1 }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(LiaisonError);
      expect((err as LiaisonError).param).toBe('modules');
      expect((err as Error).message).toMatch(/layers\.0, layers\.1/);
    } finally {
      free();
    }
  }, 30_000);

  it('leaves nothing behind: trainer, plugin (its hooks, W₀ and radii) and model freed', async () => {
    const run = async () => {
      const { trainer, free } = await setup(edgePopup({ epsilon: 0.2 }));
      await trainer.fit(train, { epochs: 1 });
      free();
    };
    await run(); // warm: registrations, caches
    const base = await settledObjects(rt);
    await run();
    expect(await settledObjects(rt)).toBe(base);
  }, 60_000);
});

describe('examples/strong-tickets.ts', () => {
  it('runs its fast variant: the table with edge-popup and ε columns, the dense and random rows, the PNG', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'liaison-slt-'));
    dirs.push(dir);
    const { code, out, err } = await runExample(['examples/strong-tickets.ts', '--out', dir], {
      LIAISON_SLT_SEEDS: '1', LIAISON_SLT_EPOCHS: '1', LIAISON_SLT_KEEP: '0.5', LIAISON_SLT_EPS: '1',
    });
    expect(code, `${out}\n${err}`).toBe(0);
    const rows = readFileSync(join(dir, 'strong-tickets.md'), 'utf8').split('\n').filter((l) => l.startsWith('|')).map((l) => l.slice(1, -1).split('|').map((c) => c.trim()));
    expect(rows[0]).toEqual(['weights kept', 'edge-popup (ε = 0)', 'ε = 1']);
    expect(rows.slice(2).map((r) => r[0])).toEqual(['50%', 'dense, trained', 'random, untrained']);
    const pct = (c: string) => Number(c);
    // one epoch finds a ticket far above chance in the random network, which is near chance itself
    expect(pct(rows[2][1])).toBeGreaterThan(50);
    expect(pct(rows[4][1])).toBeLessThan(30);
    const png = readFileSync(join(dir, 'strong-tickets.png'));
    expect([...png.subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
    expect(existsSync(join(dir, 'strong-tickets.md'))).toBe(true);
  }, 180_000);
});
