// The SDK's workers (sdk/workers/) used as the family issues will: a merge boundary (a small
// model's partitions trained by separate workers and copied back, as LoFT and independent
// subnetwork training do), a broadcast boundary (every worker sees the others' last
// messages, as Parallel Deflation), a worker joining at round 3, both placements giving the
// same numbers, the bytes reported per round (Parallel Deflation's spec too), and the errors.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { knownCovariance, randomStarts } from '../sdk/families/deflators/base.js';
import { deflationWorkers } from '../sdk/families/deflators/workers.js';
import { getPlacement, placements, registerPlacement, runWorkers, type RoundReport, type WorkerSpec } from '../sdk/workers/index.js';
import { settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);

// least squares on d = 6 weights, split in K = 3 partitions of 2; worker 2 joins at round 3
const N = 12, D = 6, P = 2, K = 3, T = 4, LR = 0.1, ROUNDS = 5;
const X = Array.from({ length: N * D }, (_, i) => Math.sin(1.3 * i + 0.7));
const TRUE_W = [0.5, -1, 2, 0.25, -0.75, 1.5];
const Y = Array.from({ length: N }, (_, r) => TRUE_W.reduce((s, w, c) => s + w * X[r * D + c], 0));

/** IST/LoFT's shape: each worker trains its own partition of the shared weights, which the merge copies back. */
function partitionSpec(counter: { steps: number }): WorkerSpec<{ w: Tensor }, Tensor, Tensor> {
  const x = rt.tensor(X, [N, D], 'f64');
  const y = rt.tensor(Y, [N, 1], 'f64');
  const masks = Array.from({ length: K }, (_, j) => rt.tensor(Array.from({ length: D }, (_, c) => (Math.floor(c / P) === j ? 1 : 0)), [D, 1], 'f64'));
  return {
    name: 'partitions',
    workers: K,
    joinRound: (w) => (w === 2 ? 3 : 1),
    localSteps: T,
    dtype: 'f64',
    init: () => ({ w: rt.zeros([D, 1], 'f64') }),
    step: (_s, shared, ctx) => {
      counter.steps++;
      let w = shared!; // every round starts from the merged weights
      for (let t = 0; t < ctx.localSteps; t++) {
        const g = x.T.matmul(x.matmul(w).sub(y)).div(N); // (D, 1)
        w = w.sub(g.mul(masks[ctx.worker]).mul(LR));
      }
      return { w };
    },
    publish: (s, ctx) => s.w.narrow(0, ctx.worker * P, P), // (P, 1): only the worker's own partition crosses
    boundary: {
      kind: 'merge',
      init: () => rt.zeros([D, 1], 'f64'),
      merge: (shared, parts, workers) => rt.cat(Array.from({ length: K }, (_, j) => {
        const at = workers.indexOf(j);
        return at >= 0 ? parts[at] : shared.narrow(0, j * P, P); // a worker not yet joined leaves its partition as it was
      }), 0),
    },
  };
}

/** The same rounds in plain numbers. */
function partitionByHand(): number[][] {
  const grad = (w: number[]) => {
    const r = Array.from({ length: N }, (_, i) => w.reduce((s, wc, c) => s + wc * X[i * D + c], 0) - Y[i]);
    return w.map((_, c) => r.reduce((s, ri, i) => s + X[i * D + c] * ri, 0) / N);
  };
  let shared = new Array(D).fill(0);
  const out: number[][] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const next = [...shared];
    for (let j = 0; j < K; j++) {
      if (j === 2 && round < 3) continue;
      let w = [...shared];
      for (let t = 0; t < T; t++) {
        const g = grad(w);
        w = w.map((wc, c) => (Math.floor(c / P) === j ? wc - LR * g[c] : wc));
      }
      for (let c = j * P; c < (j + 1) * P; c++) next[c] = w[c];
    }
    shared = next;
    out.push(shared);
  }
  return out;
}

/** Parallel Deflation's shape on a toy: each worker moves toward the mean of everyone's last broadcast, plus its own offset. */
function broadcastSpec(counter: { steps: number }): WorkerSpec<Tensor, Tensor, Tensor> {
  const offsets = Array.from({ length: K }, (_, j) => rt.tensor([j + 1, -j], [1, 2], 'f64'));
  return {
    name: 'pull',
    workers: K,
    joinRound: (w) => (w === 2 ? 3 : 1),
    localSteps: 2,
    dtype: 'f64',
    init: (w) => rt.tensor([w, 1], [1, 2], 'f64'),
    step: (x, all, ctx) => {
      counter.steps++;
      for (let t = 0; t < ctx.localSteps; t++) {
        x = x.mul(0.5).add(offsets[ctx.worker]);
        if (all) x = x.add(all.mean(0, true).mul(0.25));
      }
      return x;
    },
    publish: (x) => x,
    boundary: { kind: 'broadcast', gather: (xs) => rt.cat(xs, 0) }, // (a, 2): the joined workers' rows
  };
}

function broadcastByHand(): number[][][] {
  let view: number[][] | null = null;
  const xs: number[][] = [[0, 1], [1, 1], [2, 1]];
  const out: number[][][] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const active = round < 3 ? [0, 1] : [0, 1, 2];
    const mean = view ? [0, 1].map((c) => view!.reduce((s, r) => s + r[c], 0) / view!.length) : null;
    for (const j of active) {
      for (let t = 0; t < 2; t++) xs[j] = xs[j].map((v, c) => v * 0.5 + [j + 1, -j][c] + (mean ? 0.25 * mean[c] : 0));
    }
    view = active.map((j) => [...xs[j]]);
    out.push(view);
  }
  return out;
}

async function run<S, M, V extends Tensor>(spec: WorkerSpec<S, M, V>, placement: string) {
  const reports: (Omit<RoundReport<V>, 'view'> & { view: number[] })[] = [];
  const r = await runWorkers(rt, spec, { rounds: ROUNDS, placement, onRound: async (rep) => { reports.push({ ...rep, view: await list(rep.view) }); } });
  return { reports, final: await list(r.view), result: r };
}

describe('merge boundary: partitions trained apart and copied back', () => {
  it('worker 2 joins at round 3; each round is the hand-computed one, in both placements, bit for bit', async () => {
    const want = partitionByHand();
    const seen: Record<string, number[][]> = {};
    for (const placement of ['sequential', 'batched']) {
      const { reports, final } = await run(partitionSpec({ steps: 0 }), placement);
      expect(reports.map((r) => r.workers)).toEqual([[0, 1], [0, 1], [0, 1, 2], [0, 1, 2], [0, 1, 2]]);
      expect(reports.map((r) => r.joined)).toEqual([[0, 1], [], [2], [], []]);
      reports.forEach((r, i) => r.view.forEach((v, c) => expect(Math.abs(v - want[i][c]), `${placement} round ${i + 1}, weight ${c}`).toBeLessThan(1e-12)));
      expect(reports[1].view.slice(4)).toEqual([0, 0]); // untouched until its worker joins
      expect(reports[2].view.slice(4).every((v) => v !== 0)).toBe(true);
      expect(final).toEqual(reports.at(-1)!.view);
      // up: each worker's partition (2 f64); down: the shared weights (6 f64) to every worker
      expect(reports.map((r) => r.bytes)).toEqual([2, 2, 3, 3, 3].map((a) => ({ up: a * P * 8, down: a * D * 8 })));
      seen[placement] = reports.map((r) => r.view);
    }
    expect(seen.batched).toEqual(seen.sequential);
  });

  it('batched traces one program per set of workers and replays it; sequential runs every step', async () => {
    const batched = { steps: 0 };
    await run(partitionSpec(batched), 'batched');
    expect(batched.steps).toBe(2 + 3); // traced for workers {0, 1}, then for {0, 1, 2}
    const sequential = { steps: 0 };
    await run(partitionSpec(sequential), 'sequential');
    expect(sequential.steps).toBe(2 * 2 + 3 * 3);
  });
});

describe('broadcast boundary: every worker sees all workers\' last messages', () => {
  it('worker 2 joins at round 3 and is seen from round 4; both placements give the hand-computed rounds bit for bit', async () => {
    const want = broadcastByHand();
    const seen: Record<string, number[][]> = {};
    for (const placement of ['sequential', 'batched']) {
      const { reports } = await run(broadcastSpec({ steps: 0 }), placement);
      expect(reports.map((r) => r.view.length)).toEqual([4, 4, 6, 6, 6]);
      reports.forEach((r, i) => r.view.forEach((v, c) => expect(Math.abs(v - want[i].flat()[c]), `${placement} round ${i + 1}`).toBeLessThan(1e-12)));
      // the gathered broadcast goes up once and down to every worker
      expect(reports.map((r) => r.bytes)).toEqual([2, 2, 3, 3, 3].map((a) => ({ up: a * 2 * 8, down: a * a * 2 * 8 })));
      seen[placement] = reports.map((r) => r.view);
    }
    expect(seen.batched).toEqual(seen.sequential);
  });

  it('the result holds the last view and the states; free() releases them', async () => {
    const r = await runWorkers(rt, broadcastSpec({ steps: 0 }), { rounds: 3, placement: 'sequential' });
    expect(r.states).toHaveLength(3);
    expect(await list(r.view)).toEqual((await Promise.all(r.states!.map(list))).flat());
    r.free();
    await expect(Promise.resolve().then(() => r.view.data())).rejects.toThrow(/was freed/);
  });

  it("onRound returning 'stop' ends the run after that round: its view is the result, rounds says how many ran", async () => {
    for (const placement of ['sequential', 'batched']) {
      const seen: number[] = [];
      const r = await runWorkers(rt, broadcastSpec({ steps: 1 }), { rounds: 5, placement, onRound: (rep) => { seen.push(rep.round); return rep.round === 3 ? 'stop' : undefined; } });
      expect(seen).toEqual([1, 2, 3]);
      expect(r.rounds).toBe(3);
      const straight = await runWorkers(rt, broadcastSpec({ steps: 1 }), { rounds: 3, placement });
      expect(await list(r.view)).toEqual(await list(straight.view));
      r.free();
      straight.free();
    }
  });
});

describe('the coordinator frees what a round replaced', () => {
  it('runs freed with free() leave the runtime\'s object count where it was, in both placements and boundaries', async () => {
    const x = rt.tensor([1], [1]); // the specs' own tensors are made once, outside the count
    x.free();
    const specs = [partitionSpec({ steps: 0 }), broadcastSpec({ steps: 0 })] as WorkerSpec<unknown, unknown, Tensor>[];
    const once = async () => { for (const spec of specs) for (const placement of ['sequential', 'batched']) (await runWorkers(rt, spec, { rounds: ROUNDS, placement })).free(); };
    await once();
    const objects = await settledObjects(rt);
    await once();
    await once();
    expect((await rt.stats()).objects).toBeLessThanOrEqual(objects); // a leak adds; only a collection takes away
  });
});

describe('Parallel Deflation on the workers', () => {
  it('its broadcast of (estimate, value) per joined worker is the bytes reported, in both placements; worker k joins at round k + 1', async () => {
    const { cov } = knownCovariance(rt, [5, 4, 3, 2, 1, 0.5], { seed: 0 });
    for (const placement of ['batched', 'sequential']) {
      const spec = deflationWorkers(rt, { mode: 'power', cov, steps: 2 }, randomStarts(rt, 6, 3, 0, 'f32'), 3, 'f32');
      const seen: RoundReport<unknown>[] = [];
      await runWorkers(rt, spec, { rounds: 4, placement, onRound: (r) => { seen.push(r); } });
      expect(seen.map((r) => r.joined)).toEqual([[0], [1], [2], []]);
      expect(seen.map((r) => r.bytes), placement).toEqual([1, 2, 3, 3].map((a) => ({ up: a * 7 * 4, down: a * a * 7 * 4 })));
    }
  });
});

describe('placements are a registry', () => {
  it('a placement registered by name runs every spec unchanged; names are unique', async () => {
    const counting = 'test-counting';
    // a placement of its own: the sequential one, counting the rounds it runs
    const base = getPlacement('sequential');
    let rounds = 0;
    registerPlacement({
      name: counting, description: 'sequential, counting rounds',
      start: (r, spec) => { const inner = base.start(r, spec); return { ...inner, join: inner.join.bind(inner), held: inner.held.bind(inner), free: inner.free.bind(inner), round: (v, i) => { rounds++; return inner.round(v, i); } }; },
    });
    expect(placements()).toEqual(expect.arrayContaining(['batched', 'sequential', counting]));
    const a = await run(broadcastSpec({ steps: 0 }), counting);
    expect(rounds).toBe(ROUNDS);
    const b = await run(broadcastSpec({ steps: 0 }), 'sequential');
    expect(a.reports.map((r) => r.view)).toEqual(b.reports.map((r) => r.view));
    expect(() => registerPlacement({ name: 'batched', description: '', start: base.start })).toThrow(/'batched' is already registered/);
  });
});

describe('errors name what is wrong', () => {
  it('an unknown placement, a join after the last round, a bad boundary, a bad K or T', async () => {
    const spec = broadcastSpec({ steps: 0 });
    await expect(runWorkers(rt, spec, { rounds: 3, placement: 'per-rank' })).rejects.toMatchObject({ code: 'E_ARG', param: 'placement', message: expect.stringMatching(/'per-rank' is not registered; the placements are .*'sequential'/) });
    await expect(runWorkers(rt, spec, { rounds: 2 })).rejects.toMatchObject({ code: 'E_ARG', param: 'joinRound', message: expect.stringMatching(/worker 2 joins at round 3, .*1\.\.rounds \(2\)/) });
    await expect(runWorkers(rt, { ...spec, boundary: { kind: 'gossip' } as never }, { rounds: 3 })).rejects.toMatchObject({ param: 'boundary', message: expect.stringMatching(/'broadcast', 'merge', got "gossip"/) });
    await expect(runWorkers(rt, { ...spec, workers: 0 }, { rounds: 3 })).rejects.toMatchObject({ param: 'workers' });
    await expect(runWorkers(rt, { ...spec, localSteps: 1.5 }, { rounds: 3 })).rejects.toMatchObject({ param: 'localSteps' });
  });
});
