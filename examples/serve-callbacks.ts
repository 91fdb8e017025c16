/**
 * The same plugins through PyTorch Lightning and the Hugging Face Trainer: this service
 * starts `examples/plain-pytorch/train_digits_lightning.py` and `train_digits_hf.py` (each a
 * script as users of those libraries write it, plus the `# liaison` lines: serve(), the
 * service's optimizer, the callback), installs `nesterov` and `magnitude` into each, and
 * compares their held-out accuracy with the SDK's own Trainer on the same split with the
 * same plugins, over several seeds (the seed noise the comparison is judged against).
 *
 *     npx tsx examples/serve-callbacks.ts                   # 10 epochs, 3 seeds; PNG in examples/out
 *     LIAISON_CALLBACKS_EPOCHS=3 LIAISON_CALLBACKS_SEEDS=1 npx tsx examples/serve-callbacks.ts --out runs
 *
 * The three loops of a seed run side by side. It prints one row per run (final held-out
 * accuracy, the weights' sparsity read from the script at its last evaluation, time) and
 * one per loop (mean, range and standard deviation over the seeds), and writes
 * serve-callbacks.png (held-out accuracy per epoch, seed 0).
 */
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Runtime } from '../bridge/index.js';
import { magnitude, nesterov } from '../plugins/index.js';
import { Dataset, Model, plotLines, Service, sparsityOf, Trainer } from '../sdk/index.js';
import { outDir, positiveInt, secs } from './env.js';

const EPOCHS = positiveInt('LIAISON_CALLBACKS_EPOCHS', 10);
const SEEDS = positiveInt('LIAISON_CALLBACKS_SEEDS', 3);
const LR = 0.05;
const MOMENTUM = 0.9;
const SPARSITY = 0.8;
/** Pruned after the first epoch: magnitude pruning of random initial weights (atEpoch 0) leaves this MLP at chance. */
const PRUNE_AFTER = 1;
const BATCH = 64;
const HERE = dirname(fileURLToPath(import.meta.url));
/** Each script, and the name its evaluation gives the held-out accuracy. */
const SCRIPTS = {
  lightning: { path: join(HERE, 'plain-pytorch', 'train_digits_lightning.py'), accuracy: 'val_accuracy' },
  hf: { path: join(HERE, 'plain-pytorch', 'train_digits_hf.py'), accuracy: 'eval_accuracy' },
} as const;
type Loop = 'trainer' | keyof typeof SCRIPTS;

interface Run { loop: Loop; seed: number; accuracy: number[]; sparsity: number; seconds: number }

const plugins = () => [nesterov({ lr: LR, momentum: MOMENTUM }), magnitude({ sparsity: SPARSITY, atEpoch: PRUNE_AFTER })] as const;

/** The SDK's Trainer: the digits split as the scripts split it (randperm seed 0, a fifth held out). */
async function trainerRun(seed: number): Promise<Run> {
  const t0 = performance.now();
  const rt = await Runtime.start();
  try {
    return await rt.scope(async () => {
      const [train, test] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
      const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 128, 10] }, { seed });
      const [optimizer, pruner] = plugins();
      const trainer = new Trainer({ model, optimizer, plugins: [pruner], epochs: EPOCHS, batchSize: BATCH, seed, progress: 'none' });
      const history = await trainer.fit(train, { eval: test });
      const { sparsity } = await sparsityOf(model, model.params.filter((p) => p.shape.length === 2).map((p) => p.name));
      return { loop: 'trainer' as const, seed, accuracy: history.map((h) => h.accuracy ?? NaN), sparsity, seconds: (performance.now() - t0) / 1000 };
    });
  } finally {
    await rt.close();
  }
}

/** One script, started here, with both plugins installed before its first step. */
async function scriptRun(loop: keyof typeof SCRIPTS, seed: number): Promise<Run> {
  const t0 = performance.now();
  const { path, accuracy: key } = SCRIPTS[loop];
  const svc = await Service.launch(path, { args: ['--epochs', String(EPOCHS), '--seed', String(seed)], onOutput: (line) => { if (/held-out|stepped by/.test(line)) console.log(`  ${loop} | ${line}`); } });
  const run: Run = { loop, seed, accuracy: [], sparsity: NaN, seconds: 0 };
  try {
    const model = await svc.model();
    const [optimizer, pruner] = plugins();
    await svc.install(optimizer);
    await svc.install(pruner);
    const weights = model.params.filter((p) => p.shape.length === 2).map((p) => p.name);
    // each evaluation of the fit: the script waits while this reads its weights as they are
    await svc.watch(async (e) => {
      if (e.point !== 'evaluation') return; // the pruner's epochEnd events come here too
      run.accuracy.push(e.metrics[key]);
      run.sparsity = (await sparsityOf(model, weights)).sparsity;
    }, ['evaluation']);
    await svc.ready();
    const how = await svc.finished();
    if (how !== 'exited with code 0') throw new Error(`${path} ${how}\n${svc.script?.stderrTail()}`);
  } finally {
    await svc.close();
  }
  if (run.accuracy.length !== EPOCHS) throw new Error(`${loop}: ${run.accuracy.length} evaluations for ${EPOCHS} epochs`);
  run.seconds = (performance.now() - t0) / 1000;
  return run;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sd = (xs: number[]) => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)));
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

async function main(): Promise<void> {
  const out = outDir(process.argv.slice(2));
  const t0 = performance.now();
  const runs: Run[] = [];
  for (let seed = 0; seed < SEEDS; seed++) {
    // the three loops of a seed side by side: each script spends most of its time importing
    const one = async (loop: Loop) => {
      const r = loop === 'trainer' ? await trainerRun(seed) : await scriptRun(loop, seed);
      console.log(`${loop} seed ${seed}: held-out accuracy ${pct(r.accuracy.at(-1)!)}, sparsity ${pct(r.sparsity)} (${r.seconds.toFixed(1)} s)`);
      return r;
    };
    runs.push(...await Promise.all((['trainer', 'lightning', 'hf'] as const).map(one)));
  }
  console.log(`\nnesterov (lr ${LR}, momentum ${MOMENTUM}) + magnitude (sparsity ${SPARSITY} after epoch ${PRUNE_AFTER}), ${EPOCHS} epochs of batch ${BATCH}, digits MLP 64-128-10\n`);
  console.log('| loop | seed | held-out accuracy | weight sparsity | seconds |');
  console.log('|---|---:|---:|---:|---:|');
  for (const r of runs) console.log(`| ${r.loop} | ${r.seed} | ${pct(r.accuracy.at(-1)!)} | ${pct(r.sparsity)} | ${r.seconds.toFixed(1)} |`);
  console.log('\n| loop | mean accuracy | min–max | sd over seeds | mean − Trainer mean |');
  console.log('|---|---:|---:|---:|---:|');
  const base = mean(runs.filter((r) => r.loop === 'trainer').map((r) => r.accuracy.at(-1)!));
  for (const loop of ['trainer', 'lightning', 'hf'] as const) {
    const accs = runs.filter((r) => r.loop === loop).map((r) => r.accuracy.at(-1)!);
    console.log(`| ${loop} | ${pct(mean(accs))} | ${pct(Math.min(...accs))}–${pct(Math.max(...accs))} | ${(sd(accs) * 100).toFixed(2)} pt | ${((mean(accs) - base) * 100).toFixed(2)} pt |`);
  }
  console.log(`\ntotal ${secs(t0)}`);
  mkdirSync(out, { recursive: true });
  const path = join(out, 'serve-callbacks.png');
  const x = Array.from({ length: EPOCHS }, (_, i) => i + 1);
  await plotLines({
    path, xlabel: 'epoch', ylabel: 'held-out accuracy', title: `digits, nesterov + magnitude ${SPARSITY} (seed 0)`,
    series: runs.filter((r) => r.seed === 0).map((r) => ({ label: r.loop, x, y: r.accuracy, style: 'o-' })),
  }).then(() => console.log(`curves: ${path}`), (e: unknown) => console.log(`curves: not drawn (${(e as Error).message})`));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
