// Issue 9, item 9: a non-finite loss stops the run naming the step (nonFinite: 'error'),
// or the step is skipped with the parameters and the optimizer's state untouched and
// counted (nonFinite: 'skip'); NaN in typed-array data is refused before it is uploaded.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime } from '../bridge/index.js';
import { heavyBall } from '../plugins/momentum/heavy-ball.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import type { ProgressEvent } from '../sdk/trainer-types.js';
import { Trainer, TrainerConfig } from '../sdk/trainer.js';
import { settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const ROWS = 64;
const features = () => Float32Array.from({ length: ROWS * 4 }, (_, i) => Math.sin(i * 0.7));
const labels = () => Int32Array.from({ length: ROWS }, (_, i) => (i * 7) % 3);

/** Rows `from..to` of the data, with row `nanRow` (if any) holding a NaN: uploaded as is (fromArrays would refuse it). */
function dataset(from = 0, to = ROWS, nanRow = -1): Dataset {
  const x = features();
  if (nanRow >= 0) x[nanRow * 4 + 1] = Number.NaN;
  const keep = Array.from({ length: ROWS }, (_, i) => i).filter((i) => i >= from && i < to);
  const xs = Float32Array.from(keep.flatMap((i) => Array.from(x.subarray(i * 4, i * 4 + 4))));
  const ys = BigInt64Array.from(keep.map((i) => BigInt(labels()[i])));
  return new Dataset(rt, rt.tensor(xs, [keep.length, 4]), rt.tensor(ys, [keep.length], 'i64'), [keep.length, 4], [keep.length], 'i64');
}

const mlp = () => Model.build(rt, { kind: 'mlp', sizes: [4, 8, 3] }, { seed: 3 });
const values = async (model: Model) => Promise.all(model.params.map(async (p) => Array.from((await model.param(p.name).toArray()) as Float32Array)));
// batches of 8 in order: row 30 is in the 4th step of an epoch
const cfg = { batchSize: 8, shuffle: false, progress: 'none' as const, logEvery: 1000, inFlight: 8 };

describe("nonFinite: 'error' (the default)", () => {
  it('stops the run naming the step and its epoch; nothing from that step on reaches the model', async () => {
    const t = new Trainer({ model: await mlp(), optimizer: heavyBall({ lr: 0.05 }), ...cfg });
    await t.fit(dataset(), { epochs: 1 }); // 8 clean steps
    const err = await t.fit(dataset(0, ROWS, 30), { epochs: 2 }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_NONFINITE');
    expect((err as LiaisonError).message).toMatch(/the training loss of step 12 \(epoch 1, step 4 of 8\) is NaN; .*as step 11 left them.*nonFinite: 'skip'/);
    expect([t.step, t.epoch]).toEqual([11, 1]);
    // the steps after it were sent in the same window and stopped by the runtime: the
    // model is exactly one trained 8 + 3 clean steps
    const ref = new Trainer({ model: await mlp(), optimizer: heavyBall({ lr: 0.05 }), ...cfg });
    await ref.fit(dataset(), { epochs: 1 });
    await ref.fit(dataset(0, 24), { epochs: 1 });
    const got = await values(t.model);
    expect(got.flat().every(Number.isFinite)).toBe(true);
    expect(got).toEqual(await values(ref.model));
    // and training goes on once the data is clean, from the step it stopped at
    const h = await t.fit(dataset(), { epochs: 1 });
    expect(h[0].step).toBe(19);
    expect(Number.isFinite(h[0].loss)).toBe(true);
  });
});

describe("nonFinite: 'skip'", () => {
  it('leaves the parameters and the optimizer state untouched by the step, and counts it', async () => {
    const t = new Trainer({ model: await mlp(), optimizer: heavyBall({ lr: 0.05 }), nonFinite: 'skip', ...cfg, logEvery: 4 });
    const events: ProgressEvent[] = [];
    t.on('progress', (e) => events.push(e));
    const [r] = await t.fit(dataset(0, ROWS, 30), { epochs: 1 });
    expect(r.skipped).toBe(1);
    expect(Number.isFinite(r.loss)).toBe(true);
    expect(events.map((e) => e.skipped)).toEqual([1, 0]);
    // the same run without the bad batch: 7 steps; heavy-ball momentum carries its state
    // across the skipped step, so a step that touched it would show
    const ref = new Trainer({ model: await mlp(), optimizer: heavyBall({ lr: 0.05 }), ...cfg });
    const clean = new Dataset(rt, rt.cat([dataset(0, 24).x, dataset(32, ROWS).x]), rt.cat([dataset(0, 24).y, dataset(32, ROWS).y]), [56, 4], [56], 'i64');
    await ref.fit(clean, { epochs: 1 });
    const [a, b] = await Promise.all([values(t.model), values(ref.model)]);
    expect(a.flat().every(Number.isFinite)).toBe(true);
    a.forEach((p, i) => p.forEach((v, j) => expect(v).toBeCloseTo(b[i][j], 6)));
    // the counting leaves nothing behind: another epoch holds no more objects than the first
    const bad = dataset(0, ROWS, 30);
    await t.fit(bad, { epochs: 1 });
    const held = await settledObjects(rt);
    await t.fit(bad, { epochs: 1 });
    expect((await rt.stats()).objects).toBeLessThanOrEqual(held); // a leak adds; only a collection takes away
  });

  it("is a Trainer config field, 'error' by default, with a help line", () => {
    const f = TrainerConfig.properties.nonFinite;
    expect(f.default).toBe('error');
    expect(f.description).toMatch(/'error' stops the run .*'skip' leaves the parameters and optimizer state untouched/);
  });
});

describe('Dataset.fromArrays', () => {
  it('refuses a NaN or infinity in the features or targets, naming the array and the first bad element', () => {
    const x = features();
    x[3 * 4 + 2] = Number.NaN;
    x[40] = Number.NaN;
    expect(() => Dataset.fromArrays(rt, x, [ROWS, 4], labels())).toThrow(/Dataset\.fromArrays: x\[3, 2\] \(element 14\) is NaN/);
    const y = new Float32Array(ROWS);
    y[5] = Number.POSITIVE_INFINITY;
    const err = (() => { try { Dataset.fromArrays(rt, features(), [ROWS, 4], y); } catch (e) { return e; } })();
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_NONFINITE');
    expect((err as LiaisonError).message).toMatch(/y\[5\] \(element 5\) is Infinity/);
  });
});
