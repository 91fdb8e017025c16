// What sits on a runtime group (docs/distributed.md): the `ranks` worker placement and the
// ranked forms of Parallel Deflation and independent subnetworks, equal to their
// single-runtime results on one runtime (a group of one), 2 and 4 ranks; the data-parallel
// Trainer, equal to one runtime on the concatenated batch, its checkpoints resumed on a
// group of another size. Ranks run one torch thread each; every group is closed in afterAll.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Group, type Runtime, type Tensor } from '../bridge/index.js';
import { loft, maskedNeurons, nesterov, parallelDeflation } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import { knownCovariance } from '../sdk/families/deflators/base.js';
import type { DeflationProblem } from '../sdk/families/deflators/types.js';
import { Model } from '../sdk/model.js';
import { Trainer } from '../sdk/trainer.js';
import { collectiveBytes, rankLayout } from '../sdk/workers/ranks.js';
import { startRuntime } from './helpers.js';

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);
const worst = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i])));

const SPECTRUM = [10, 6, 3.5, 2, 1.2, ...Array.from({ length: 19 }, (_, i) => 0.5 * 0.85 ** i)]; // d = 24
const D = SPECTRUM.length;

function problemOn(rt: Runtime, mode: 'power' | 'hebbian'): DeflationProblem {
  const { cov } = knownCovariance(rt, SPECTRUM, { seed: 3, dtype: 'f64' });
  return { cov, d: D, k: 5, ...(mode === 'hebbian' ? { data: rt.randn([300, D], { seed: 9, dtype: 'f64' }) } : {}) };
}

/** Parallel Deflation's per-round broadcasts and result on `rt` with `execution`. */
async function deflate(rt: Runtime, mode: 'power' | 'hebbian', execution: 'batched' | 'ranks') {
  const trail: number[][] = [];
  const r = await parallelDeflation({ mode, execution, localSteps: 3, rounds: 7, batchSize: 16, float64: true }).fit(problemOn(rt, mode), {
    rt, seed: 5, onRound: async (_r, v) => { trail.push(await list(v)); },
  });
  return { trail, vectors: await list(r.vectors), values: await list(r.values), matvecs: r.matvecs };
}

/** Independent subnetwork training (4 subnets, a partition) on the digits' first rows: the merged network's losses and weights. */
async function subnets(rt: Runtime, placement: string, count = 4) {
  const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 12, 10] }, { seed: 1 });
  const [data] = (await Dataset.builtin(rt, 'digits')).split(0.9, 0); // 180 rows
  const bytes: (number | null)[] = [];
  const ist = maskedNeurons({ subnets: count, split: 'partition', localSteps: 2, lr: 0.3, batchSize: 16, loss: 'cross_entropy', seed: 2 });
  const { loss } = await ist.train(model, data, { rounds: 2, placement, onRound: (r) => { bytes.push(r.bytes?.up ?? null); } });
  const w = await list(model.param('layers.0.weight'));
  model.free();
  return { loss, w, bytes };
}

/** LoFT's partitioned pretraining (4 workers, every layer partitioned) of a small MLP: the losses, distances, bytes and weights. */
async function loftRun(rt: Runtime, placement: string, sizes = [64, 16, 12, 10], workers = 4) {
  const model = await Model.build(rt, { kind: 'mlp', sizes }, { seed: 2 });
  const [data] = (await Dataset.builtin(rt, 'digits')).split(0.9, 0);
  const r = await loft({ workers, localSteps: 2, batchSize: 8, lr: 0.05, partition: 'every', seed: 1 }).pretrain(model, data, { rounds: 2, placement });
  const w = [...await list(model.param('layers.0.weight')), ...await list(model.param('layers.2.bias'))];
  model.free();
  return { loss: r.rounds.map((x) => x.loss), distance: r.rounds.flatMap((x) => Object.values(x.distance)), bytes: r.rounds.map((x) => x.bytes), w };
}

describe('rankLayout', () => {
  it('puts worker k on rank k mod N in slot ⌊k/N⌋, and orders a gather of the slots by worker', () => {
    const l = rankLayout(3);
    expect([0, 1, 2, 3, 4].map((k) => [l.rankOf(k), l.slotOf(k)])).toEqual([[0, 0], [1, 0], [2, 0], [0, 1], [1, 1]]);
    expect(l.slots(5)).toBe(2);
    // gathered (rank-major, 2 slots each): rank 0 [w0, w3], rank 1 [w1, w4], rank 2 [w2, pad]
    expect(l.gatherOrder(5)).toEqual([0, 2, 4, 1, 3]);
    expect(() => rankLayout(0)).toThrow(/world/);
  });
});

describe('on one runtime (a group of one)', () => {
  let rt: Runtime;
  beforeAll(async () => { rt = await startRuntime(); });
  afterAll(async () => { await rt?.close(); });

  it('parallel-deflation on ranks computes what the batched block does', async () => {
    for (const mode of ['power', 'hebbian'] as const) {
      const a = await deflate(rt, mode, 'batched');
      const b = await deflate(rt, mode, 'ranks');
      expect(b.matvecs).toBe(a.matvecs);
      expect(worst(b.vectors, a.vectors), mode).toBeLessThan(1e-10);
      a.trail.forEach((v, r) => expect(worst(b.trail[r], v), `${mode} round ${r + 1}`).toBeLessThan(1e-10));
    }
  });

  it('independent subnetworks on ranks compute what the batched placement does, with no bytes on one runtime', async () => {
    const a = await subnets(rt, 'batched');
    const b = await subnets(rt, 'ranks');
    expect(worst(b.loss, a.loss)).toBeLessThan(1e-5);
    expect(worst(b.w, a.w)).toBeLessThan(1e-5);
    expect(b.bytes).toEqual([0, 0]);
  });

  it('LoFT on ranks computes what the batched placement does; uneven shares are refused', async () => {
    const a = await loftRun(rt, 'batched');
    const b = await loftRun(rt, 'ranks');
    expect(b.loss).toEqual(a.loss);
    expect(b.distance).toEqual(a.distance);
    expect(worst(b.w, a.w)).toBe(0);
    await expect(loftRun(rt, 'ranks', [64, 14, 10])).rejects.toMatchObject({ code: 'E_ARG', param: 'workers', message: expect.stringMatching(/'layers.0' has 14/) });
  });

  it("the ranks placement refuses a spec without a ranked form, naming it", async () => {
    const { runWorkers } = await import('../sdk/workers/run.js');
    const spec = { name: 'plain', workers: 2, localSteps: 1, init: () => ({}), step: (s: object) => s, publish: () => ({}), boundary: { kind: 'broadcast' as const, gather: () => null } };
    await expect(runWorkers(rt, spec, { rounds: 1, placement: 'ranks' })).rejects.toMatchObject({ code: 'E_ARG', param: 'placement', message: expect.stringMatching(/'plain' have no ranked form/) });
  });
});

/** Data-parallel training of a small MLP: 180 digits in batches of 49 (the last 33: shards 17/16 on two ranks). */
async function train(rt: Runtime, epochs: number, opts: { save?: string; resume?: string; lr?: number } = {}) {
  const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 16, 10] }, { seed: 4 });
  const [data] = (await Dataset.builtin(rt, 'digits')).split(0.9, 0);
  const setup = { model, optimizer: nesterov({ lr: opts.lr ?? 0.2, momentum: 0.9 }), batchSize: 49, progress: 'none' as const };
  const trainer = opts.resume ? await Trainer.resume(opts.resume, setup) : new Trainer(setup);
  const history = await trainer.fit(data, { epochs });
  if (opts.save) await trainer.save(opts.save);
  const w = await list(model.param('layers.0.weight'));
  trainer.free();
  model.free();
  data.free();
  return { losses: history.map((e) => e.loss), w, step: trainer.step };
}

const dir = mkdtempSync(join(tmpdir(), 'liaison-dist-'));
afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

describe.each([2, 4])('on a group of %i ranks', (ranks) => {
  let g: Group;
  let rt: Runtime;
  beforeAll(async () => { [g, rt] = await Promise.all([Group.start({ ranks, threads: 1 }), startRuntime()]); }, 120_000);
  afterAll(async () => { await Promise.all([g?.close(), rt?.close()]); });

  it('parallel-deflation spreads its workers over the ranks and gives the single-runtime broadcasts, power and Hebbian', async () => {
    for (const mode of ['power', 'hebbian'] as const) {
      const a = await deflate(rt, mode, 'batched');
      const b = await deflate(g, mode, 'ranks');
      expect(worst(b.vectors, a.vectors), mode).toBeLessThan(1e-10);
      a.trail.forEach((v, r) => expect(worst(b.trail[r], v), `${mode} round ${r + 1}`).toBeLessThan(1e-10));
    }
  });

  it('independent subnetworks on the ranks give the single-runtime merged network; the merge is one all-reduce a round', async () => {
    const a = await subnets(rt, 'batched');
    const b = await subnets(g, 'ranks');
    expect(worst(b.loss, a.loss)).toBeLessThan(1e-5);
    expect(worst(b.w, a.w)).toBeLessThan(1e-5);
    // per round: the merged sums and counts of every weight and bias (64·12 + 12 + 12·10 + 10 entries, f32, twice) from each rank
    const entries = 2 * (64 * 12 + 12 + 12 * 10 + 10);
    expect(b.bytes).toEqual([1, 2].map(() => entries * 4 * ranks));
    // 3 subnets: a padding slot trains a copy that counts for nothing
    const c = await subnets(rt, 'batched', 3);
    const d = await subnets(g, 'ranks', 3);
    expect(worst(d.loss, c.loss)).toBeLessThan(1e-5);
    expect(worst(d.w, c.w)).toBeLessThan(1e-5);
  });

  it("LoFT deals its workers' partitions to the ranks and gives the single-runtime pretraining; the bytes are the messages gathered", async () => {
    const a = await loftRun(rt, 'batched');
    const b = await loftRun(g, 'ranks');
    expect(worst(b.loss, a.loss)).toBeLessThan(1e-6);
    expect(worst(b.distance, a.distance)).toBeLessThan(1e-6);
    expect(worst(b.w, a.w)).toBeLessThan(1e-6);
    // each worker's sub-model (64-4-3-10: 315 parameters) and its loss, f32, from 4 workers; every other rank receives them
    expect(b.bytes).toEqual([1, 2].map(() => ({ up: 4 * 316 * 4, down: 4 * 316 * 4 * (ranks - 1) })));
    // 3 workers: a rank holds a padding slot (it trains a copy of the last worker's round; the gather drops it)
    const c = await loftRun(rt, 'batched', [64, 12, 9, 10], 3);
    const d = await loftRun(g, 'ranks', [64, 12, 9, 10], 3);
    expect(worst(d.loss, c.loss)).toBeLessThan(1e-6);
    expect(worst(d.w, c.w)).toBeLessThan(1e-6);
  });

  it('the Trainer trains data-parallel: the losses and weights of one runtime on the whole batch', async () => {
    const a = await train(rt, 2);
    const before = await collectiveBytes(g);
    const b = await train(g, 2);
    // every one of the 8 steps summed the 1,210 gradient entries (f32) over the ranks
    expect(await collectiveBytes(g) - before).toBeGreaterThanOrEqual(8 * 1210 * 4 * ranks);
    expect(worst(b.losses, a.losses)).toBeLessThan(1e-5);
    expect(worst(b.w, a.w)).toBeLessThan(1e-5);
  });

  it('a loss that is not finite stops the group at the step one runtime stops at', async () => {
    const failure = (r: Runtime) => train(r, 2, { lr: 1e20 }).then(() => null, (e: { code: string; message: string }) => e);
    const [a, b] = [await failure(rt), await failure(g)];
    expect(a?.code).toBe('E_NONFINITE');
    expect(b?.code).toBe('E_NONFINITE');
    expect(b!.message).toBe(a!.message); // the same step, named the same way
  });

  it('a checkpoint written on the group resumes on one runtime and on a group of another size', async () => {
    const path = join(dir, `g${ranks}.safetensors`);
    const straight = await train(rt, 2);
    await train(g, 1, { save: path });
    const onOne = await train(rt, 1, { resume: path });
    expect(onOne.step).toBe(straight.step);
    expect(worst(onOne.losses, straight.losses.slice(1))).toBeLessThan(1e-5);
    expect(worst(onOne.w, straight.w)).toBeLessThan(1e-5);
    // and the other way: written on one runtime, resumed on the group
    const half = join(dir, `one-${ranks}.safetensors`);
    await train(rt, 1, { save: half });
    const onGroup = await train(g, 1, { resume: half });
    expect(worst(onGroup.w, straight.w)).toBeLessThan(1e-5);
    if (ranks === 4) {
      // written by the 2-rank group (the describe before), resumed on 4 ranks
      const from2 = await train(g, 1, { resume: join(dir, 'g2.safetensors') });
      expect(worst(from2.losses, straight.losses.slice(1))).toBeLessThan(1e-5);
      expect(worst(from2.w, straight.w)).toBeLessThan(1e-5);
    }
  });
});
