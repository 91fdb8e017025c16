/**
 * loop.custom_ts: an epoch of the distillation loop of examples/distill-lib.ts — an own
 * training loop on the SDK's public parts (`TrainingLoop`, a step program whose traced
 * step runs a teacher CNN's forward beside the student's, the `magnitude` pruner and the
 * `nesterov` optimizer attached to the student) — against the same loop in plain PyTorch
 * (`baselines/distill_loop.py`: the same builds and seeds, batch order, masks, SGD with
 * Nesterov momentum, the masks multiplied back after every step). The two alternate, epoch
 * by epoch, one intra-op thread each; their last epoch's mean losses must agree.
 */
import { Runtime } from '../bridge/index.js';
import { distillEpoch, distillLoop } from '../examples/distill-lib.js';
import { magnitude } from '../plugins/pruners/magnitude.js';
import { nesterov } from '../plugins/momentum/nesterov.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import { alternateEpochs, type BenchOptions, type BenchResult, median, result, serveBaseline, using } from './lib.js';

const LIMIT = 1.25;

export async function benchLoopCustomTs(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const rounds = opts.quick ? 1 : 8;
    const perRound = opts.quick ? 1 : 3;
    const warmup = opts.quick ? 1 : 3;
    const env = { OMP_NUM_THREADS: '1' };
    const c = { batch: 64, hidden: 32, sparsity: 0.9, lr: 0.05, momentum: 0.9, temperature: 4, alpha: 0.7 };
    const baseline = serveBaseline('distill_loop.py', Object.entries(c).flatMap(([k, v]) => [`--${k}`, String(v)]), defer, env);

    const rt = await Runtime.start({ env });
    defer(() => rt.close());
    const teacher = await Model.build(rt, { kind: 'cnn', image: [8, 8], channels: [16, 32], hidden: 64, classes: 10 }, { seed: 100 });
    const student = await Model.build(rt, { kind: 'mlp', sizes: [64, c.hidden, 10] }, { seed: 0 });
    const [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const d = await distillLoop({ student, teacher, optimizer: nesterov({ lr: c.lr, momentum: c.momentum }), plugins: [magnitude({ sparsity: c.sparsity })], ...c });
    const epochs = async (n: number) => {
      const seconds: number[] = [];
      let loss = NaN;
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        loss = await distillEpoch(d, train, c.batch);
        seconds.push((performance.now() - t0) / 1000);
      }
      return { seconds, loss };
    };
    const name = 'loop.custom_ts';
    const { sdk: sdkS, py: pyS, sdkLoss, pyLoss } = await alternateEpochs(name, baseline, epochs, { warmup, rounds, perRound });
    const sdk = median(sdkS) * 1000, base = median(pyS) * 1000;
    opts.log(`${name}: own loop ${sdk.toFixed(1)} ms / epoch, plain PyTorch ${base.toFixed(1)} ms; last losses ${sdkLoss.toFixed(5)} / ${pyLoss.toFixed(5)}`);
    return [result({
      name, value: sdk, baseline: base, unit: 'ms', target: `<= ${LIMIT}x`, met: sdk / base <= LIMIT,
      note: `distillation, CNN teacher -> MLP 64-${c.hidden}-10 student pruned to ${c.sparsity * 100}%, nesterov, 23 steps of ${c.batch}; median of ${sdkS.length} epochs each, alternating; 1 thread`,
    })];
  });
}
