/**
 * pruner.mask_overhead: one training epoch with a pruner's masks held — `imp` at 80%
 * sparsity, its masks multiplied into the weights after every optimizer step, inside the
 * traced step program — against the same epoch with no pruner. The same model (the
 * lottery-ticket MLP 64-300-100-10), data (the digits' training split, batch 60: 24
 * steps), optimizer (Adam) and batch orders on both sides; two Trainers alternate, epoch
 * by epoch, so a noisy machine slows both alike. One intra-op thread, as in sdk.train_step.
 */
import { Runtime } from '../bridge/index.js';
import { adam, imp } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import { Trainer } from '../sdk/trainer.js';
import { type BenchOptions, type BenchResult, median, result, using } from './lib.js';

const SIZES = [64, 300, 100, 10], BATCH = 60, SPARSITY = 0.8, LIMIT = 1.1;

export async function benchPrunerMask(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const rounds = opts.quick ? 2 : 101;
    const warmup = opts.quick ? 1 : 5;
    const rt = await Runtime.start({ threads: 1 });
    defer(() => rt.close());
    const [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const make = async (masked: boolean) => {
      const model = await Model.build(rt, { kind: 'mlp', sizes: SIZES }, { seed: 0 });
      // one round at attach, 80% of the weights: then only the per-step re-masking remains
      const plugins = masked ? [imp({ rate: SPARSITY, rounds: 1, atEpoch: 0 })] : [];
      const trainer = new Trainer({ model, optimizer: adam({ lr: 1.2e-3 }), plugins, epochs: 1, batchSize: BATCH, seed: 0, loss: 'cross_entropy', progress: 'none', logEvery: 1_000_000 });
      defer(() => { trainer.free(); for (const p of plugins) p.free(); model.free(); });
      return async () => {
        const t0 = performance.now();
        await trainer.fit(train, { epochs: 1 });
        return (performance.now() - t0) / 1000;
      };
    };
    const dense = await make(false), masked = await make(true);
    for (let i = 0; i < warmup; i++) { await dense(); await masked(); }
    const d: number[] = [], m: number[] = [];
    for (let r = 0; r < rounds; r++) {
      // alternate which goes first: neither always follows the other's garbage
      if (r % 2) { m.push(await masked()); d.push(await dense()); } else { d.push(await dense()); m.push(await masked()); }
    }
    const ms = median(m) * 1000, ds = median(d) * 1000;
    opts.log(`pruner.mask_overhead: masked ${ms.toFixed(1)} ms / epoch, dense ${ds.toFixed(1)} ms (medians of ${rounds})`);
    return [result({
      name: 'pruner.mask_overhead', value: ms, baseline: ds, unit: 'ms', target: `<= ${LIMIT}x`, met: ms / ds <= LIMIT,
      note: `MLP ${SIZES.join('-')} on digits, 24 steps of ${BATCH}, Adam; imp at ${SPARSITY * 100}% re-masking after every step vs no pruner; median of ${rounds} epochs each, alternating; 1 thread`,
    })];
  });
}
