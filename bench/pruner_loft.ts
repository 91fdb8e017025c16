/**
 * pruner.loft_comm: bytes exchanged per round by LoFT — K = 4 workers, T = 10 local steps,
 * the digits CNN (channels [32, 64], fc 128) — against data-parallel training of the same
 * CNN for the same T steps, where every step the full gradient (P f32) is ring all-reduced:
 * each worker sends and receives 2(K−1)/K·P·4 bytes a step, 2(K−1)·P·4·T a round over all
 * workers, each way. LoFT's figure is a real round's: `up` from the coordinator's RoundReport
 * (the workers' messages: their slices, the parameters no partitioned unit cuts, a 4-byte
 * loss each), `down` what the workers received (each its sub-model's parameters). Both sides
 * are sent plus received over all workers. Counts, not times: the same on any machine.
 */
import { Runtime } from '../bridge/index.js';
import { loft } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import { type BenchOptions, type BenchResult, result, using } from './lib.js';

const K = 4, T = 10;

export async function benchLoftComm(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const rt = await Runtime.start({ threads: 1 });
    defer(() => rt.close());
    const digits = await Dataset.builtin(rt, 'digits');
    const [train, test] = digits.split(0.2, 0);
    defer(() => { for (const d of [digits, train, test]) d.free(); });
    // quick: the same counts from a round of a smaller CNN (the figure is a ratio of counts either way)
    const spec = { kind: 'cnn' as const, image: [8, 8] as [number, number], channels: opts.quick ? [8, 16] : [32, 64], hidden: opts.quick ? 32 : 128, classes: 10 };
    const model = await Model.build(rt, spec, { seed: 0 });
    defer(() => model.free());
    const report = await loft({ workers: K, localSteps: T }).pretrain(model, train, { rounds: 1 });
    const { up, down } = report.rounds[0].bytes;
    const dp = report.dataParallelBytesPerRound;
    const value = up + down, baseline = dp.up + dp.down;
    opts.log(`pruner.loft_comm: LoFT ${up} B up + ${down} B down per round, data-parallel ${dp.up} B + ${dp.down} B`);
    return [result({
      name: 'pruner.loft_comm', value, baseline, unit: 'B', target: '< 1x', met: value < baseline,
      note: `CNN channels [${spec.channels}], fc ${spec.hidden} (${model.params.reduce((a, p) => a + p.numel, 0)} params); K = ${K}, T = ${T}, partition 'alternate'; bytes sent + received per round over all workers; data-parallel: ring all-reduce of the f32 gradient every step`,
    })];
  });
}
