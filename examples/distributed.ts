/**
 * A runtime group (docs/distributed.md): N PyTorch runtimes started under torchrun, driven
 * from this one TypeScript program as one runtime, next to a single runtime doing the same
 * work — to show the group computes what one runtime does, and what crosses between ranks.
 *
 * 1. Data-parallel training: the digits MLP (64 → 128 → 10) trained with the Trainer, unchanged,
 *    on the group — every step keeps a rank's rows of the batch and sums the gradients over
 *    the ranks inside the step program — and on one runtime; the epoch losses, the
 *    held-out accuracy, the seconds and the bytes the collectives sent per epoch.
 * 2. Workers on ranks: Parallel Deflation's k workers (the top principal components of the
 *    digits' covariance, d = 64) spread over the ranks (worker j on rank j mod N, the
 *    broadcast an all-gather), against the same fit on one runtime: the max error of the
 *    components against eigh's after every round, and the bytes gathered per round.
 *
 * It prints markdown tables and writes distributed.png (training loss per epoch; the
 * deflation's max error per round) to the out folder.
 *
 *     LIAISON_GROUP=2 npx tsx examples/distributed.ts          # a local group of 2 ranks (default 2)
 *     LIAISON_GROUP_ENDPOINT=tcp://host0:PORT LIAISON_KEY=… npx tsx examples/distributed.ts   # a group started with torchrun
 *     LIAISON_DIST_EPOCHS=2 LIAISON_DIST_K=4 npx tsx examples/distributed.ts --out runs     # the fast variant
 *
 * Knobs: LIAISON_GROUP (ranks of a local group, 2), LIAISON_DIST_EPOCHS (10), LIAISON_DIST_K
 * (principal components, 8; rounds 2k), LIAISON_DIST_THREADS (torch threads per rank and of
 * the single runtime, 1).
 */
import { mkdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Group, Runtime } from '../bridge/index.js';
import { exact, nesterov, parallelDeflation } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import { errorSummary } from '../sdk/families/deflators/errors.js';
import { Model } from '../sdk/model.js';
import { covarianceOf } from '../sdk/pca.js';
import { plotLines } from '../sdk/plot.js';
import { Trainer } from '../sdk/trainer.js';
import { collectiveBytes } from '../sdk/workers/ranks.js';
import { outDir, positiveInt, secs } from './env.js';
import { markdownTable } from './tables.js';

const EPOCHS = positiveInt('LIAISON_DIST_EPOCHS', 10);
const K = positiveInt('LIAISON_DIST_K', 8);
const THREADS = positiveInt('LIAISON_DIST_THREADS', 1);
const OUT = outDir(process.argv.slice(2));
const kib = (b: number) => `${(b / 1024).toFixed(1)} KiB`;

/** Train the MLP for EPOCHS epochs on `rt`: per epoch the loss, held-out accuracy, seconds and collective bytes. */
async function train(rt: Runtime) {
  const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 128, 10] }, { seed: 0 });
  const [trainSet, test] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
  const trainer = new Trainer({ model, optimizer: nesterov({ lr: 0.05, momentum: 0.9 }), batchSize: 64, progress: 'none' });
  const rows: { loss: number; accuracy: number; seconds: number; bytes: number }[] = [];
  for (let e = 0; e < EPOCHS; e++) {
    const before = await collectiveBytes(rt);
    const [r] = await trainer.fit(trainSet, { epochs: 1, eval: test });
    rows.push({ loss: r.loss, accuracy: r.accuracy ?? NaN, seconds: r.seconds, bytes: (await collectiveBytes(rt)) - before });
  }
  trainer.free();
  model.free();
  return rows;
}

/** Parallel Deflation of the digits' covariance on `rt` (`execution`): max error per round against eigh, and bytes per round. */
async function deflate(rt: Runtime, execution: 'batched' | 'ranks') {
  return rt.scope(async () => {
    const digits = await Dataset.builtin(rt, 'digits');
    const x = digits.x.to('f64');
    const cov = covarianceOf(x.sub(x.mean(0, true)), digits.size);
    const reference = (await exact().fit({ cov, d: 64, k: K }, { rt, seed: 0 })).vectors;
    const rounds: { error: number; bytes: number }[] = [];
    let mark = await collectiveBytes(rt);
    const t0 = performance.now();
    await parallelDeflation({ localSteps: 10, rounds: 2 * K, execution }).fit({ cov, d: 64, k: K }, {
      rt, seed: 0,
      onRound: async (_r, vectors) => {
        const now = await collectiveBytes(rt);
        rounds.push({ error: (await errorSummary(reference, vectors)).max, bytes: now - mark });
        mark = now;
      },
    });
    return { rounds, seconds: (performance.now() - t0) / 1000 };
  });
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const started = await Group.fromEnv({ threads: THREADS });
  const [group, one] = await Promise.all([started ?? Group.start({ ranks: 2, threads: THREADS }), Runtime.start({ threads: THREADS })]);
  const n = group.size;
  console.log(`group: ${n} ranks (${group.info.group?.backend}, torch ${group.info.torch} on ${group.info.device}, ${group.info.group?.endpoints.join(', ')}), and one runtime (pid ${one.info.pid}), ready in ${secs(t0)}\n`);
  try {
    // 1. the same Trainer on the group and on one runtime
    const [mine, single] = [await train(group), await train(one)];
    console.log(`## Data-parallel training: digits MLP 64-128-10, batch 64 (${64 / n} rows per rank), Nesterov\n`);
    console.log(markdownTable(['epoch', `loss, ${n} ranks`, 'loss, 1 runtime', '|difference|', `accuracy, ${n} ranks`, `s, ${n} ranks`, 's, 1 runtime', 'sent per epoch'],
      mine.map((r, e) => [String(e + 1), r.loss.toFixed(5), single[e].loss.toFixed(5), Math.abs(r.loss - single[e].loss).toExponential(1), `${(r.accuracy * 100).toFixed(1)}%`, r.seconds.toFixed(2), single[e].seconds.toFixed(2), kib(r.bytes)])));
    const worst = Math.max(...mine.map((r, e) => Math.abs(r.loss - single[e].loss)));
    console.log(`\nlargest loss difference ${worst.toExponential(2)}: the group trains what one runtime trains on the whole batch\n`);

    // 2. Parallel Deflation's workers on the ranks
    const [ranked, batched] = [await deflate(group, 'ranks'), await deflate(one, 'batched')];
    console.log(`## Parallel Deflation: top ${K} components of the digits' covariance, ${2 * K} rounds of 10 power steps, worker j on rank j mod ${n}\n`);
    console.log(markdownTable(['round', `max error, ${n} ranks`, 'max error, 1 runtime', 'gathered'],
      ranked.rounds.map((r, i) => [String(i + 1), r.error.toExponential(2), batched.rounds[i].error.toExponential(2), kib(r.bytes)])));
    console.log(`\n${n} ranks ${ranked.seconds.toFixed(2)} s, one runtime ${batched.seconds.toFixed(2)} s (reading the errors every round included)`);

    mkdirSync(OUT, { recursive: true });
    const png = await plotLines({
      path: join(OUT, 'distributed.png'), panels: ['training loss per epoch', 'Parallel Deflation: max error per round'],
      series: [
        { label: `${n} ranks`, y: mine.map((r) => r.loss), x: mine.map((_, e) => e + 1), style: 'o-', panel: 0 },
        { label: '1 runtime', y: single.map((r) => r.loss), x: single.map((_, e) => e + 1), style: 'x--', panel: 0 },
        { label: `${n} ranks`, y: ranked.rounds.map((r) => Math.max(r.error, 1e-12)), x: ranked.rounds.map((_, i) => i + 1), style: 'o-', panel: 1 },
        { label: '1 runtime', y: batched.rounds.map((r) => Math.max(r.error, 1e-12)), x: batched.rounds.map((_, i) => i + 1), style: 'x--', panel: 1 },
      ],
      xlabel: 'epoch (left), round (right)', logy: true,
    });
    console.log(`\nplot: ${relative(process.cwd(), png) || png}`);
  } finally {
    await Promise.all([group.close(), one.close()]);
  }
  console.log(`group and runtime stopped (${secs(t0)})`);
}

await main();
