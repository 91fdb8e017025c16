/**
 * Lottery tickets on the digits: Frankle & Carbin's experiment with the MLP 64-300-100-10.
 *
 * Iterative magnitude pruning (the `imp` plugin) trains `LIAISON_LTH_EPOCHS` epochs at each
 * level, prunes 20% of the weights still kept (one global threshold over the three weight
 * matrices), rewinds the survivors to their initial values and trains again: ~20 rounds
 * take the network from 100% of its weights to ~1%. Per seed, the ticket runs first; then
 * Frankle & Carbin's two controls follow it (`followTicket`) with the same schedule: at
 * each level, the ticket's own masks of that level on a fresh re-initialization (a seeded
 * permutation of each tensor's initial values), and random masks with the ticket's
 * per-layer counts, rewound. Every arm runs over several seeds (model init, shuffling and
 * the controls' draws).
 *
 *     npx tsx examples/lottery-tickets.ts                 # ~2.5 min on 2 cores
 *     LIAISON_LTH_SEEDS=1 LIAISON_LTH_ROUNDS=3 LIAISON_LTH_EPOCHS=1 npx tsx examples/lottery-tickets.ts
 *
 * It prints a markdown table (rows: % of weights left; columns: held-out accuracy of each
 * arm, mean ± std over seeds, at the end of each level), with more than one epoch a level
 * a second one after each level's first epoch (how fast each arm learns: the eval set is
 * scored after every epoch), the per-layer sparsity of the last ticket (`report()`), writes `lottery-tickets.png` (accuracy against the
 * % of weights left, on a log axis) and the last ticket's masks (`lottery-ticket-masks.safetensors`,
 * u8) to the out folder (`--out DIR`, default examples/out). Knobs: LIAISON_LTH_SEEDS (3),
 * LIAISON_LTH_ROUNDS (20), LIAISON_LTH_EPOCHS (epochs a level, 15), LIAISON_THREADS (1).
 * Results: docs/pruning.md.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Runtime } from '../bridge/index.js';
import { adam, imp } from '../plugins/index.js';
import type { Imp } from '../plugins/pruners/imp.js';
import { Dataset, Model, plotLines, Trainer } from '../sdk/index.js';
import { outDir, positiveInt, secs } from './env.js';
import { markdownTable } from './tables.js';

const SEEDS = positiveInt('LIAISON_LTH_SEEDS', 3);
const ROUNDS = positiveInt('LIAISON_LTH_ROUNDS', 20);
const EPOCHS = positiveInt('LIAISON_LTH_EPOCHS', 15);
const RATE = 0.2;
const BATCH = 60; // the paper's LeNet-300-100 batch
const LR = 1.2e-3; // and its Adam rate
const ARMS = [
  { control: 'none', label: 'IMP, rewound (ticket)' },
  { control: 'reinit', label: "ticket's masks, re-init" },
  { control: 'random', label: 'random masks, rewound' },
] as const;

/** Mean and sample standard deviation. */
function meanStd(xs: number[]): [number, number] {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const v = xs.length > 1 ? xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1) : 0;
  return [m, Math.sqrt(v)];
}

async function main(): Promise<void> {
  const out = outDir(process.argv.slice(2));
  mkdirSync(out, { recursive: true });
  const t0 = performance.now();
  const rt = await Runtime.start({ threads: positiveInt('LIAISON_THREADS', 1) });
  try {
    const digits = await Dataset.builtin(rt, 'digits');
    const [train, test] = digits.split(0.2, 0);
    console.log(`digits: ${train.size} to train on, ${test.size} held out; MLP 64-300-100-10, adam lr ${LR}, batch ${BATCH}`);
    console.log(`${ROUNDS} rounds of ${RATE * 100}% (down to ${(100 * (1 - RATE) ** ROUNDS).toFixed(2)}% of the weights), ${EPOCHS} epoch${EPOCHS === 1 ? '' : 's'} a level, ${SEEDS} seed${SEEDS === 1 ? '' : 's'}`);
    // acc[arm][level][seed], left[level]: % of the pruned weights left
    const acc = ARMS.map(() => Array.from({ length: ROUNDS + 1 }, () => [] as number[]));
    const early = ARMS.map(() => Array.from({ length: ROUNDS + 1 }, () => [] as number[])); // after each level's first epoch
    let stepsPerEpoch = 0;
    const left: number[] = [];
    let lastTicket = '';
    for (let seed = 0; seed < SEEDS; seed++) {
      let ticket: Imp | null = null; // the first arm's pruner, which the controls follow; freed after them
      try {
        for (const [a, arm] of ARMS.entries()) {
          const t1 = performance.now();
          const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 300, 100, 10] }, { seed });
          const pruner = imp({ rate: RATE, rounds: ROUNDS, atEpoch: EPOCHS, every: EPOCHS, control: arm.control, seed }) as Imp;
          if (ticket) pruner.followTicket(ticket);
          else ticket = pruner;
          const trainer = new Trainer({ model, optimizer: adam({ lr: LR }), plugins: [pruner], epochs: (ROUNDS + 1) * EPOCHS, batchSize: BATCH, seed, loss: 'cross_entropy', progress: 'none', logEvery: 1_000_000 });
          pruner.onLevelEnd(async () => ({ accuracy: (await trainer.evaluate(test)).accuracy! }));
          try {
            // scored after every epoch; level L's first epoch is epoch L·EPOCHS (from 0), a round boundary only when EPOCHS is 1
            const epochs = await trainer.fit(train, EPOCHS > 1 ? { eval: test } : {});
            stepsPerEpoch = epochs[0].step;
            if (EPOCHS > 1) for (let l = 0; l <= ROUNDS; l++) early[a][l].push(epochs[l * EPOCHS].accuracy!);
            for (const l of pruner.levels) {
              acc[a][l.level].push(l.metrics.accuracy);
              left[l.level] = 100 * (1 - l.sparsity);
            }
            const end = pruner.levels.at(-1)!;
            console.log(`seed ${seed}, ${arm.label}: ${(100 * end.metrics.accuracy).toFixed(1)}% at ${(100 * (1 - end.sparsity)).toFixed(2)}% of the weights (${secs(t1)})`);
            if (arm.control === 'none' && seed === SEEDS - 1) {
              const r = await pruner.report();
              lastTicket = markdownTable(['weight', 'entries', 'pruned', 'sparsity'], [
                ...r.layers.map((l) => [l.name, String(l.numel), String(l.pruned), `${(100 * l.sparsity).toFixed(2)}%`]),
                ['all', String(r.numel), String(r.pruned), `${(100 * r.sparsity).toFixed(2)}%`],
              ]);
              await pruner.exportMasks(join(out, 'lottery-ticket-masks.safetensors'), { overwrite: true });
            }
          } finally {
            trainer.free();
            if (pruner !== ticket) pruner.free();
            model.free();
          }
        }
      } finally {
        ticket?.free();
      }
    }
    const fmt = (xs: number[]) => { const [m, s] = meanStd(xs); return `${(100 * m).toFixed(1)} ± ${(100 * s).toFixed(1)}`; };
    console.log(`\nheld-out accuracy (%) at the end of each level, mean ± std over ${SEEDS} seed${SEEDS === 1 ? '' : 's'}:\n`);
    console.log(markdownTable(['% of weights left', ...ARMS.map((a) => a.label)], left.map((p, lv) => [p.toFixed(2), ...acc.map((arm) => fmt(arm[lv]))])));
    if (EPOCHS > 1) {
      console.log(`\nheld-out accuracy (%) after the first epoch (${stepsPerEpoch} steps) of each level, mean ± std over ${SEEDS} seed${SEEDS === 1 ? '' : 's'}:\n`);
      console.log(markdownTable(['% of weights left', ...ARMS.map((a) => a.label)], left.map((p, lv) => [p.toFixed(2), ...early.map((arm) => fmt(arm[lv]))])));
    }
    console.log(`\nthe last ticket (seed ${SEEDS - 1}), sparsity per layer from its weights:\n\n${lastTicket}`);
    console.log(`\nmasks: ${join(out, 'lottery-ticket-masks.safetensors')}`);
    const png = join(out, 'lottery-tickets.png');
    await plotLines({
      path: png,
      title: `lottery tickets, MLP 64-300-100-10 on the digits\nIMP ${RATE * 100}% a round, ${EPOCHS} epoch${EPOCHS === 1 ? '' : 's'} a level, ${SEEDS} seed${SEEDS === 1 ? '' : 's'}`,
      xlabel: '% of weights left (log scale)',
      logx: true,
      invertx: true,
      ylabel: 'held-out accuracy (mean over seeds)',
      series: ARMS.map((arm, a) => ({ label: arm.label, style: 'o-', x: left, y: acc[a].map((xs) => meanStd(xs)[0]) })),
    }).then(() => console.log(`plot: ${png}`), (e: unknown) => console.log(`plot: not drawn (${(e as Error).message})`));
  } finally {
    await rt.close();
  }
  console.log(`${secs(t0)} in all`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
