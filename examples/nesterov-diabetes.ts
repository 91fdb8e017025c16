/**
 * Gradient descent, heavy ball and Nesterov's momentum on a deep ReLU network: regression
 * on scikit-learn's diabetes data (442 patients, 10 features, disease progression after a
 * year) with a 4-layer MLP (3 hidden ReLU layers of 64), full-batch and MSE — the setting
 * of Liao & Kyrillidis's theorem (a deep fully-connected ReLU network, squared loss,
 * deterministic gradients), on real data instead of the theorem's assumptions.
 *
 *     npx tsx examples/nesterov-diabetes.ts          # table: examples/out/nesterov-diabetes.md
 *                                                    # curves: examples/out/nesterov-diabetes.png
 *     LIAISON_MOMENTUM_SEEDS=2 LIAISON_MOMENTUM_ITERS=300 npx tsx examples/nesterov-diabetes.ts
 *
 * Knobs: LIAISON_MOMENTUM_SEEDS (5), LIAISON_MOMENTUM_ITERS (2000), LIAISON_MOMENTUM_LR (0.05),
 * LIAISON_MOMENTUM_TARGET (0.1), LIAISON_THREADS (1), --out DIR (examples/out).
 *
 * Data: a fifth held out (a fixed split, seed 0); the runtime's loader gives y standardized
 * and X as scikit-learn ships it (each column centred, of unit L2 norm: entries about
 * ±0.05), so the features are standardized here with the training rows' mean and standard
 * deviation. Every method takes the same step η (LR) and the two momentum methods the same
 * β (BETA, given: a network's κ is not known; by the paper's formula β = 0.9 is κ ≈ 333 with
 * c = 1), so the runs differ only in the update rule. Seeds change the initial weights,
 * not the split. Counted: iterations (full-batch steps) to a training loss of TARGET, and
 * the training and held-out loss after the budget.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Runtime } from '../bridge/index.js';
import { gd, heavyBall, nesterov } from '../plugins/index.js';
import { Dataset, evaluate, Model, type MomentumOptimizer, plotLines, type Series } from '../sdk/index.js';
import { outDir, positiveInt, positiveNumbers, secs } from './env.js';
import { itersCell, itersTo, lossCurve, median } from './momentum-runs.js';
import { markdownTable, textTable } from './tables.js';

const SEEDS = positiveInt('LIAISON_MOMENTUM_SEEDS', 5);
const ITERS = positiveInt('LIAISON_MOMENTUM_ITERS', 2000); // full-batch steps per run
const SIZES = [10, 64, 64, 64, 1]; // 3 hidden ReLU layers
const LR = positiveNumbers('LIAISON_MOMENTUM_LR', [0.05])[0]; // η, the same for every method
const BETA = 0.9; // β of heavy ball and Nesterov
const TARGET = positiveNumbers('LIAISON_MOMENTUM_TARGET', [0.1])[0]; // training MSE on standardized y (1 = predicting the mean)
const EVAL_EVERY = 100; // iterations between held-out evaluations (the curve's points)
const OUT = outDir(process.argv.slice(2)); // --out DIR, default examples/out
const METHODS = ['gd', 'heavy-ball', 'nesterov'] as const;
type Method = (typeof METHODS)[number];

function optimizer(method: Method): MomentumOptimizer {
  if (method === 'gd') return gd({ lr: LR });
  if (method === 'heavy-ball') return heavyBall({ lr: LR, momentum: BETA });
  return nesterov({ lr: LR, momentum: BETA });
}

/** [train, test] with x standardized by the training rows' statistics. */
async function diabetes(rt: Runtime): Promise<[Dataset, Dataset]> {
  const all = await Dataset.builtin(rt, 'diabetes');
  const [train, test] = all.split(0.2, 0);
  all.free();
  const mean = train.x.mean(0, true); // (1, 10)
  const std = train.x.std(0, true);
  const scaled = (d: Dataset) => new Dataset(rt, d.x.sub(mean).div(std), d.y.clone(), d.xShape, d.yShape, d.yDtype);
  const out: [Dataset, Dataset] = [scaled(train), scaled(test)];
  for (const t of [mean, std]) t.free();
  train.free();
  test.free();
  return out;
}

interface Run { losses: number[]; heldOut: { x: number[]; y: number[] }; finalTrain: number; finalHeldOut: number }

async function main(): Promise<void> {
  const t0 = performance.now();
  // one torch thread unless told otherwise: on models this small, intra-op threads only add
  // synchronization (2 threads ran the diabetes MLP ~5x slower on a busy 2-core machine)
  const rt = await Runtime.start({ threads: positiveInt('LIAISON_THREADS', 1) });
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  const runs = new Map<Method, Run[]>(METHODS.map((m) => [m, []]));
  try {
    const [train, test] = await diabetes(rt);
    console.log(`data: scikit-learn diabetes, ${train.size} rows to train on (full-batch), ${test.size} held out; features standardized, y standardized`);
    console.log(`model: MLP ${SIZES.join('–')} (ReLU); η = ${LR} for all, β = ${BETA} for heavy ball and Nesterov; ${SEEDS} seed${SEEDS === 1 ? '' : 's'} × ${ITERS} iterations; target training loss ${TARGET}`);
    for (let seed = 0; seed < SEEDS; seed++) {
      const ts = performance.now();
      let start = NaN; // the training loss of this seed's initial weights, the same for every method
      for (const method of METHODS) {
        const model = await Model.build(rt, { kind: 'mlp', sizes: SIZES }, { seed });
        const heldOut = { x: [0], y: [(await evaluate(model, test, { loss: 'mse' })).loss] };
        const { losses, trainer } = await lossCurve({
          model, optimizer: optimizer(method), data: train, iters: ITERS, chunk: EVAL_EVERY,
          afterChunk: async (done) => { heldOut.x.push(done); heldOut.y.push((await evaluate(model, test, { loss: 'mse' })).loss); },
        });
        start = losses[0];
        const finalTrain = (await trainer.evaluate(train)).loss;
        runs.get(method)!.push({ losses, heldOut, finalTrain, finalHeldOut: heldOut.y.at(-1)! });
        trainer.free();
        model.free();
      }
      console.log(`seed ${seed} (start: train ${fmt(start)}, held-out ${fmt(runs.get('gd')![seed].heldOut.y[0])}): ` + METHODS.map((m) => {
        const r = runs.get(m)![seed];
        const k = itersTo(r.losses, TARGET);
        return `${m} ${k === null ? `not at ${TARGET}` : `${k} it.`}, train ${fmt(r.finalTrain)}, held-out ${fmt(r.finalHeldOut)}`;
      }).join('; ') + ` (${secs(ts)})`);
    }
  } finally {
    await rt.close();
  }
  report(runs);
  await plot(runs);
  console.log(`done in ${secs(t0)}`);
}

/** A loss to three decimals, or in e-notation once it is below 0.01 (momentum drives the training loss to ~1e-5). */
const fmt = (x: number) => (x >= 0.01 ? x.toFixed(3) : x.toExponential(1));
const range = (xs: number[]) => `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`;

/** The table: iterations to the target, final training and held-out loss, per method over seeds. */
function report(runs: Map<Method, Run[]>): void {
  const header = ['method', `iterations to train loss ${TARGET}: median (min–max)`, 'reached', 'speed-up over gd', `train loss after ${ITERS}`, `held-out loss after ${ITERS}`, 'best held-out loss'];
  const g = itersCell(runs.get('gd')!.map((r) => itersTo(r.losses, TARGET)), ITERS);
  const rows = METHODS.map((m) => {
    const rs = runs.get(m)!;
    const c = itersCell(rs.map((r) => itersTo(r.losses, TARGET)), ITERS);
    const speedup = m === 'gd' ? '' : !c.reached ? '—' : `${Number.isFinite(g.median) ? '' : '> '}${((Number.isFinite(g.median) ? g.median : ITERS) / c.median).toFixed(1)}×`;
    return [m, c.text, `${c.reached}/${SEEDS}`, speedup, range(rs.map((r) => r.finalTrain)), range(rs.map((r) => r.finalHeldOut)), range(rs.map((r) => Math.min(...r.heldOut.y)))];
  });
  console.log(`\nMLP ${SIZES.join('–')} on diabetes, full-batch, η = ${LR}, β = ${BETA}, ${SEEDS} seeds (losses: median (min–max)):\n`);
  console.log(textTable(header, rows));
  mkdirSync(OUT, { recursive: true });
  const md = join(OUT, 'nesterov-diabetes.md');
  writeFileSync(md, `# Deep ReLU MLP on diabetes: gd, heavy ball, Nesterov\n\nMLP ${SIZES.join('–')}, full-batch MSE on standardized targets, ` +
    `η = ${LR} for all, β = ${BETA} for heavy ball and Nesterov, ${SEEDS} seeds, ${ITERS} iterations; losses as median (min–max) over seeds.\n\n${markdownTable(header, rows)}\n`);
  console.log(`\ntable: ${md}`);
}

/** Two panels: training loss per iteration and held-out loss, for each method's median seed (by final training loss). */
async function plot(runs: Map<Method, Run[]>): Promise<void> {
  const series: Series[] = [];
  for (const m of METHODS) {
    const rs = runs.get(m)!;
    const order = rs.map((r, i) => [r.finalTrain, i] as const).sort((a, b) => a[0] - b[0]);
    const r = rs[order[(order.length - 1) >> 1][1]];
    const style = m === 'gd' ? ':' : m === 'heavy-ball' ? '--' : '-';
    series.push({ label: m, y: r.losses, panel: 0, style });
    series.push({ label: m, ...r.heldOut, panel: 1, style: `o${style}` });
  }
  const path = join(OUT, 'nesterov-diabetes.png');
  await plotLines({
    path, series, logy: true, xlabel: 'iteration (full-batch step)', ylabel: 'MSE (standardized y, log scale)',
    panels: ['training loss', 'held-out loss'],
  }).then(() => console.log(`loss curves: ${path}`), (e: unknown) => console.log(`loss curves: not drawn (${(e as Error).message})`));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
