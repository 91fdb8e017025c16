/**
 * Strong lottery tickets on the digits: held-out accuracy against the fraction of weights
 * kept, for edge-popup on frozen random weights (ε = 0) and for its ε-perturbed variant
 * (the weights also train, each kept within ε·std(W₀) of its init), beside the same
 * network trained densely and the random network untrained.
 *
 * The network is an MLP 64-300-100-10 without biases (the paper's networks have none), its
 * weights the paper's scaled signed Kaiming constant (`weightInit: 'signed-kaiming'`: the
 * sign of the built weight times √(2/fan_in)/√keep). Every layer is scored; scores train by
 * heavy-ball SGD (lr 0.1, β 0.9, cosine to 0), batch 64, on 80% of the digits; the
 * accuracy is on the 20% held out, after the last epoch, over several seeds (the seed fixes
 * the weights, the scores and the batch order).
 *
 *     npx tsx examples/strong-tickets.ts                  # table + examples/out/strong-tickets.png
 *     npx tsx examples/strong-tickets.ts --out runs
 *     LIAISON_SLT_SEEDS=1 LIAISON_SLT_EPOCHS=2 LIAISON_SLT_KEEP=0.5 LIAISON_SLT_EPS=1 npx tsx examples/strong-tickets.ts
 *
 * Knobs: LIAISON_SLT_SEEDS (3), LIAISON_SLT_EPOCHS (15), LIAISON_SLT_KEEP (fractions kept,
 * 0.02,0.05,0.1,0.3,0.5,0.7,0.9), LIAISON_SLT_EPS (ε of the perturbed runs besides ε = 0, 0.1,0.3,1),
 * LIAISON_SLT_NORM (linf or l2), LIAISON_THREADS (torch threads, 1).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LiaisonError, Runtime } from '../bridge/index.js';
import { heavyBall } from '../plugins/momentum/heavy-ball.js';
import { edgePopup } from '../plugins/pruners/edge-popup.js';
import { Dataset, Model, plotLines, Trainer } from '../sdk/index.js';
import { outDir, positiveInt, positiveNumbers, secs } from './env.js';
import { markdownTable, textTable } from './tables.js';

const SEEDS = positiveInt('LIAISON_SLT_SEEDS', 3);
const EPOCHS = positiveInt('LIAISON_SLT_EPOCHS', 15);
const KEEP = positiveNumbers('LIAISON_SLT_KEEP', [0.02, 0.05, 0.1, 0.3, 0.5, 0.7, 0.9]);
const EPS = [0, ...positiveNumbers('LIAISON_SLT_EPS', [0.1, 0.3, 1])];
const NORM = (process.env.LIAISON_SLT_NORM || 'linf') as 'linf' | 'l2';
const SIZES = [64, 300, 100, 10];
const BATCH = 64, LR = 0.1, MOMENTUM = 0.9;

if (KEEP.some((k) => k > 1)) throw new LiaisonError('E_ARG', `LIAISON_SLT_KEEP must be fractions in (0, 1], got ${KEEP.join(',')}`);
if (NORM !== 'linf' && NORM !== 'l2') throw new LiaisonError('E_ARG', `LIAISON_SLT_NORM must be linf or l2, got ${JSON.stringify(NORM)}`);

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const sd = (xs: number[]) => (xs.length < 2 ? 0 : Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)));
const cell = (xs: number[]) => `${(100 * mean(xs)).toFixed(1)}${xs.length > 1 ? ` ± ${(100 * sd(xs)).toFixed(1)}` : ''}`;

async function main(): Promise<void> {
  const out = outDir(process.argv.slice(2));
  const t0 = performance.now();
  // one intra-op thread by default: at this size more only contend for the cores
  const rt = await Runtime.start({ threads: positiveInt('LIAISON_THREADS', 1) });
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  try {
    const [train, test] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const steps = EPOCHS * train.countBatches(BATCH);
    const optimizer = () => heavyBall({ lr: LR, momentum: MOMENTUM, schedule: 'cosine', decaySteps: steps });
    console.log(`MLP ${SIZES.join('-')} (no biases) on the digits (${train.size} train, ${test.size} held out); ${SEEDS} seed${SEEDS > 1 ? 's' : ''} × ${KEEP.length} fractions kept × ε ∈ {${EPS.join(', ')}} (${NORM}), ${EPOCHS} epochs each`);

    /** Held-out accuracy after training `model` (with `plugins`) for EPOCHS epochs. */
    const fitted = async (model: Model, seed: number, plugins: ReturnType<typeof edgePopup>[]) => {
      const trainer = new Trainer({ model, optimizer: optimizer(), plugins, batchSize: BATCH, seed, progress: 'none', logEvery: 1000 });
      try {
        await trainer.fit(train, { epochs: EPOCHS });
        return (await trainer.evaluate(test)).accuracy ?? NaN;
      } finally {
        trainer.free();
        for (const p of plugins) p.free();
      }
    };
    const build = (seed: number) => Model.build(rt, { kind: 'mlp', sizes: SIZES, bias: false }, { seed });

    const acc = new Map<string, number[]>(); // `${keep}/${eps}` → one accuracy per seed
    const dense: number[] = [], random: number[] = [];
    for (let seed = 0; seed < SEEDS; seed++) {
      const t1 = performance.now();
      await rt.scope(async () => {
        let model = await build(seed);
        dense.push(await fitted(model, seed, []));
        model.free();
        // the random network the tickets are drawn from: sign(W) up to a per-layer scale,
        // which a bias-free ReLU network's argmax does not see
        model = await build(seed);
        for (const p of model.params) model.param(p.name).copy_(model.param(p.name).sign());
        const untrained = new Trainer({ model, optimizer: optimizer(), progress: 'none' });
        random.push((await untrained.evaluate(test)).accuracy ?? NaN);
        untrained.free();
        model.free();
        for (const keep of KEEP) {
          for (const epsilon of EPS) {
            model = await build(seed);
            const a = await fitted(model, seed, [edgePopup({ sparsity: 1 - keep, epsilon, norm: NORM, weightInit: 'signed-kaiming', seed })]);
            acc.set(`${keep}/${epsilon}`, [...(acc.get(`${keep}/${epsilon}`) ?? []), a]);
            model.free();
          }
        }
      });
      console.log(`seed ${seed}: dense ${(100 * dense[seed]).toFixed(1)}%, random ${(100 * random[seed]).toFixed(1)}%, ${KEEP.length * EPS.length} tickets in ${secs(t1)}`);
    }

    const header = ['weights kept', ...EPS.map((e) => (e === 0 ? 'edge-popup (ε = 0)' : `ε = ${e}`))];
    const rows = KEEP.map((k) => [`${Math.round(100 * k)}%`, ...EPS.map((e) => cell(acc.get(`${k}/${e}`)!))]);
    rows.push(['dense, trained', cell(dense), ...EPS.slice(1).map(() => '')], ['random, untrained', cell(random), ...EPS.slice(1).map(() => '')]);
    console.log(`\nheld-out accuracy (%), mean ± sd over ${SEEDS} seed${SEEDS > 1 ? 's' : ''}:\n`);
    console.log(textTable(header, rows));
    mkdirSync(out, { recursive: true });
    const note = `MLP ${SIZES.join('-')}, no biases, scaled signed Kaiming weights; ${EPOCHS} epochs, heavy ball lr ${LR} β ${MOMENTUM} cosine, batch ${BATCH}; ε in units of std(W₀): ${NORM === 'linf' ? 'each entry within ε·std(W₀) of its init (linf)' : 'each layer within ε·std(W₀)·√n of its init (l2)'}; ${SEEDS} seeds`;
    writeFileSync(join(out, 'strong-tickets.md'), `${markdownTable(header, rows)}\n\n${note}\n`);
    // the error on a log scale: the tickets' 2–5% and the random network's ~90% on one plot
    const xs = KEEP.map((k) => 100 * k);
    const err = (xs2: number[]) => 100 * (1 - mean(xs2));
    await plotLines({
      path: join(out, 'strong-tickets.png'),
      title: `Strong tickets in a random MLP ${SIZES.join('-')} (digits, ${SEEDS} seed${SEEDS > 1 ? 's' : ''})`,
      xlabel: '% of weights kept (per layer)',
      ylabel: 'held-out error (%, log scale)',
      logy: true,
      series: [
        ...EPS.map((e) => ({ label: e === 0 ? 'edge-popup (weights frozen)' : `ε = ${e} (${NORM})`, x: xs, y: KEEP.map((k) => err(acc.get(`${k}/${e}`)!)), style: 'o-' })),
        { label: 'dense, trained', x: xs, y: xs.map(() => err(dense)), style: 'k--' },
        { label: 'random, untrained', x: xs, y: xs.map(() => err(random)), style: 'k:' },
      ],
    });
    console.log(`\ntable: ${join(out, 'strong-tickets.md')}\nplot: ${join(out, 'strong-tickets.png')}\n${secs(t0)} in all`);
  } finally {
    await rt.close();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
