/**
 * A TypeScript service extends a PyTorch training script it does not own: it starts
 * `examples/plain-pytorch/train_digits.py` (a plain script, SGD on the digits, plus the
 * three lines of `liaison_runtime.serve`), installs the `nesterov` optimizer and the
 * `magnitude` pruner into it, and watches it train: the script's own loop replays the
 * plugins' programs in its own process, and this side runs only at its epoch ends.
 *
 *     npx tsx examples/serve-digits.ts                     # 10 epochs; PNG in examples/out
 *     LIAISON_SERVED_EPOCHS=2 npx tsx examples/serve-digits.ts --out runs
 *
 * To extend a script started by hand instead, run it with LIAISON_SERVE_WAIT=300 (it prints
 * `LIAISON_SERVING {"endpoint": …}` and waits for a service) and give its endpoint:
 *
 *     LIAISON_SERVE_ENDPOINT=ipc:///tmp/liaison-serve-…/serve.sock npx tsx examples/serve-digits.ts
 *
 * It prints a table per epoch (the loss and held-out accuracy the script reports, the
 * sparsity of the script's weights read at that moment) and writes serve-digits.png.
 */
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { outDir, positiveInt, secs } from './env.js';
import { magnitude, nesterov } from '../plugins/index.js';
import { plotLines, Service, sparsityOf } from '../sdk/index.js';

const EPOCHS = positiveInt('LIAISON_SERVED_EPOCHS', 10);
const LR = 0.05;
const MOMENTUM = 0.9;
const SPARSITY = 0.8;
const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'plain-pytorch', 'train_digits.py');

interface Row { epoch: number; step: number; loss: number; accuracy: number; sparsity: number }

async function main(): Promise<void> {
  const out = outDir(process.argv.slice(2));
  const t0 = performance.now();
  const endpoint = process.env.LIAISON_SERVE_ENDPOINT;
  const svc = endpoint
    ? await Service.connect(endpoint)
    : await Service.launch(SCRIPT, { args: ['--epochs', String(EPOCHS)], onOutput: (line) => console.log(`  script | ${line}`) });
  console.log(`${endpoint ? `connected to ${endpoint}` : `started ${SCRIPT}`}: it serves ${svc.models.join(', ')} (${secs(t0)})`);
  const rows: Row[] = [];
  try {
    const model = await svc.model('model');
    console.log(`model: ${model.params.map((p) => `${p.name} [${p.shape.join('×')}]`).join(', ')}`);
    await svc.install(nesterov({ lr: LR, momentum: MOMENTUM }));
    await svc.install(magnitude({ sparsity: SPARSITY, scope: 'layer', atEpoch: 1 })); // prunes at the end of epoch 1: an event
    // each epoch end: the script waits while this runs (its metrics, the weights as they are)
    await svc.watch(async (e) => {
      if (e.point !== 'epochEnd') return;
      const { sparsity } = await sparsityOf(model);
      rows.push({ epoch: e.epoch + 1, step: e.step, loss: e.metrics.loss, accuracy: e.metrics.accuracy, sparsity });
    });
    await svc.ready(); // the script's serve() returns: training starts with both plugins
    console.log(`installed nesterov (lr ${LR}, momentum ${MOMENTUM}) and magnitude (sparsity ${SPARSITY} per layer, after epoch 1); training…`);
    if (!endpoint) console.log(`script ${await svc.finished()}`);
  } finally {
    await svc.close();
  }
  if (!rows.length) throw new Error('the script reported no epoch');
  console.log('\n| epoch | steps | train loss | held-out accuracy | weight sparsity |');
  console.log('|---:|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.epoch} | ${r.step} | ${r.loss.toFixed(4)} | ${(r.accuracy * 100).toFixed(1)}% | ${(r.sparsity * 100).toFixed(1)}% |`);
  console.log(`\ntotal ${secs(t0)}`);
  mkdirSync(out, { recursive: true });
  const path = join(out, 'serve-digits.png');
  const x = rows.map((r) => r.epoch);
  await plotLines({
    path, xlabel: 'epoch', panels: ['train loss (as the script reports it)', 'held-out accuracy'],
    series: [
      { label: 'plain script + nesterov + magnitude', x, y: rows.map((r) => r.loss), style: 'o-', panel: 0 },
      { label: 'plain script + nesterov + magnitude', x, y: rows.map((r) => r.accuracy), style: 'o-', panel: 1 },
    ],
  }).then(() => console.log(`curves: ${path}`), (e: unknown) => console.log(`curves: not drawn (${(e as Error).message})`));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
