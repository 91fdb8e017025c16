/**
 * loop.python_optimizer: a plain PyTorch training loop stepping with the `nesterov` plugin
 * installed from TypeScript into the running script (liaison_runtime.serve; its update is a
 * program the script's `svc.optimizer.step()` replays) against the same loop with
 * `torch.optim.SGD(nesterov=True)` — both in one Python process (baselines/served_loop.py),
 * stepping in turn batch by batch (a loaded machine's drift hits both alike), one intra-op
 * thread. A deep ReLU MLP on the digits (64 → 128 → 128 →
 * 128 → 10, 23 steps of 64 per epoch); the same init and batches, so the last epoch's mean
 * losses must agree (checked).
 */
import { join } from 'node:path';
import { nesterov } from '../plugins/momentum/nesterov.js';
import { Service } from '../sdk/served.js';
import { BASELINES, type BenchOptions, type BenchResult, median, result } from './lib.js';

const LIMIT = 1.1;

export async function benchLoopPythonOptimizer(opts: BenchOptions): Promise<BenchResult[]> {
  const c = { lr: 0.05, momentum: 0.9, warmup: opts.quick ? 0 : 2, rounds: opts.quick ? 1 : 30 };
  let line = '';
  const svc = await Service.launch(join(BASELINES, 'served_loop.py'), {
    args: ['--lr', String(c.lr), '--momentum', String(c.momentum), '--warmup', String(c.warmup), '--rounds', String(c.rounds)],
    cwd: BASELINES, env: { OMP_NUM_THREADS: '1' }, waitForClientS: 120,
    onOutput: (l, stream) => { if (stream === 'stdout' && l.startsWith('{')) line = l; },
  });
  try {
    await svc.install(nesterov({ lr: c.lr, momentum: c.momentum }));
    await svc.ready();
    const how = await svc.finished();
    if (how !== 'exited with code 0' || !line) throw new Error(`baselines/served_loop.py ${how}${line ? '' : ' without its result line'}`);
  } finally {
    await svc.close();
  }
  const r = JSON.parse(line) as { served_s: number[]; sgd_s: number[]; plugin: string; served_loss: number; sgd_loss: number };
  if (!r.plugin?.startsWith('momentum-optimizer/nesterov')) throw new Error(`the script stepped with ${r.plugin}, not the installed nesterov`);
  if (Math.abs(r.served_loss - r.sgd_loss) > 1e-4 * Math.max(1, Math.abs(r.sgd_loss))) throw new Error(`the two loops disagree: last-epoch loss ${r.served_loss} (plugin) vs ${r.sgd_loss} (SGD)`);
  const name = 'loop.python_optimizer';
  const value = median(r.served_s) * 1000, base = median(r.sgd_s) * 1000;
  opts.log(`${name}: served + nesterov plugin ${value.toFixed(1)} ms / epoch, torch.optim.SGD(nesterov=True) ${base.toFixed(1)} ms; last losses ${r.served_loss.toFixed(5)} / ${r.sgd_loss.toFixed(5)}`);
  return [result({
    name, value, baseline: base, unit: 'ms', target: `<= ${LIMIT}x`, met: value / base <= LIMIT,
    note: `plain PyTorch loop, MLP 64-128-128-128-10 on digits, 23 steps of 64; plugin installed from TypeScript vs SGD(nesterov=True); median of ${r.served_s.length} epochs each, the two loops stepping in turn, one process, 1 thread`,
  })];
}
