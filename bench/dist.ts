/**
 * dist.ddp_step and dist.parallel_deflation: what a runtime group buys (docs/distributed.md).
 * One 2-rank group (torchrun, gloo on CPU, NCCL on GPUs) serves both.
 *
 * - ddp_step: one epoch of data-parallel MLP training on digits (64 → 64 → 10, batch 64 —
 *   23 steps, each rank 32 rows of every batch —, gradient descent, the loss read every 10
 *   steps and at the epoch's end) through the Trainer on the group, against the same
 *   training as a plain PyTorch DDP script under torchrun with 2 ranks
 *   (`baselines/ddp_mlp.py`, kept alive so that the two alternate epoch by epoch). Both
 *   sides train the same weights on the same batches: their last epoch's losses must agree
 *   (bench/lib.ts alternateEpochs). One torch thread per rank on both sides.
 * - parallel_deflation: Parallel Deflation (power steps) on the d = 4000 problem of
 *   deflation.vs_eigh (k = 30, eigenvalues 1.1^−k), its workers on the group's 2 ranks
 *   (`execution: 'ranks'`) against the same fit on one runtime (`'batched'`), each runtime
 *   one torch thread, deflation.vs_eigh's budget (T = 1, L = 160 rounds: max error ≤ 1e-3,
 *   checked on both), alternating, median of 3 after a warm-up. The scaling efficiency is
 *   t₁ / (2·t₂), 1 when two ranks halve the time. Each rank holds Σ whole (64 MB) and
 *   multiplies it by its own workers' columns, so a product reads all of Σ on every rank:
 *   at this width the products are bound by memory bandwidth, which the ranks share.
 */
import { Group, Runtime } from '../bridge/index.js';
import { gd, parallelDeflation } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import { errorSummary } from '../sdk/families/deflators/errors.js';
import { Model } from '../sdk/model.js';
import { Trainer } from '../sdk/trainer.js';
import { collectiveBytes } from '../sdk/workers/ranks.js';
import { exponentialSpectrum } from './deflation.js';
import { alternateEpochs, type BenchOptions, type BenchResult, median, nowUs, result, type ServedBaseline, serveBaseline, trainerEpochs, using } from './lib.js';

const RANKS = 2;

/** baselines/ddp_mlp.py under torchrun with RANKS ranks, served as the other epoch baselines are (rank 0 answers). */
function serveDdp(args: string[], defer: (f: () => unknown) => void): ServedBaseline {
  return serveBaseline('ddp_mlp.py', args, defer, { OMP_NUM_THREADS: '1' }, ['-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', String(RANKS), '--max-restarts', '0']);
}

async function ddpStep(opts: BenchOptions, g: Group, defer: (f: () => unknown) => void): Promise<BenchResult> {
  const [warmup, rounds, perRound] = opts.quick ? [1, 1, 1] : [3, 8, 3];
  const baseline = serveDdp(['--batch', '64', '--hidden', '64', '--layers', '1', '--lr', '0.5', '--log-every', '10'], defer);
  const model = await Model.build(g, { kind: 'mlp', sizes: [64, 64, 10] }, { seed: 0 });
  const [train] = (await Dataset.builtin(g, 'digits')).split(0.2, 0);
  const trainer = new Trainer({ model, optimizer: gd({ lr: 0.5 }), batchSize: 64, logEvery: 10, progress: 'none' });
  const { sdk: sdkS, py: pyS, sdkLoss, pyLoss } = await alternateEpochs('dist.ddp_step', baseline, trainerEpochs(trainer, train), { warmup, rounds, perRound });
  const sdk = median(sdkS) * 1000, base = median(pyS) * 1000;
  opts.log(`dist.ddp_step: Trainer on ${RANKS} ranks ${sdk.toFixed(1)} ms / epoch, DDP under torchrun ${base.toFixed(1)} ms; last losses ${sdkLoss.toFixed(5)} / ${pyLoss.toFixed(5)}`);
  trainer.free();
  return result({
    name: 'dist.ddp_step', value: sdk, baseline: base, unit: 'ms', target: '<= 1.25x', met: sdk / base <= 1.25,
    note: `MLP 64-64-10 on digits, 23 steps of 64 over ${RANKS} ranks (gloo), gradient descent; median of ${sdkS.length} epochs each, alternating; 1 thread per rank`,
  });
}

async function deflationScaling(opts: BenchOptions, g: Group, defer: (f: () => unknown) => void): Promise<BenchResult> {
  const [d, k, T, L, reps] = opts.quick ? [200, 6, 3, 8, 1] : [4000, 30, 1, 160, 3];
  const one = await Runtime.start({ threads: 1 });
  defer(() => one.close());
  const [p1, p2] = await Promise.all([exponentialSpectrum(one, d, k), exponentialSpectrum(g, d, k)]);
  const fit = async (rt: Runtime | Group, p: typeof p1, execution: 'batched' | 'ranks') => rt.scope(async () => {
    const t0 = nowUs();
    const r = await parallelDeflation({ mode: 'power', localSteps: T, rounds: L, execution }).fit(p.problem, { rt, seed: 0 });
    await r.values.sum().item();
    const ms = (nowUs() - t0) / 1000;
    return { ms, error: (await errorSummary(p.reference, r.vectors)).max };
  });
  const before = await collectiveBytes(g);
  const check = [await fit(one, p1, 'batched'), await fit(g, p2, 'ranks')]; // warm-up, and the two agree
  const bytesPerRound = (await collectiveBytes(g) - before) / L;
  // the same vectors up to f32 rounding: both reach deflation.vs_eigh's target (the quick size only runs)
  if (!opts.quick && Math.max(check[0].error, check[1].error) > 1e-3) throw new Error(`dist.parallel_deflation: max errors ${check[0].error} (one runtime) and ${check[1].error} (${RANKS} ranks) after ${L} rounds; expected both <= 1e-3`);
  const t1: number[] = [], t2: number[] = [];
  for (let i = 0; i < reps; i++) {
    for (const side of i % 2 ? [2, 1] : [1, 2]) (side === 1 ? t1 : t2).push((side === 1 ? await fit(one, p1, 'batched') : await fit(g, p2, 'ranks')).ms);
  }
  const [m1, m2] = [median(t1), median(t2)];
  const efficiency = m1 / (RANKS * m2);
  opts.log(`dist.parallel_deflation: d = ${d}, k = ${k}: 1 runtime ${m1.toFixed(0)} ms, ${RANKS} ranks ${m2.toFixed(0)} ms: speed-up ${(m1 / m2).toFixed(2)}x, efficiency ${efficiency.toFixed(2)}; ${(bytesPerRound / 1024).toFixed(1)} KiB gathered a round; max error ${check[1].error.toExponential(2)}`);
  for (const p of [p1, p2]) { p.problem.cov.free(); p.reference.free(); }
  return result({
    name: 'dist.parallel_deflation', value: m2, baseline: m1, unit: 'ms', target: 'efficiency reported',
    met: true,
    note: `d = ${d}, k = ${k}, T = ${T}, L = ${L}; ${RANKS} ranks vs 1, 1 thread each: speed-up ${(m1 / m2).toFixed(2)}x, scaling efficiency ${efficiency.toFixed(2)}; ${(bytesPerRound / 1024).toFixed(1)} KiB gathered per round; median of ${reps}`,
  });
}

export async function benchDist(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const g = await Group.start({ ranks: RANKS, threads: 1 });
    defer(() => g.close());
    const out: BenchResult[] = [];
    if (opts.wants('dist.ddp_step')) out.push(await ddpStep(opts, g, defer));
    if (opts.wants('dist.parallel_deflation')) out.push(await deflationScaling(opts, g, defer));
    return out;
  });
}
