// The loft pruner (plugins/pruners/loft.ts, sdk/families/pruners/loft-rounds.ts): whole-unit masks by unit norm
// (bias included), the filter distance, shrink equal to the masked model, pretraining rounds
// (the two placements agree, every unit trains, the bytes and the stop rule as reported, a
// stop at the ticket leaks nothing), and examples/loft-cnn.ts in its small variant.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { loft } from '../plugins/index.js';
import { keepIndices, type Loft, unitMasks } from '../plugins/pruners/loft.js';
import { filterDistance, unitRows } from '../sdk/families/pruners/loft-rounds.js';
import { Dataset, flopsOf, Model, type ModelSpec, unitsOf } from '../sdk/index.js';
import { runExample, settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
let digits: Dataset;
beforeAll(async () => {
  rt = await startRuntime();
  digits = await Dataset.builtin(rt, 'digits');
});
afterAll(async () => {
  digits?.free();
  await rt?.close();
});

const SPEC: ModelSpec = { kind: 'cnn', image: [8, 8], channels: [4, 6], hidden: 8, classes: 10 };
const values = async (t: Tensor) => Array.from(await t.toArray() as Float32Array, Number);
const numel = (m: Model) => m.params.reduce((a, p) => a + p.numel, 0);

describe('loft: masks and the filter distance', () => {
  it('ranks units by weight row and bias together, masks whole rows and their biases, never revives a pruned unit', async () => {
    // squared norms with the bias: 9, 1 + 4 = 5, 2; without it row 1 (norm² 1) would lose to row 2 (2)
    const w = rt.tensor(new Float32Array([3, 0, 0, 1, 1, 1]), [3, 2]);
    const b = rt.tensor(new Float32Array([0, 2, 0]), [3]);
    const ws = [{ name: 'layers.0.weight', weight: w, shape: [3, 2] }, { name: 'layers.0.bias', weight: b, shape: [3] }];
    const [mw, mb] = unitMasks(ws, [rt.ones([3, 2]), rt.ones([3])], 1 / 3);
    expect(await values(mw)).toEqual([1, 1, 1, 1, 0, 0]);
    expect(await values(mb)).toEqual([1, 1, 0]);
    // unit 0, the largest, already pruned: it stays pruned, and the next two are kept
    const [again] = unitMasks(ws, [rt.tensor(new Float32Array([0, 0, 1, 1, 1, 1]), [3, 2]), rt.ones([3])], 1 / 3);
    expect(await values(again)).toEqual([0, 0, 1, 1, 1, 1]);
    // at least one unit survives any sparsity; kept indices come ascending
    expect(await values((keepIndices(rt.tensor(new Float32Array([1, 5, 3]), [3]), null, 3, 0.9)).to('f32'))).toEqual([1]);
    expect(await values((keepIndices(rt.tensor(new Float32Array([4, 1, 3]), [3]), null, 3, 0.4)).to('f32'))).toEqual([0, 2]);
  });

  it('filter distance: the mean over units of ‖u_now − u_prev‖ / ‖u_prev‖', async () => {
    const prev = rt.tensor(new Float32Array([1, 0, 0, 2]), [2, 2]);
    const now = rt.tensor(new Float32Array([1, 1, 0, 2]), [2, 2]);
    expect(await filterDistance(prev, now).item()).toBeCloseTo(0.5, 6); // (1/1 + 0/2) / 2
  });
});

describe('loft: what it prunes', () => {
  it("selects the hidden layers' weights and biases once the model is known, never the head; setup() before that is E_ARG", async () => {
    const model = await Model.build(rt, SPEC, { seed: 1 });
    const pruner = loft() as Loft;
    try {
      expect(() => pruner.setup(model)).toThrow(/unit groups/);
      await pruner.groupsOf(model);
      expect(model.params.filter((p) => pruner.selects(p)).map((p) => p.name)).toEqual(['convs.0.weight', 'convs.0.bias', 'convs.1.weight', 'convs.1.bias', 'fc.weight', 'fc.bias']);
    } finally {
      pruner.free();
      model.free();
    }
  });
});

describe('loft: shrink', () => {
  it('gives a model with fewer channels, parameters and MACs whose logits are the masked model\'s', async () => {
    const model = await Model.build(rt, SPEC, { seed: 1 });
    const pruner = loft({ sparsity: 0.5 }) as Loft;
    const small = await pruner.shrink(model);
    try {
      expect(small.params.find((p) => p.name === 'convs.0.weight')!.shape).toEqual([2, 1, 3, 3]);
      expect(small.params.find((p) => p.name === 'convs.1.weight')!.shape).toEqual([3, 2, 3, 3]);
      expect(small.params.find((p) => p.name === 'fc.weight')!.shape).toEqual([4, 12]);
      expect(numel(small)).toBeLessThan(numel(model));
      expect((await flopsOf(small))!).toBeLessThan((await flopsOf(model))!);
      // mask the whole model the same way (each group's own rows and biases), then compare logits
      const groups = await unitsOf(model);
      await rt.scope(async () => {
        for (const g of groups) {
          const own = g.members.filter((m) => m.dim === 0).map((m) => ({ name: m.param, weight: model.param(m.param), shape: model.params.find((p) => p.name === m.param)!.shape }));
          const masks = unitMasks(own, own.map((o) => rt.ones(o.shape)), 0.5);
          own.forEach((o, i) => { o.weight.mul_(masks[i]); });
        }
        const x = digits.x.narrow(0, 0, 64);
        const diff = await model.forward(x, { train: false }).sub(small.forward(x, { train: false })).abs().amax().item();
        expect(diff).toBeLessThan(1e-5);
      });
    } finally {
      small.free();
      model.free();
    }
  });
});

describe('loft: pretraining', () => {
  const cfg = { workers: 2, localSteps: 2, batchSize: 16, lr: 0.1, seed: 3, warmupRounds: 0 };

  it('batched and sequential placements agree; every unit trains; bytes, MACs and the stop rule as reported', async () => {
    const a = await Model.build(rt, SPEC, { seed: 2 });
    const b = await Model.build(rt, SPEC, { seed: 2 });
    const before = await Model.build(rt, SPEC, { seed: 2 });
    try {
      // a threshold no distance reaches at first, then patience 2: the rule fires at round 2
      const pruner = loft({ ...cfg, partition: 'every', threshold: 100, patience: 2 }) as Loft;
      const batched = await pruner.pretrain(a, digits, { rounds: 2 });
      const sequential = await pruner.pretrain(b, digits, { rounds: 2, placement: 'sequential' });
      for (const p of a.params) {
        const diff = await a.param(p.name).sub(b.param(p.name)).abs().amax().item();
        expect(diff, p.name).toBeLessThan(1e-5);
      }
      expect(batched.rounds.map((r) => r.round)).toEqual([1, 2]);
      expect(batched.ticketRound).toBe(2);
      expect(batched.rounds.map((r) => r.settled)).toEqual([1, 2]);
      for (const r of batched.rounds) {
        expect(Object.keys(r.distance)).toEqual(['convs.0', 'convs.1', 'fc']);
        for (const d of Object.values(r.distance)) expect(d).toBeGreaterThan(0);
        expect(r.loss).toBeGreaterThan(0);
      }
      expect(sequential.rounds[1].distance['fc']).toBeCloseTo(batched.rounds[1].distance['fc'], 4);
      // 'every': worker k holds ⌈(n − k)/2⌉ units of each group: convs (2, 3) and fc 4 for both
      const sub = 2 * 9 + 2 + 3 * 2 * 9 + 3 + 4 * 12 + 4 + 10 * 4 + 10;
      expect(batched.workers).toEqual([{ params: sub, macs: expect.any(Number) }, { params: sub, macs: expect.any(Number) }]);
      expect(batched.rounds[0].bytes).toEqual({ up: 2 * sub * 4 + 2 * 4, down: 2 * sub * 4 }); // slices + shared (+ a loss each) up
      const P = numel(a);
      expect(batched.dataParallelBytesPerRound.up).toBe(2 * (2 - 1) * P * 4 * 2);
      expect(batched.macsPerRound.dataParallel).toBe(3 * 2 * 16 * 2 * (await flopsOf(a))!);
      expect(batched.macsPerRound.loft).toBeLessThan(batched.macsPerRound.dataParallel);
      // every filter belongs to some worker each round: after the rounds, all moved (fc's hidden
      // neurons are left out: one whose ReLU is dead at this seed gets no gradient wherever it is)
      for (const g of (await unitsOf(a)).filter((u) => u.kind === 'filter')) {
        const moved = await rt.scope(async () => values(unitRows(a, g).sub(unitRows(before, g)).abs().amax(1).gt(0).to('f32')));
        expect(moved.every((v) => v === 1), `${g.name}: ${moved}`).toBe(true);
      }
    } finally {
      for (const m of [a, b, before]) m.free();
    }
  });

  it("untilTicket ends at the round the rule fires (after the warmup rounds) and leaves nothing behind; 'workers' above a layer's units is E_ARG", async () => {
    const model = await Model.build(rt, SPEC, { seed: 4 });
    try {
      const pruner = loft({ ...cfg, threshold: 100, patience: 1 }) as Loft;
      await pruner.pretrain(model, digits, { rounds: 1 }); // warm: programs, caches
      const base = await settledObjects(rt);
      const seen: number[] = [];
      const report = await pruner.pretrain(model, digits, { rounds: 5, untilTicket: true, onRound: (r) => { seen.push(r.round); } });
      expect(seen).toEqual([1]);
      expect(report.ticketRound).toBe(1);
      expect(await settledObjects(rt)).toBe(base);
      // the first warmupRounds rounds do not count: with 1, the same rule fires at round 2
      const later: number[] = [];
      await (loft({ ...cfg, threshold: 100, patience: 1, warmupRounds: 1 }) as Loft).pretrain(model, digits, { rounds: 5, untilTicket: true, onRound: (r) => { later.push(r.round); } });
      expect(later).toEqual([1, 2]);
      await expect(loft({ workers: 5 }).pretrain(model, digits)).rejects.toThrow(/'workers' is 5, but 'convs.0' has only 4 units/);
    } finally {
      model.free();
    }
  });

  it('a diverging round stops pretraining with E_NONFINITE naming the round and lr; the model holds the last finite round', async () => {
    const model = await Model.build(rt, SPEC, { seed: 5 });
    const names = model.params.map((p) => p.name);
    const snap = async () => Promise.all(names.map(async (n) => Array.from((await model.param(n).data()).data as ArrayLike<number>, Number)));
    try {
      const seen: number[][][] = [await snap()];
      const pruner = loft({ ...cfg, lr: 1e12, momentum: 0 }) as Loft;
      const err = await pruner.pretrain(model, digits, { rounds: 6, onRound: async () => { seen.push(await snap()); } }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'E_NONFINITE', param: 'lr', message: expect.stringMatching(/is NaN in round \d+.*'lr' \(1000000000000\).*the weights/) });
      // the weights of the last round reported (the start, when the first round diverged)
      expect(await snap()).toEqual(seen[seen.length - 1]);
    } finally {
      model.free();
    }
  });
});

describe('examples/loft-cnn.ts', () => {
  const dir = mkdtempSync(join(tmpdir(), 'liaison-loft-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('runs its small variant: distances per round, the emergence round, three tickets, bytes against data-parallel', async () => {
    // the rule counts from round 2 (warmup 1) and fires after 2 rounds: at round 3
    const env = { LIAISON_LOFT_SEEDS: '1', LIAISON_LOFT_ROUNDS: '4', LIAISON_LOFT_EPOCHS: '1', LIAISON_LOFT_LOCAL_STEPS: '2', LIAISON_LOFT_THRESHOLD: '100', LIAISON_LOFT_PATIENCE: '2', LIAISON_LOFT_WARMUP: '1' };
    const { code, out, err } = await runExample(['examples/loft-cnn.ts', '--out', dir], env);
    expect(code, `${out}\n${err}`).toBe(0);
    expect(out).toMatch(/round +3 .* <- tickets have emerged/);
    const md = readFileSync(join(dir, 'loft-cnn.md'), 'utf8');
    const rows = md.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| ---')).map((l) => l.slice(2, -2).split(' | '));
    const tickets = rows.filter((r) => r.length === 9 && r[0] !== 'ticket');
    expect(tickets.map((r) => r[0])).toEqual(['random init (control)', 'LoFT early (stop rule)', 'LoFT full']);
    expect(tickets.map((r) => r[1])).toEqual(['0', '3', '4']);
    for (const r of tickets) expect(r[4]).toMatch(/^\d+\.\d%$/);
    const loftRow = rows.find((r) => r[0].startsWith('LoFT (K = 4'))!;
    expect(Number(loftRow[3].replace('x', ''))).toBeLessThan(1);
    expect(rows.filter((r) => /^\d+$/.test(r[0])).map((r) => r[0])).toEqual(['1', '2', '3', '4']);
    const png = readFileSync(join(dir, 'loft-cnn.png'));
    expect([...png.subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
  }, 240_000);
});
