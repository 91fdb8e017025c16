// The score-based pruner template (sdk/families/pruners/score.ts): a plugin writes score()
// only; the base does the top-k (global or per layer) among the entries still kept, the
// rounds and the masking mode. magnitude and random are two plugins on it.
import { Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { heavyBall, magnitude, random } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import { ScorePrunerBase, ScorePrunerFields } from '../sdk/families/pruners/score.js';
import type { PrunableWeight, PruneContext, PruneMode } from '../sdk/families/pruners/types.js';
import { Model } from '../sdk/model.js';
import type { PluginMeta } from '../sdk/plugin.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);
const SHAPES = [[12, 6], [5, 12], [3, 2, 3, 3]];
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const weightsOf = (seed: number): PrunableWeight[] => SHAPES.map((shape, i) => ({ name: `layers.${i}.weight`, weight: rt.randn(shape, { seed: seed + i }), shape }));

/** Magnitude's masks() as it was written before the template (the reference for "same results"). */
function oldMagnitude(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
  const sizes = weights.map((w) => numel(w.shape));
  const total = sizes.reduce((a, b) => a + b, 0);
  const keep = Math.round((1 - ctx.sparsity) * total);
  const scores = rt.cat(weights.map((w, i) => w.weight.abs().where(ctx.current[i].gt(0), -1).reshape([-1])));
  const [, idx] = scores.topk(keep, 0, true, false);
  const flat = rt.zeros([total]).scatter(0, idx, 1);
  return flat.split(sizes, 0).map((m, i) => m.reshape(weights[i].shape).mul(ctx.current[i]));
}

/** Keeps the smallest |w|: scores −|w| are all ≤ 0, so a fixed floor such as −1 would rank pruned entries above live ones. */
class Smallest extends ScorePrunerBase<{ sparsity: number; atEpoch: number; rounds: number; scope?: 'global' | 'layer'; mode?: PruneMode }> {
  score({ weight }: PrunableWeight): Tensor { return weight.abs().neg().mul(10); }
}
const meta: PluginMeta = Object.freeze({ name: 'smallest', version: '1.0.0', family: 'pruner', schema: Type.Object({ ...ScorePrunerFields }), description: 'keeps the smallest |w| (test)' });

describe('score-based pruner template', () => {
  it('magnitude gives the masks its own top-k/scatter/split gave, over two rounds with pruned entries', async () => {
    const ws = weightsOf(11);
    let [cur, old] = [SHAPES.map((s) => rt.ones(s)), SHAPES.map((s) => rt.ones(s))];
    const pruner = magnitude();
    for (const [round, sparsity] of [[0, 0.5], [1, 0.75]] as const) {
      cur = pruner.masks(ws, { rt, round, current: cur, sparsity });
      old = oldMagnitude(ws, { rt, round, current: old, sparsity });
      // as in training: the pruned entries of the weights are zero after a round
      ws.forEach((w, i) => w.weight.mul_(cur[i]));
      for (const i of SHAPES.keys()) expect(await list(cur[i])).toEqual(await list(old[i]));
    }
  });

  it('a plugin writing only score() gets top-k among the live entries whatever the range of its scores', async () => {
    const w = rt.tensor([0.1, -5, 0.2, 3, -0.3, 4], [2, 3]);
    const p = new Smallest({ sparsity: 0.5, atEpoch: 0, rounds: 1, scope: 'global' }, meta);
    const current = rt.tensor([0, 1, 1, 1, 1, 1], [2, 3]); // the 0.1 was pruned earlier: its −1 score is the highest
    const [m] = p.masks([{ name: 'w', weight: w, shape: [2, 3] }], { rt, round: 1, current: [current], sparsity: 0.5 });
    expect(await list(m)).toEqual([0, 0, 1, 1, 1, 0]); // the 3 smallest live |w|: 0.2, 3, 0.3
  });

  it("scope 'layer' prunes each weight at the sparsity; 'global' lets layers differ", async () => {
    const ws = weightsOf(5);
    // scale the second weight up: a global threshold takes the other layers' entries first
    ws[1].weight.mul_(10);
    const ctx = { rt, round: 0, current: SHAPES.map((s) => rt.ones(s)), sparsity: 0.6 };
    const layer = magnitude({ scope: 'layer' }).masks(ws, ctx);
    const global = magnitude().masks(ws, ctx);
    const pruned = async (ms: Tensor[]) => Promise.all(ms.map(async (m) => (await list(m)).filter((v) => v === 0).length));
    expect(await pruned(layer)).toEqual(SHAPES.map((s) => Math.round(0.6 * numel(s))));
    const g = await pruned(global);
    expect(g[1]).toBeLessThan(Math.round(0.6 * numel(SHAPES[1])));
    expect(g.reduce((a, b) => a + b, 0)).toBe(Math.round(0.6 * SHAPES.reduce((a, s) => a + numel(s), 0)));
  });

  it('random: the same seed gives the same masks, another seed others, each layer at the sparsity', async () => {
    const ws = weightsOf(2);
    const ctx = { rt, round: 0, current: SHAPES.map((s) => rt.ones(s)), sparsity: 0.7 };
    const [a, b, c] = [random({ seed: 1 }), random({ seed: 1 }), random({ seed: 2 })].map((p) => p.masks(ws, ctx));
    const flat = async (ms: Tensor[]) => (await Promise.all(ms.map(list))).flat();
    const [fa, fb, fc] = [await flat(a), await flat(b), await flat(c)];
    expect(fa).toEqual(fb);
    expect(fa).not.toEqual(fc);
    for (const [i, m] of a.entries()) expect((await list(m)).filter((v) => v === 0).length).toBe(Math.round(0.7 * numel(SHAPES[i])));
    // independent of the weights' values: another set of weights, the same masks
    expect(await flat(random({ seed: 1 }).masks(weightsOf(9), ctx))).toEqual(fa);
  });

  it('random in a Trainer: iterative rounds, every layer ends at the sparsity, nothing revived by momentum', async () => {
    const data = (await Dataset.builtin(rt, 'digits')).split(0.8, 0)[1];
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 20, 10] }, { seed: 1 });
    const pruner = random({ sparsity: 0.75, rounds: 2, seed: 4 });
    const trainer = new Trainer({ model, optimizer: heavyBall({ lr: 0.05 }), plugins: [pruner], epochs: 3, batchSize: 64, loss: 'cross_entropy', progress: 'none', logEvery: 1000 });
    try {
      await trainer.fit(data);
      expect(pruner.rounds).toBe(2);
      for (const [name, n] of [['layers.0.weight', 64 * 20], ['layers.1.weight', 20 * 10]] as const) {
        const zeros = await model.param(name).eq(0).sum().item();
        // round 0 keeps round(0.5·n) (√0.25 per round), round 1 round(0.25·n) of those
        expect(zeros, name).toBe(n - Math.round(0.25 * n));
      }
    } finally {
      trainer.free();
      pruner.free();
      model.free();
      data.free();
    }
  }, 60_000);

  it('each round prunes the same fraction of the weights still kept (one-shot with one round)', () => {
    const p = magnitude({ sparsity: 0.9, rounds: 3 });
    const kept = [0, 1, 2].map((r) => 1 - p.sparsityAt(r));
    expect(kept[1] / kept[0]).toBeCloseTo(kept[0], 12);
    expect(kept[2] / kept[1]).toBeCloseTo(kept[0], 12);
    expect(kept[2]).toBeCloseTo(0.1, 12);
    expect(magnitude({ sparsity: 0.9 }).sparsityAt(0)).toBeCloseTo(0.9, 12);
  });

  it("the masking mode: 'inplace' by default; an unknown mode is refused by the schema and, set by hand, by setup()", async () => {
    expect(magnitude().mode).toBe('inplace');
    expect(magnitude({ mode: 'hook' }).mode).toBe('hook');
    expect(() => magnitude({ mode: 'forward' } as never)).toThrow(LiaisonError);
    const model = await Model.build(rt, { kind: 'mlp', sizes: [4, 3] }, { seed: 0 });
    try {
      const p = new Smallest({ sparsity: 0.5, atEpoch: 0, rounds: 1, mode: 'forward' } as never, meta);
      expect(() => p.setup(model)).toThrow(/config field 'mode' is 'forward'; the masking modes are 'inplace', 'hook'/);
    } finally {
      model.free();
    }
  });

  it("mode 'hook': the forward uses W ⊙ mask through weight hooks, the stored weights stay whole, rounds update the masks in place, free() takes the hooks off", async () => {
    const data = await Dataset.builtin(rt, 'digits');
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 24, 10] }, { seed: 2 });
    const twin = await Model.build(rt, { kind: 'mlp', sizes: [64, 24, 10] }, { seed: 2 });
    const pruner = magnitude({ mode: 'hook', sparsity: 0.75, rounds: 2, atEpoch: 0 });
    const trainer = new Trainer({ model, optimizer: heavyBall({ lr: 0.05 }), plugins: [pruner], epochs: 2, batchSize: 256, progress: 'none', logEvery: 1000 });
    const x = data.x.narrow(0, 0, 16);
    const maxDiff = async (a: Tensor, b: Tensor) => a.sub(b).abs().amax().item();
    try {
      await trainer.fit(data);
      expect(pruner.rounds).toBe(2);
      const names = model.params.filter((p) => p.shape.length >= 2).map((p) => p.name);
      const masks = pruner.currentMasks();
      // the stored weights are whole (no entry is exactly zero); the masks are at the sparsity
      for (const n of names) expect(await model.param(n).eq(0).sum().item()).toBe(0);
      expect((await pruner.report()).sparsity).toBeCloseTo(0.75, 2);
      // the forward is the twin's with W ⊙ mask stored
      twin.loadState(model.state());
      for (const n of names) twin.param(n).mul_(masks[n]).free();
      expect(await maxDiff(model.forward(x, { train: false }), twin.forward(x, { train: false }))).toBeLessThan(1e-5);
      // off: the model's forward is its stored weights' again
      pruner.free();
      twin.loadState(model.state());
      expect(await maxDiff(model.forward(x, { train: false }), twin.forward(x, { train: false }))).toBe(0);
    } finally {
      trainer.free();
      pruner.free();
      twin.free();
      model.free();
      data.free();
    }
  }, 60_000);

  it("mode 'hook' needs weights of modules with a weight hook point", async () => {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [4, 3] }, { seed: 0 });
    try {
      const biases = new Smallest({ sparsity: 0.5, atEpoch: 0, rounds: 1, mode: 'hook' }, meta);
      biases.selects = () => true; // weights and biases
      expect(() => biases.setup(model)).toThrow(/'layers\.0\.bias' is not the weight of a module with one \(layers\.0\)/);
      const bare = { rt, handle: model.handle, params: model.params, param: (n: string) => model.param(n), grad: (n: string) => model.grad(n), auxLoss: () => model.auxLoss() };
      expect(() => new Smallest({ sparsity: 0.5, atEpoch: 0, rounds: 1, mode: 'hook' }, meta).setup(bare)).toThrow(/this model has none/);
    } finally {
      model.free();
    }
  });
});
