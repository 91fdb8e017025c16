/**
 * pruner.edge_popup_step: epochs of edge-popup training through the Trainer with the
 * `edge-popup` plugin (plugins/pruners/edge-popup.ts: its weight hooks keep the top half of
 * each layer's |scores| with a straight-through gradient, the weights frozen, gradient
 * descent on the scores) against the same written in plain PyTorch as hidden-networks
 * writes it (`baselines/edge_popup.py`: a `GetSubnet` autograd Function in a forward
 * pre-hook), kept alive so that the two alternate, epoch by epoch. MLP 64 → 128 → 128 → 10
 * on the digits, batch 64, 23 steps an epoch. The same model build, split, scores and
 * batch orders on both sides, so the epochs' mean losses must agree (checked). One
 * intra-op thread on both sides, as in sdk.train_step. Reported per step (epoch / 23).
 */
import { Runtime } from '../bridge/index.js';
import { gd } from '../plugins/momentum/gd.js';
import { edgePopup } from '../plugins/pruners/edge-popup.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import { Trainer } from '../sdk/trainer.js';
import { alternateEpochs, type BenchOptions, type BenchResult, median, result, serveBaseline, trainerEpochs, using } from './lib.js';

const HIDDEN = 128, LAYERS = 2, BATCH = 64, LR = 0.1, SPARSITY = 0.5, LIMIT = 1.25;

export async function benchEdgePopupStep(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const rounds = opts.quick ? 1 : 8;
    const perRound = opts.quick ? 1 : 3;
    const warmup = opts.quick ? 1 : 3;
    const env = { OMP_NUM_THREADS: '1' };
    const baseline = serveBaseline('edge_popup.py', ['--batch', String(BATCH), '--hidden', String(HIDDEN), '--layers', String(LAYERS), '--lr', String(LR), '--sparsity', String(SPARSITY), '--seed', '0'], defer, env);
    const rt = await Runtime.start({ env });
    defer(() => rt.close());
    const [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, ...Array(LAYERS).fill(HIDDEN), 10] }, { seed: 0 });
    const plugin = edgePopup({ sparsity: SPARSITY, seed: 0 });
    const trainer = new Trainer({ model, optimizer: gd({ lr: LR }), plugins: [plugin], batchSize: BATCH, logEvery: 1000, progress: 'none' });
    defer(() => { trainer.free(); plugin.free(); });
    const steps = train.countBatches(BATCH);
    const { sdk: sdkS, py: pyS, sdkLoss, pyLoss } = await alternateEpochs('pruner.edge_popup_step', baseline, trainerEpochs(trainer, train), { warmup, rounds, perRound });
    const sdk = (median(sdkS) / steps) * 1e3, base = (median(pyS) / steps) * 1e3;
    opts.log(`pruner.edge_popup_step: Trainer + edge-popup ${sdk.toFixed(3)} ms / step, plain PyTorch ${base.toFixed(3)} ms; last losses ${sdkLoss.toFixed(5)} / ${pyLoss.toFixed(5)}`);
    return [result({
      name: 'pruner.edge_popup_step', value: sdk, baseline: base, unit: 'ms', target: `<= ${LIMIT}x`, met: sdk / base <= LIMIT,
      note: `MLP 64-${HIDDEN}-${HIDDEN}-10 on digits, frozen weights, top-${1 - SPARSITY} of |scores| per layer (straight-through), ${steps} steps of ${BATCH}, GD on the scores; median of ${sdkS.length} epochs each, alternating; 1 thread`,
    })];
  });
}
