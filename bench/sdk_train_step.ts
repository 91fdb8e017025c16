/**
 * sdk.train_step: one epoch of MLP training on digits (64 → 64 → 10, batch 64, 23 steps,
 * gradient descent, loss read every 10 steps and at the epoch's end) through the SDK's
 * Trainer, against the same loop written in plain PyTorch (`baselines/train_mlp.py`, kept
 * alive so that the two alternate, epoch by epoch, on a noisy machine).
 *
 * Both sides use one intra-op thread (OMP_NUM_THREADS=1): at this size more threads only
 * contend for the cores (with two cores and scikit-learn's OpenMP runtime loaded, two
 * torch threads made the plain loop 5–30× slower and erratic here). Both train on the
 * same arrays and split with the same initial weights and batch orders, so the final
 * mean losses must agree; the benchmark checks that they do.
 */
import { Runtime } from '../bridge/index.js';
import { gd } from '../plugins/momentum/gd.js';
import { Dataset } from '../sdk/data.js';
import type { MomentumOptimizer } from '../sdk/families/momentum/types.js';
import { Model } from '../sdk/model.js';
import { Trainer } from '../sdk/trainer.js';
import { alternateEpochs, type BenchOptions, type BenchResult, median, result, serveBaseline, trainerEpochs, using } from './lib.js';

/** One epoch-timing comparison: the Trainer with `optimizer` against train_mlp.py with `args`. */
export interface EpochComparison {
  name: string;
  /** Hidden widths of the MLP 64 → … → 10 (the same on both sides). */
  hidden: number[];
  optimizer: MomentumOptimizer;
  /** train_mlp.py's optimizer flags (besides --batch, --hidden, --layers, --lr, --log-every). */
  args: string[];
  lr: number;
  limit: number;
  note: string;
}

/** Median epoch times of the Trainer and of the plain PyTorch loop, alternating; checks they trained alike. */
export async function compareEpochs(opts: BenchOptions, c: EpochComparison): Promise<BenchResult> {
  return using(async (defer) => {
    const rounds = opts.quick ? 1 : 8;
    const perRound = opts.quick ? 1 : 3;
    const warmup = opts.quick ? 1 : 3;
    const env = { OMP_NUM_THREADS: '1' };
    if (new Set(c.hidden).size !== 1) throw new Error(`${c.name}: train_mlp.py builds hidden layers of one width, got ${c.hidden}`);
    const pyArgs = ['--batch', '64', '--hidden', String(c.hidden[0]), '--layers', String(c.hidden.length), '--lr', String(c.lr), '--log-every', '10', ...c.args];
    const baseline = serveBaseline('train_mlp.py', pyArgs, defer, env);

    const rt = await Runtime.start({ env });
    defer(() => rt.close());
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, ...c.hidden, 10] }, { seed: 0 });
    const [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const trainer = new Trainer({ model, optimizer: c.optimizer, batchSize: 64, logEvery: 10, progress: 'none' });
    const { sdk: sdkS, py: pyS, sdkLoss, pyLoss } = await alternateEpochs(c.name, baseline, trainerEpochs(trainer, train), { warmup, rounds, perRound });
    const sdk = median(sdkS) * 1000, base = median(pyS) * 1000;
    opts.log(`${c.name}: Trainer ${sdk.toFixed(1)} ms / epoch, plain PyTorch ${base.toFixed(1)} ms; last losses ${sdkLoss.toFixed(5)} / ${pyLoss.toFixed(5)}`);
    return result({
      name: c.name, value: sdk, baseline: base, unit: 'ms', target: `<= ${c.limit}x`,
      met: sdk / base <= c.limit,
      note: `${c.note}; median of ${sdkS.length} epochs each, alternating; 1 thread`,
    });
  });
}

export async function benchTrainStep(opts: BenchOptions): Promise<BenchResult[]> {
  return [await compareEpochs(opts, {
    name: 'sdk.train_step', hidden: [64], optimizer: gd({ lr: 0.5 }), lr: 0.5, args: [], limit: 1.25,
    note: 'MLP 64-64-10 on digits, 23 steps of 64, gradient descent',
  })];
}
