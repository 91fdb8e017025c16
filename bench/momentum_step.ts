/**
 * momentum.step: one training epoch with the `nesterov` plugin — its update traced into the
 * Trainer's step program — against the same epoch in a plain PyTorch loop with
 * `torch.optim.SGD(nesterov=True)` (baselines/train_mlp.py). A deep ReLU MLP on the digits
 * (64 → 128 → 128 → 128 → 10, batch 64, 23 steps), the loss read every 10 steps; the same
 * weights, data and batch order on both sides, so their losses must agree (checked).
 */
import { nesterov } from '../plugins/momentum/nesterov.js';
import type { BenchOptions, BenchResult } from './lib.js';
import { compareEpochs } from './sdk_train_step.js';

export async function benchMomentumStep(opts: BenchOptions): Promise<BenchResult[]> {
  const lr = 0.05, momentum = 0.9;
  return [await compareEpochs(opts, {
    name: 'momentum.step', hidden: [128, 128, 128], optimizer: nesterov({ lr, momentum }), lr,
    args: ['--optimizer', 'nesterov', '--momentum', String(momentum)], limit: 1.2,
    note: 'MLP 64-128-128-128-10 on digits, 23 steps of 64, Nesterov β = 0.9 vs torch.optim.SGD(nesterov=True)',
  })];
}
