// Structured units (sdk/units.ts) through a real runtime: a sub-model built from sliced
// parameters computes exactly what the full model computes with the dropped units zeroed
// (their rows, biases and input columns), slices scatter back in place, and bad requests are
// refused naming the group.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { Model } from '../sdk/model.js';
import type { ModelSpec } from '../sdk/model-spec.js';
import { flopsOf, scatterParams, shrink, sliceParams, subSpec, type UnitGroup, unitsOf } from '../sdk/units.js';
import { settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => {
  rt = await startRuntime();
});
afterAll(async () => {
  await rt?.close();
});

const MLP: ModelSpec = { kind: 'mlp', sizes: [64, 30, 20, 10] };
const CNN: ModelSpec = { kind: 'cnn', image: [8, 8], channels: [4, 6], hidden: 12, classes: 10 };
const KEEP_MLP = { 'layers.0': [0, 3, 4, 9, 17, 29], 'layers.1': [1, 2, 5, 11, 19] };
const KEEP_CNN = { 'convs.0': [1, 3], 'convs.1': [0, 2, 5], fc: [0, 4, 6, 7, 11] };

function index(units: number[]): Tensor {
  return rt.tensor(BigInt64Array.from(units, BigInt), [units.length]);
}

function keepOf(units: Record<string, number[]>): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(units).map(([k, v]) => [k, index(v)]));
}

async function values(t: Tensor): Promise<number[]> {
  return Array.from(await t.toArray() as Float32Array);
}

/** Zero the dropped units' slices of every member, with masks made here (not with scatterParams). */
function zeroDropped(model: Model, groups: UnitGroup[], units: Record<string, number[]>): void {
  for (const g of groups) {
    const kept = units[g.name];
    if (!kept) continue;
    for (const m of g.members) {
      const shape = model.params.find((p) => p.name === m.param)!.shape as number[];
      const mask = new Float32Array(shape[m.dim]);
      for (const j of kept) mask.fill(1, j * m.block, (j + 1) * m.block);
      const p = model.param(m.param);
      p.mul_(rt.tensor(mask, shape.map((s, d) => (d === m.dim ? s : 1)))).free();
      p.free();
    }
  }
}

function maxDiff(a: number[], b: number[]): number {
  expect(a.length).toBe(b.length);
  return Math.max(...a.map((v, i) => Math.abs(v - b[i])));
}

describe('units', () => {
  it('describes the groups and flops of an mlp and a cnn, and none for a gpt', async () => {
    const mlp = await Model.build(rt, MLP, { seed: 0 });
    const cnn = await Model.build(rt, CNN, { seed: 0 });
    const gpt = await Model.build(rt, { kind: 'gpt', vocab: 16, context: 4, dim: 8, layers: 1, heads: 2 });
    expect((await unitsOf(mlp)).map((g) => [g.name, g.size, g.field])).toEqual([['layers.0', 30, 'sizes.1'], ['layers.1', 20, 'sizes.2']]);
    expect((await unitsOf(cnn)).map((g) => [g.name, g.kind, g.size])).toEqual([['convs.0', 'filter', 4], ['convs.1', 'filter', 6], ['fc', 'neuron', 12]]);
    expect(await flopsOf(mlp)).toBe(64 * 30 + 30 * 20 + 20 * 10);
    expect(await unitsOf(gpt)).toEqual([]);
    expect(await flopsOf(gpt)).toBeNull();
    for (const m of [mlp, cnn, gpt]) m.free();
  });

  it('a sub-model of sliced parameters computes the full model with the dropped units zeroed (mlp)', async () => {
    const model = await Model.build(rt, MLP, { seed: 1 });
    const groups = await unitsOf(model);
    const keep = keepOf(KEEP_MLP);
    const spec = subSpec(model, groups, { 'layers.0': 6, 'layers.1': 5 });
    expect(spec).toEqual({ ...MLP, sizes: [64, 6, 5, 10] });
    expect(MLP).toEqual({ kind: 'mlp', sizes: [64, 30, 20, 10] });  // the model's own spec is untouched
    const small = await Model.build(rt, spec);
    const parts = sliceParams(model, groups, keep);
    expect(Object.keys(parts)).toEqual(model.params.map((p) => p.name));
    small.loadState(parts);
    const x = rt.randn([7, 64], { seed: 3 });
    const got = await values(small.forward(x, { train: false }));
    zeroDropped(model, groups, KEEP_MLP);
    const want = await values(model.forward(x, { train: false }));
    expect(maxDiff(got, want)).toBeLessThan(1e-5);
    for (const m of [model, small]) m.free();
  });

  it('shrinks a cnn with filter-zeroed masks to the same logits and fewer flops', async () => {
    const model = await Model.build(rt, CNN, { seed: 2 });
    const keep = keepOf(KEEP_CNN);
    const small = await shrink(model, keep);
    expect(small.spec).toEqual({ ...CNN, channels: [2, 3], hidden: 5 });
    // by hand: 'same' convs at 8x8 and 4x4, then fc reads 3 filters x 2x2
    expect(await flopsOf(small)).toBe(2 * 1 * 9 * 64 + 3 * 2 * 9 * 16 + 3 * 4 * 5 + 5 * 10);
    expect(await flopsOf(small)).toBeLessThan((await flopsOf(model))!);
    const x = rt.rand([5, 64], { seed: 4 });
    const got = await values(small.forward(x, { train: false }));
    zeroDropped(model, await unitsOf(model), KEEP_CNN);
    const want = await values(model.forward(x, { train: false }));
    expect(maxDiff(got, want)).toBeLessThan(1e-5);
    for (const m of [model, small]) m.free();
  });

  it('scatterParams(sliceParams(x)) round-trips, leaving the dropped units alone', async () => {
    const a = await Model.build(rt, CNN, { seed: 3 });
    const b = await Model.build(rt, CNN, { seed: 4 });
    const groups = await unitsOf(a);
    const keep = keepOf(KEEP_CNN);
    const before = Object.fromEntries(await Promise.all(b.params.map(async (p) => [p.name, await values(b.param(p.name))] as const)));
    const fromA = sliceParams(a, groups, keep);
    scatterParams(b, groups, keep, fromA);
    const back = sliceParams(b, groups, keep);
    for (const n of Object.keys(fromA)) expect(await values(back[n])).toEqual(await values(fromA[n]));
    // the dropped filters of convs.1 (1, 3, 4) keep b's own weights; head.bias is no group's and is copied whole
    const w = await values(b.param('convs.1.weight'));
    const per = 4 * 9;
    for (const j of [1, 3, 4]) expect(w.slice(j * per, (j + 1) * per)).toEqual(before['convs.1.weight'].slice(j * per, (j + 1) * per));
    expect(await values(b.param('head.bias'))).toEqual(await values(a.param('head.bias')));
    for (const m of [a, b]) m.free();
  });

  it("scattering a sub-model's edited weights back changes exactly those entries", async () => {
    const model = await Model.build(rt, CNN, { seed: 5 });
    const groups = await unitsOf(model);
    const keep = keepOf(KEEP_CNN);
    const small = await shrink(model, keep);
    const before = Object.fromEntries(await Promise.all(model.params.map(async (p) => [p.name, await values(model.param(p.name))] as const)));
    small.param('convs.1.weight').add_(1).free();  // (3, 2, 3, 3): kept filters x kept input channels
    scatterParams(model, groups, keep, small.state());
    for (const p of model.params) {
      const now = await values(model.param(p.name));
      if (p.name !== 'convs.1.weight') {
        expect(now, p.name).toEqual(before[p.name]);
        continue;
      }
      const changed = now.flatMap((v, i) => (v !== before[p.name][i] ? [i] : []));
      const want = KEEP_CNN['convs.1'].flatMap((o) => KEEP_CNN['convs.0'].flatMap((c) => Array.from({ length: 9 }, (_, k) => (o * 4 + c) * 9 + k)));
      expect(changed).toEqual(want);
      for (const i of changed) expect(now[i] - before[p.name][i]).toBeCloseTo(1, 5);
    }
    for (const m of [model, small]) m.free();
  });

  it('refuses an unknown group, an index out of range and a model without groups', async () => {
    const model = await Model.build(rt, MLP, { seed: 0 });
    const groups = await unitsOf(model);
    expect(() => sliceParams(model, groups, { 'layers.2': index([0]) })).toThrow(/'layers\.2', which is no unit group; the groups are layers\.0, layers\.1/);
    expect(() => subSpec(model, groups, { 'layers.0': 0 })).toThrow(LiaisonError);
    const bad = sliceParams(model, groups, { 'layers.1': index([2, 20]) });
    const err = await bad['layers.1.weight'].toArray().then(() => null, (e: LiaisonError) => e);
    expect(err).toBeInstanceOf(LiaisonError);
    expect(err!.code).toBe('E_ARG');
    expect(err!.message).toMatch(/group 'layers\.1' has 20 units/);
    await expect(shrink(model, { 'layers.0': index([5, 1]) })).rejects.toThrow(/'layers\.0' must be ascending/);
    const gpt = await Model.build(rt, { kind: 'gpt', vocab: 16, context: 4, dim: 8, layers: 1, heads: 2 });
    const none = await unitsOf(gpt);
    expect(() => sliceParams(gpt, none, {})).toThrow(/the gpt model has no unit groups/);
    await expect(shrink(gpt, {})).rejects.toThrow(/the gpt model has no unit groups/);
    for (const m of [model, gpt]) m.free();
  });

  it('frees what it makes', async () => {
    const model = await Model.build(rt, CNN, { seed: 6 });
    const groups = await unitsOf(model);
    const keep = keepOf(KEEP_CNN);
    const start = await settledObjects(rt);
    for (let i = 0; i < 2; i++) {
      const parts = sliceParams(model, groups, keep);
      scatterParams(model, groups, keep, parts);
      for (const t of Object.values(parts)) t.free();
      (await shrink(model, keep)).free();
    }
    expect(await settledObjects(rt)).toBe(start);
    model.free();
  });
});
