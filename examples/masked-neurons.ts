/**
 * Randomly masked neurons and independent subnetwork training on the digits: the paper's
 * "neighbourhood". Liao & Kyrillidis (TMLR 2022) prove that training S masked subnetworks
 * for T local steps each round and averaging them converges linearly to within an error
 * region of the solution, a region that grows with T and shrinks with S. Here the MLP
 * 64-300-100-10 (the issue's; every hidden neuron masked) is trained on 1,437 digits
 * (a fifth held out) by the `masked-neurons` plugin, full-batch GD on the paper's squared
 * loss, for S = 1, 2, 4 subnets and T = 1, 5, 20 local steps, with Bernoulli masks (ξ = 0.5:
 * dropout for S = 1, multi-sample dropout above) and with a partition (independent subnet
 * training, ξ = 1/S), against full training: plain GD on the dense network for the same
 * number of gradient steps. Every setting runs the same steps per subnet; the rounds are
 * steps / T.
 *
 * It prints a table (final training loss; the plateau, the mean loss over the last quarter
 * of the steps, and its ratio to full training's; held-out accuracy; bytes a round sends)
 * and the plateau ratio as T × S grids, and writes masked-neurons.png (training loss against
 * steps) and masked-neurons-accuracy.png (held-out accuracy) to the out folder.
 *
 *     npx tsx examples/masked-neurons.ts [--out DIR]
 *
 * Knobs: LIAISON_MN_STEPS (gradient steps per subnet, default 200), LIAISON_MN_SUBNETS
 * (1,2,4), LIAISON_MN_LOCAL (1,5,20), LIAISON_MN_HIDDEN (300,100; `300` is the paper's
 * one-hidden-layer shape), LIAISON_MN_LR (0.2), LIAISON_MN_KEEP (ξ of the Bernoulli masks,
 * 0.5), LIAISON_THREADS (1). Results: docs/pruning.md, section masked-neurons.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { LiaisonError, Runtime } from '../bridge/index.js';
import { maskedNeurons, type MaskedNeurons } from '../plugins/pruners/masked-neurons.js';
import { Dataset, type MaskedRound, Model, plotLines, type Series } from '../sdk/index.js';
import { outDir, positiveInt, positiveNumbers, secs } from './env.js';
import { markdownTable } from './tables.js';

const STEPS = positiveInt('LIAISON_MN_STEPS', 200);
const SUBNETS = positiveNumbers('LIAISON_MN_SUBNETS', [1, 2, 4]);
const LOCAL = positiveNumbers('LIAISON_MN_LOCAL', [1, 5, 20]);
const HIDDEN = positiveNumbers('LIAISON_MN_HIDDEN', [300, 100]);
// 0.2: the partition into 4 subnets diverges at 0.5 (its 1/ξ scaling compounds over the two hidden layers)
const [LR] = positiveNumbers('LIAISON_MN_LR', [0.2]);
const [KEEP] = positiveNumbers('LIAISON_MN_KEEP', [0.5]);
const SEED = 0;

interface Run { label: string; split: 'full' | 'bernoulli' | 'partition'; S: number; T: number; rounds: number; loss: number[]; accuracy: number[]; bytes: number; seconds: number }

/** Mean of the last quarter of the per-round losses: where the run has settled. */
const plateau = (r: Run) => { const k = Math.max(1, Math.ceil(r.loss.length / 4)); return r.loss.slice(-k).reduce((a, b) => a + b, 0) / k; };
const ratio = (r: Run, full: Run) => { const q = plateau(r) / plateau(full); return Number.isFinite(q) ? `${q.toFixed(2)}×` : 'diverged'; };
const pct = (x: number) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'diverged');
const fmt = (x: number) => (!Number.isFinite(x) ? 'diverged' : x >= 0.01 ? x.toFixed(4) : x.toExponential(2));

async function main(): Promise<void> {
  const out = outDir(process.argv.slice(2));
  const t0 = performance.now();
  // one torch thread: on a model this small intra-op threads only add synchronization
  const rt = await Runtime.start({ threads: positiveInt('LIAISON_THREADS', 1) });
  try {
    const digits = await Dataset.builtin(rt, 'digits');
    const [train, test] = digits.split(0.2, SEED);
    const sizes = [64, ...HIDDEN, 10];
    console.log(`digits: ${train.size} rows to train on, ${test.size} held out; MLP ${sizes.join('-')}; full-batch GD, lr ${LR}, loss ½‖f(x) − onehot(y)‖² per row; ${STEPS} gradient steps per subnet in every setting`);

    const runs: Run[] = [];
    const one = async (split: Run['split'], S: number, T: number): Promise<void> => {
      const model = await Model.build(rt, { kind: 'mlp', sizes }, { seed: SEED }); // the same initial weights for every setting
      const mn = maskedNeurons(split === 'full'
        ? { subnets: 1, keep: 1, localSteps: T, lr: LR }
        : { subnets: S, split, keep: KEEP, localSteps: T, lr: LR, seed: SEED }) as MaskedNeurons;
      const rounds = Math.max(1, Math.round(STEPS / T));
      let bytes = NaN;
      const t1 = performance.now();
      const loss: number[] = [], accuracy: number[] = [];
      const onRound = (r: MaskedRound) => { bytes = r.bytes ? r.bytes.up + r.bytes.down : NaN; loss.push(r.loss); accuracy.push(r.accuracy ?? NaN); };
      const label = split === 'full' ? 'full training' : `${split} S=${S} T=${T}`;
      try {
        await mn.train(model, train, { rounds, eval: test, onRound });
      } catch (e) {
        // a setting whose steps diverge (lr too large for it) is a result too: the rows say 'diverged'
        if (!(e instanceof LiaisonError && e.code === 'E_NONFINITE')) throw e;
        console.log(`${label.padEnd(24)} diverged in round ${loss.length + 1} of ${rounds} (${secs(t1)})`);
        loss.push(NaN);
        accuracy.push(NaN);
      }
      runs.push({ label, split, S, T, rounds, loss, accuracy, bytes, seconds: (performance.now() - t1) / 1000 });
      if (Number.isFinite(loss[loss.length - 1])) console.log(`${label.padEnd(24)} ${rounds} rounds: loss ${fmt(loss[loss.length - 1])}, held-out accuracy ${pct(accuracy[accuracy.length - 1])} (${secs(t1)})`);
      model.free();
    };
    await one('full', 1, 1);
    for (const split of ['bernoulli', 'partition'] as const) {
      for (const T of LOCAL) for (const S of SUBNETS) if (!(split === 'partition' && S === 1)) await one(split, S, T); // a 1-way partition is full training
    }
    train.free(); test.free(); digits.free();

    const full = runs[0];
    const header = ['setting', 'split', 'S', 'T', 'rounds', 'final loss', 'plateau', 'plateau / full', 'held-out acc.', 'MB / round', 'time'];
    const rows = runs.map((r) => [r.label, r.split, String(r.S), String(r.T), String(r.rounds), fmt(r.loss[r.loss.length - 1]), fmt(plateau(r)),
      ratio(r, full), pct(r.accuracy[r.accuracy.length - 1]), (Number.isFinite(r.bytes) ? (r.bytes / 1e6).toFixed(2) : '—'), `${r.seconds.toFixed(1)} s`]);
    console.log(`\n${markdownTable(header, rows)}\n`);
    // the paper's two trends at a glance: the plateau over full training's, T down the rows, S across
    for (const split of ['bernoulli', 'partition'] as const) {
      const Ss = SUBNETS.filter((S) => !(split === 'partition' && S === 1));
      const grid = LOCAL.map((T) => [`T=${T}`, ...Ss.map((S) => { const r = runs.find((x) => x.split === split && x.S === S && x.T === T)!; return ratio(r, full); })]);
      console.log(`plateau / full training, ${split}${split === 'bernoulli' ? ` (ξ = ${KEEP})` : ' (ξ = 1/S)'}:\n\n${markdownTable(['', ...Ss.map((S) => `S=${S}`)], grid)}\n`);
    }

    mkdirSync(out, { recursive: true });
    const panels = ['Bernoulli masks', 'partition (IST)'];
    const series = (pick: (r: Run) => number[]): Series[] => runs.flatMap((r) => (r.split === 'full' ? [0, 1] : [r.split === 'bernoulli' ? 0 : 1]).map((panel) => ({
      // colour by S, dashes by T: the two trends read off as colour and line style
      // a diverged run's last point is NaN: plotted up to the round before
      label: r.label, panel, x: pick(r).map((_, i) => (i + 1) * r.T).filter((_, i) => Number.isFinite(pick(r)[i])), y: pick(r).filter(Number.isFinite),
      style: r.split === 'full' ? 'k-' : `C${SUBNETS.indexOf(r.S)}${['-', '--', ':', '-.'][LOCAL.indexOf(r.T) % 4]}`,
    })));
    const drawn = await Promise.all([
      plotLines({ path: join(out, 'masked-neurons.png'), panels, xlabel: 'gradient steps per subnet', ylabel: 'training loss (merged network, log scale)', logy: true, series: series((r) => r.loss) }),
      plotLines({ path: join(out, 'masked-neurons-accuracy.png'), panels, xlabel: 'gradient steps per subnet', ylabel: 'held-out accuracy', series: series((r) => r.accuracy) }),
    ]).then((p) => p.join(', '), (e: unknown) => `not drawn (${(e as Error).message})`);
    console.log(`plots: ${drawn}`);
  } finally {
    await rt.close();
  }
  console.log(`${secs(t0)} in all`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
