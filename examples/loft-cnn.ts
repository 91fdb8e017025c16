/**
 * LoFT on the digits CNN: filter-wise partitioned pretraining, the filter distance per layer
 * per round and the round where it says tickets have emerged, then the ticket found early
 * against the one found after full pretraining (and, as the control, one cut from the
 * random initialization), each pruned to the same sparsity, shrunk and fine-tuned.
 *
 *     npx tsx examples/loft-cnn.ts                      # examples/out/loft-cnn.{png,md}
 *     npx tsx examples/loft-cnn.ts --out runs
 *     LIAISON_LOFT_SEEDS=1 LIAISON_LOFT_ROUNDS=20 npx tsx examples/loft-cnn.ts   # quicker
 *
 * Knobs: LIAISON_LOFT_ROUNDS (pretraining rounds, default 60), LIAISON_LOFT_SEEDS (3),
 * LIAISON_LOFT_WORKERS (K, 4), LIAISON_LOFT_LOCAL_STEPS (T, 10), LIAISON_LOFT_EPOCHS
 * (fine-tuning epochs, 4), LIAISON_LOFT_PATIENCE, LIAISON_LOFT_THRESHOLD and
 * LIAISON_LOFT_WARMUP (the stop rule: 3 rounds below 0.1, counted after the first 10).
 * Compute is counted in multiply–adds (MACs): a training sample costs 3 × its forward's
 * (sdk/families/pruners/loft-rounds.ts). Accuracies are mean (min–max) over the seeds.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Runtime } from '../bridge/index.js';
import { heavyBall, loft } from '../plugins/index.js';
import type { LoftRound } from '../sdk/families/pruners/loft-rounds.js';
import { type CNNSpec, Dataset, evaluate, flopsOf, Model, plotLines, Trainer } from '../sdk/index.js';
import { outDir, positiveInt, positiveNumbers, secs } from './env.js';
import { markdownTable, textTable } from './tables.js';

const ROUNDS = positiveInt('LIAISON_LOFT_ROUNDS', 60);
const WORKERS = positiveInt('LIAISON_LOFT_WORKERS', 4);
const LOCAL_STEPS = positiveInt('LIAISON_LOFT_LOCAL_STEPS', 10);
const EPOCHS = positiveInt('LIAISON_LOFT_EPOCHS', 4);
const PATIENCE = positiveInt('LIAISON_LOFT_PATIENCE', 3);
const [THRESHOLD] = positiveNumbers('LIAISON_LOFT_THRESHOLD', [0.1]);
const WARMUP = positiveInt('LIAISON_LOFT_WARMUP', 10);
const SEEDS = positiveInt('LIAISON_LOFT_SEEDS', 3);
const SPARSITY = 0.5;
const SPEC: CNNSpec = { kind: 'cnn', inChannels: 1, image: [8, 8], channels: [32, 64], hidden: 128, classes: 10 };

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const mega = (x: number) => (x / 1e6).toFixed(1);
const kb = (x: number) => (x / 1024).toFixed(1);
const numel = (m: Model) => m.params.reduce((a, p) => a + p.numel, 0);

type Kind = 'control' | 'early' | 'full';
/** One ticket of one seed: where it was cut, held-out accuracies (dense source, pruned, fine-tuned), its size. */
interface Ticket { rounds: number; dense: number; pruned: number; tuned: number; params: number; macs: number }

async function main(): Promise<void> {
  const dir = outDir(process.argv.slice(2));
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const rt = await Runtime.start();
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  const made: { free(): void }[] = [];
  try {
    const digits = await Dataset.builtin(rt, 'digits');
    const [train, test] = digits.split(0.2, 0);
    made.push(digits, train, test);
    const make = (seed: number) => loft({ sparsity: SPARSITY, workers: WORKERS, localSteps: LOCAL_STEPS, pretrainRounds: ROUNDS, patience: PATIENCE, threshold: THRESHOLD, warmupRounds: WARMUP, seed });
    const { threshold, batchSize, lr } = make(0).config;
    const probe = await Model.build(rt, SPEC, { seed: 0 });
    const [P, denseMacs] = [numel(probe), (await flopsOf(probe))!];
    probe.free();
    console.log(`data: ${train.size} digits to train on, ${test.size} held out; CNN channels [32, 64], fc 128: ${P.toLocaleString('en-US')} parameters, ${denseMacs.toLocaleString('en-US')} MACs per sample`);
    console.log(`LoFT: K = ${WORKERS} workers, T = ${LOCAL_STEPS} local steps of ${batchSize} rows (lr ${lr}), ${ROUNDS} rounds, ${SEEDS} seed${SEEDS === 1 ? '' : 's'}; tickets emerge when every layer's distance stays below ${threshold} for ${PATIENCE} rounds (counted after round ${WARMUP})`);

    // One seed: pretraining (the model copied at the round the stop rule fires: the early
    // ticket's source), then each source pruned to the same sparsity, shrunk, fine-tuned.
    const runSeed = async (seed: number) => {
      const pruner = make(seed);
      const model = await Model.build(rt, SPEC, { seed });
      const init = await Model.build(rt, SPEC, { seed }); // the control: a ticket cut before any training
      made.push(model, init);
      let early: Model | null = null;
      const rounds: LoftRound[] = [];
      const t1 = performance.now();
      const report = await pruner.pretrain(model, train, {
        onRound: async (r) => {
          rounds.push(r);
          const fired = r.settled === PATIENCE && !early;
          if (seed === 0 || fired) console.log(`seed ${seed} round ${String(r.round).padStart(3)}  loss ${r.loss.toFixed(4)}  distance ${Object.entries(r.distance).map(([g, v]) => `${g} ${v.toFixed(4)}`).join('  ')}${fired ? '  <- tickets have emerged' : ''}`);
          if (fired) {
            early = await Model.build(rt, SPEC);
            made.push(early);
            const state = model.state();
            early.loadState(state);
            for (const t of Object.values(state)) t.free();
          }
        },
      });
      console.log(`seed ${seed}: ${ROUNDS} rounds in ${secs(t1)}; ${report.ticketRound === null ? 'the stop rule did not fire' : `tickets emerged at round ${report.ticketRound}`}`);
      const sources: [Kind, Model | null, number | null][] = [['control', init, 0], ['early', early, report.ticketRound], ['full', model, ROUNDS]];
      const out: Partial<Record<Kind, Ticket>> = {};
      for (const [kind, source, at] of sources) {
        if (!source || at === null) continue;
        const dense = await evaluate(source, test, { loss: 'cross_entropy' });
        const small = await pruner.shrink(source);
        made.push(small);
        const pruned = await evaluate(small, test, { loss: 'cross_entropy' });
        const trainer = new Trainer({ model: small, optimizer: heavyBall({ lr: 0.05 }), epochs: EPOCHS, batchSize: 32, loss: 'cross_entropy', progress: 'none', seed });
        await trainer.fit(train);
        const tuned = await evaluate(small, test, { loss: 'cross_entropy' });
        trainer.free();
        out[kind] = { rounds: at, dense: dense.accuracy!, pruned: pruned.accuracy!, tuned: tuned.accuracy!, params: numel(small), macs: (await flopsOf(small))! };
      }
      return { rounds, report, tickets: out };
    };
    const runs = [];
    for (let seed = 0; seed < SEEDS; seed++) runs.push(await runSeed(seed));

    // The tickets over seeds: accuracies as mean (min–max); compute as the mean.
    const spread = (xs: number[]) => (xs.length === 1 ? pct(xs[0]) : `${pct(xs.reduce((a, b) => a + b, 0) / xs.length)} (${pct(Math.min(...xs))}–${pct(Math.max(...xs))})`);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const names: Record<Kind, string> = { control: 'random init (control)', early: 'LoFT early (stop rule)', full: 'LoFT full' };
    const { report } = runs[0];
    const rows: string[][] = [];
    for (const kind of ['control', 'early', 'full'] as const) {
      const ts = runs.map((r) => r.tickets[kind]);
      const got = ts.filter((t): t is Ticket => t !== undefined);
      if (!got.length) continue;
      rows.push([
        names[kind], ts.map((t) => (t ? String(t.rounds) : '—')).join(', '), spread(got.map((t) => t.dense)), spread(got.map((t) => t.pruned)), spread(got.map((t) => t.tuned)),
        `${got[0].params.toLocaleString('en-US')} (${pct(got[0].params / P)})`, `${got[0].macs.toLocaleString('en-US')} (${pct(got[0].macs / denseMacs)})`,
        mega(mean(got.map((t) => report.macsPerRound.loft * t.rounds))), mega(3 * got[0].macs * train.size * EPOCHS),
      ]);
    }
    const header = ['ticket', 'pretraining rounds', 'dense acc.', 'pruned acc.', `acc. after ${EPOCHS} epochs`, 'params', 'MACs/sample', 'pretraining MMACs', 'fine-tuning MMACs'];

    // Bytes per round: LoFT's workers against data-parallel training of the whole CNN on the same rows.
    const { rounds } = runs[0];
    const loftBytes = rounds[0].bytes;
    const dp = report.dataParallelBytesPerRound;
    const bytesHeader = ['training', 'KiB up per round', 'KiB down per round', 'vs data-parallel', 'MMACs per round'];
    const bytesRows = [
      [`LoFT (K = ${WORKERS}, T = ${LOCAL_STEPS})`, kb(loftBytes.up), kb(loftBytes.down), `${((loftBytes.up + loftBytes.down) / (dp.up + dp.down)).toFixed(4)}x`, mega(report.macsPerRound.loft)],
      [`data-parallel (K = ${WORKERS}, ring all-reduce × ${LOCAL_STEPS} steps)`, kb(dp.up), kb(dp.down), '1x', mega(report.macsPerRound.dataParallel)],
    ];
    const ticket = report.ticketRound;
    const groups = Object.keys(rounds[0].distance);
    const distHeader = ['round', 'train loss', ...groups.map((g) => `distance ${g}`), 'settled'];
    const distRows = rounds.map((r) => [String(r.round), r.loss.toFixed(4), ...groups.map((g) => r.distance[g].toFixed(4)), `${r.settled}`]);

    console.log(`\n${textTable(header, rows)}\n\n${textTable(bytesHeader, bytesRows)}`);
    const md = [
      `LoFT on the digits CNN (channels [32, 64], fc 128), K = ${WORKERS}, T = ${LOCAL_STEPS}, ${ROUNDS} rounds, sparsity ${SPARSITY} of the units of every layer, fine-tuned ${EPOCHS} epochs, ${SEEDS} seed${SEEDS === 1 ? '' : 's'} (accuracy: mean (min–max)); the stop rule: every layer below ${threshold} for ${PATIENCE} rounds, counted after round ${WARMUP}. Per-round distances: seed 0 (tickets at round ${ticket ?? 'none'}).`,
      '', markdownTable(header, rows), '', markdownTable(bytesHeader, bytesRows), '', markdownTable(distHeader, distRows), '',
    ].join('\n');
    writeFileSync(join(dir, 'loft-cnn.md'), md);
    const x = rounds.map((r) => r.round);
    await plotLines({
      path: join(dir, 'loft-cnn.png'),
      title: `LoFT filter distance (K = ${WORKERS}, T = ${LOCAL_STEPS}): tickets at round ${ticket ?? '—'}`,
      xlabel: 'round',
      ylabel: 'mean relative change of the units (log scale)',
      logy: true,
      series: [
        ...groups.map((g) => ({ label: g, x, y: rounds.map((r) => r.distance[g]) })),
        { label: `threshold ${threshold}`, x, y: x.map(() => threshold), style: '--' },
        ...(ticket === null ? [] : [{ label: `round ${ticket}`, x: [ticket, ticket], y: [Math.min(...rounds.flatMap((r) => Object.values(r.distance))), Math.max(...rounds.flatMap((r) => Object.values(r.distance)))], style: ':' }]),
      ],
    });
    console.log(`\ntable: ${join(dir, 'loft-cnn.md')}\nplot: ${join(dir, 'loft-cnn.png')}`);
  } finally {
    for (const m of made.reverse()) m.free();
    await rt.close();
  }
  console.log(`done in ${secs(t0)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
