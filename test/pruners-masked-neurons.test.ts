// masked-neurons (plugins/pruners/masked-neurons.ts): S subnets with masked hidden neurons,
// local steps, merged per entry over the subnets that held it. Checked against plain GD
// (one subnet keeping every neuron), against itself across placements, on which entries a
// round may change, and as a neuron pruner in a Trainer; the example's fast variant last.
import { mkdtempSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { gd } from '../plugins/momentum/gd.js';
import { maskedNeurons, type MaskedNeurons } from '../plugins/pruners/masked-neurons.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import { Trainer } from '../sdk/trainer.js';
import { runExample, settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
let train: Dataset;
let test: Dataset;
beforeAll(async () => {
  rt = await startRuntime();
  const digits = await Dataset.builtin(rt, 'digits');
  [train, test] = digits.split(0.2, 0);
  digits.free();
});
afterAll(async () => { await rt?.close(); });

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);
const SIZES = [64, 24, 16, 10];
const mlp = (seed = 0) => Model.build(rt, { kind: 'mlp', sizes: SIZES }, { seed });
const params = async (m: Model) => Promise.all(m.params.map(async (p) => list(m.param(p.name))));
const maxDiff = (a: number[][], b: number[][]) => Math.max(...a.map((x, i) => Math.max(...x.map((v, j) => Math.abs(v - b[i][j])))));

describe('masked-neurons: train()', () => {
  it('one subnet keeping every neuron is plain full-batch GD: R rounds of T steps = R·T steps of the Trainer with gd', async () => {
    const [a, b] = [await mlp(3), await mlp(3)];
    const mn = maskedNeurons({ subnets: 1, keep: 1, localSteps: 3, lr: 0.2, loss: 'cross_entropy' }) as MaskedNeurons;
    const { loss } = await mn.train(a, train, { rounds: 2 });
    expect(loss).toHaveLength(2);
    const trainer = new Trainer({ model: b, optimizer: gd({ lr: 0.2 }), epochs: 6, batchSize: train.size, loss: 'cross_entropy', progress: 'none' });
    await trainer.fit(train);
    expect(maxDiff(await params(a), await params(b))).toBeLessThan(1e-5);
    trainer.free(); a.free(); b.free();
  });

  it('a round changes only what a subnet held: a dropped neuron keeps its row, bias and outgoing column; zero instead of keep zeroes exactly those', async () => {
    const before = await mlp(1);
    const w0 = await params(before);
    const run = async (unheld: 'keep' | 'zero') => {
      const m = await mlp(1);
      await (maskedNeurons({ subnets: 1, keep: 0.5, localSteps: 2, lr: 0.5, unheld, seed: 4 }) as MaskedNeurons).train(m, train, { rounds: 1 });
      const w = await params(m);
      m.free();
      return w;
    };
    const [keep, zero] = [await run('keep'), await run('zero')];
    // layers.0: weight (24, 64), bias (24); layers.1.weight (16, 24): neuron j of layer 0 is row j, bias j, column j
    const same = (x: number[], y: number[]) => x.every((v, i) => v === y[i]);
    const row = (w: number[], j: number, n: number) => w.slice(j * n, (j + 1) * n);
    const col = (w: number[], j: number, rows: number, n: number) => Array.from({ length: rows }, (_, i) => w[i * n + j]);
    const dropped = Array.from({ length: 24 }, (_, j) => j).filter((j) => same(row(keep[0], j, 64), row(w0[0], j, 64)));
    expect(dropped.length).toBeGreaterThan(2); // Bernoulli(0.5) over 24 neurons: ~12
    expect(dropped.length).toBeLessThan(22);
    for (let j = 0; j < 24; j++) {
      const d = dropped.includes(j);
      expect(keep[1][j] === w0[1][j]).toBe(d);
      expect(same(col(keep[2], j, 16, 24), col(w0[2], j, 16, 24))).toBe(d);
      expect(row(zero[0], j, 64).every((v) => v === 0)).toBe(d);
    }
    // the output layer's bias is held by every subnet: it moves
    expect(same(keep[5], w0[5])).toBe(false);
    before.free();
  });

  it('IST partition: the batched placement (one traced program) gives what the sequential one does; the loss falls', async () => {
    const results: number[][][] = [];
    for (const placement of ['batched', 'sequential']) {
      const m = await mlp(2);
      const mn = maskedNeurons({ subnets: 3, split: 'partition', localSteps: 2, lr: 0.5, batchSize: 64, seed: 1 }) as MaskedNeurons;
      const rounds: number[] = [];
      const { loss, accuracy } = await mn.train(m, train, { rounds: 4, eval: test, placement, onRound: (r) => { rounds.push(r.round); } });
      expect(rounds).toEqual([1, 2, 3, 4]);
      expect(accuracy).toHaveLength(4);
      expect(loss[3]).toBeLessThan(loss[0]);
      results.push(await params(m));
      m.free();
    }
    expect(maxDiff(results[0], results[1])).toBeLessThan(1e-5);
  });

  it('frees what it makes', async () => {
    const m = await mlp(0);
    const mn = maskedNeurons({ subnets: 2, localSteps: 2 }) as MaskedNeurons;
    await mn.train(m, train, { rounds: 1 });
    const base = await settledObjects(rt);
    await mn.train(m, train, { rounds: 3, eval: test });
    expect(await settledObjects(rt)).toBe(base);
    m.free();
  });

  it('refuses a model that is not an MLP, and bad config by field', async () => {
    const cnn = await Model.build(rt, { kind: 'cnn', image: [8, 8], channels: [4], classes: 10 });
    const mn = maskedNeurons() as MaskedNeurons;
    await expect(mn.train(cnn as never, train, { rounds: 1 })).rejects.toThrow(/'mlp' model; this model's kind is 'cnn'/);
    cnn.free();
    expect(() => maskedNeurons({ subnets: 0 })).toThrow(LiaisonError);
    expect(() => maskedNeurons({ split: 'halves' as never })).toThrow(/split/);
    const m = await mlp();
    await expect(mn.train(m, train, { rounds: 0 })).rejects.toThrow(/rounds/);
    m.free();
  });

  it('a diverging run stops with E_NONFINITE naming the round and lr, and leaves the model as it was', async () => {
    const m = await mlp(3);
    try {
      const before = await params(m);
      const seen: number[] = [];
      const err = await (maskedNeurons({ subnets: 2, localSteps: 3, lr: 1e8 }) as MaskedNeurons).train(m, train, { rounds: 5, onRound: (r) => { seen.push(r.round); } }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'E_NONFINITE', param: 'lr', message: expect.stringMatching(/after round \d.*'lr' \(100000000\)/) });
      expect(seen.length).toBeLessThan(5); // no report of a non-finite round
      expect(maxDiff(await params(m), before)).toBe(0);
    } finally {
      m.free();
    }
  });
});

describe('masked-neurons: the family contract', () => {
  it('masks(): whole rows, round(sparsity · rows) of each weight, rows dropped before stay dropped', async () => {
    const p = maskedNeurons({ seed: 2 }) as MaskedNeurons;
    expect(p.granularity).toBe('unit');
    const shapes = [[16, 8], [10, 16]];
    const weights = shapes.map((shape, i) => ({ name: `layers.${i}.weight`, weight: rt.randn(shape, { seed: i }), shape }));
    const first = p.masks(weights, { rt, round: 0, current: shapes.map((s) => rt.ones(s)), sparsity: 0.25 });
    const next = p.masks(weights, { rt, round: 1, current: first, sparsity: 0.5 });
    for (const [i, [rows, cols]] of shapes.entries()) {
      for (const [masks, s] of [[first, 0.25], [next, 0.5]] as const) {
        const v = await list(masks[i]);
        const rowSums = Array.from({ length: rows }, (_, r) => v.slice(r * cols, (r + 1) * cols).reduce((a, b) => a + b, 0));
        expect(rowSums.every((x) => x === 0 || x === cols)).toBe(true);
        expect(rowSums.filter((x) => x === 0)).toHaveLength(Math.round(s * rows));
      }
      expect(await list(next[i].gt(first[i]).sum())).toEqual([0]);
    }
  });

  it('in a Trainer: 1 − ξ of each hidden layer\'s neurons dropped (rows zero) through the steps; the output layer untouched', async () => {
    const m = await mlp(5);
    const p = maskedNeurons({ keep: 0.75 });
    const trainer = new Trainer({ model: m, optimizer: gd({ lr: 0.1 }), plugins: [p], epochs: 1, batchSize: 128, loss: 'cross_entropy', progress: 'none' });
    await trainer.fit(train);
    for (const [name, rows, cols] of [['layers.0.weight', 24, 64], ['layers.1.weight', 16, 24]] as const) {
      const v = await list(m.param(name));
      const zeroRows = Array.from({ length: rows }, (_, r) => v.slice(r * cols, (r + 1) * cols).every((x) => x === 0)).filter(Boolean).length;
      expect(zeroRows, name).toBe(Math.round(0.25 * rows));
    }
    expect((await list(m.param('layers.2.weight'))).some((x) => x === 0)).toBe(false);
    trainer.free(); (p as MaskedNeurons).free(); m.free();
  });
});

describe('examples/masked-neurons.ts (fast variant)', () => {
  it('runs full training, Bernoulli and partition subnets, prints the table and the T × S grids, writes both PNGs', async () => {
    const out = mkdtempSync(join(tmpdir(), 'liaison-mn-'));
    try {
      const env = { LIAISON_MN_STEPS: '4', LIAISON_MN_HIDDEN: '16', LIAISON_MN_SUBNETS: '2', LIAISON_MN_LOCAL: '2' };
      const { code, out: stdout, err } = await runExample(['examples/masked-neurons.ts', '--out', out], env);
      expect(code, `${stdout}\n${err}`).toBe(0);
      expect(stdout).toMatch(/MLP 64-16-10; .* 4 gradient steps per subnet/);
      for (const setting of ['full training \\| full \\| 1 \\| 1 \\| 4', 'bernoulli S=2 T=2 \\| bernoulli \\| 2 \\| 2 \\| 2', 'partition S=2 T=2 \\| partition \\| 2 \\| 2 \\| 2']) {
        expect(stdout).toMatch(new RegExp(`\\| ${setting} \\| [\\d.]+ \\| [\\d.]+ \\| [\\d.]+× \\| [\\d.]+% \\|`));
      }
      expect(stdout).toMatch(/plateau \/ full training, partition/);
      for (const png of ['masked-neurons.png', 'masked-neurons-accuracy.png']) expect(existsSync(join(out, png)), png).toBe(true);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  }, 240_000);
});
