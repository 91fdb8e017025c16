/**
 * `npm run demo`: a TypeScript program trains a small CNN in a PyTorch runtime.
 *
 * Starts a local runtime (CUDA when present, else CPU), loads scikit-learn's handwritten
 * digits there (1,797 8×8 images, 10 classes), holds out a fifth of them, builds a small
 * CNN, and trains it with the Trainer and the `gd` optimizer plugin: every training step is
 * one program traced once from TypeScript and replayed by the runtime, so a step costs no
 * round trip of its own. It prints the held-out accuracy and writes the loss curve (train
 * loss per logged step, held-out loss per epoch) as a PNG. Nothing to start by hand; the
 * runtime stops when the program ends.
 *
 *     npm run demo                          # plot: examples/out/liaison-demo-loss.png
 *     npm run demo -- --out runs            # plot: runs/liaison-demo-loss.png
 *     LIAISON_DEMO_EPOCHS=3 npm run demo    # a quicker, less accurate run (default 15 epochs)
 *
 * On a terminal a progress bar shows the steps; elsewhere (a log, CI) one line per epoch.
 * The same program drives a runtime on another machine when given its endpoint and key:
 *
 *     LIAISON_ENDPOINT=tcp://gpu-box:5555 LIAISON_KEY=… npm run demo
 *     LIAISON_GROUP=2 npm run demo           # a group of 2 runtimes under torchrun, data-parallel
 *
 * (the data and the model then live on that machine; only the plot is drawn here).
 */
import { mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join, relative } from 'node:path';
import { outDir, positiveInt, secs, startRuntime } from './env.js';
import { gd } from '../plugins/index.js';
import { Dataset, Model, plotLines, Trainer } from '../sdk/index.js';

const EPOCHS = positiveInt('LIAISON_DEMO_EPOCHS', 15);
const BATCH = 16;
const LR = 0.1;
const LOG_EVERY = 10; // steps between the training-loss points of the plot
const PLOT = 'liaison-demo-loss.png';


/** A path as the user would type it: relative to the working folder when inside it. */
function shown(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : path;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

async function main(): Promise<void> {
  const plotPath = join(outDir(process.argv.slice(2)), PLOT);
  const tty = process.stderr.isTTY === true;
  const t0 = performance.now();

  // 1. A runtime: our own local one, a remote one given its endpoint (and LIAISON_KEY), or a
  //    group of runtimes (LIAISON_GROUP=N): the Trainer then trains data-parallel on it.
  const remote = process.env.LIAISON_ENDPOINT;
  const rt = await startRuntime();
  const group = rt.info.group;
  const where = group ? `group of ${group.worldSize} runtimes (${group.backend})` : remote ? `remote runtime at ${remote}` : `local runtime (pid ${rt.info.pid})`;
  console.log(`${where}: torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'}), ready in ${secs(t0)}`);
  try {
    // 2. Data, loaded by the runtime (nothing is uploaded), and a seeded held-out split.
    const digits = await Dataset.builtin(rt, 'digits');
    const [train, test] = digits.split(0.2, 0);
    console.log(`data: scikit-learn digits, ${digits.size} 8×8 images in 10 classes: ${train.size} to train on, ${test.size} held out`);

    // 3. The model, built in the runtime from a typed spec.
    const model = await Model.build(rt, { kind: 'cnn', image: [8, 8], channels: [16, 32], hidden: 64, classes: 10 }, { seed: 0 });
    const total = model.params.reduce((n, p) => n + p.numel, 0);
    const layers = new Map<string, number>();
    for (const p of model.params) {
      const layer = p.name.slice(0, p.name.lastIndexOf('.'));
      layers.set(layer, (layers.get(layer) ?? 0) + p.numel);
    }
    console.log(`model: CNN (3×3 convs of 16 and 32 channels, fc 64, 10 classes), ${total.toLocaleString('en-US')} parameters: ${[...layers].map(([l, n]) => `${l} ${n.toLocaleString('en-US')}`).join(', ')}`);

    // 4. Training: the `gd` plugin's update is traced into the step program with the forward and backward.
    const trainer = new Trainer({ model, optimizer: gd({ lr: LR }), epochs: EPOCHS, batchSize: BATCH, logEvery: LOG_EVERY, progress: 'auto' });
    const trainLoss = { x: [] as number[], y: [] as number[] };
    const evalLoss = { x: [] as number[], y: [] as number[] };
    trainer.on('progress', (e) => { trainLoss.x.push(e.step); trainLoss.y.push(e.loss); });
    trainer.on('eval', (e) => { evalLoss.x.push(e.step); evalLoss.y.push(e.loss); });
    if (!tty) {
      const w = String(EPOCHS).length;
      trainer.on('epoch', (e) => console.log(`epoch ${String(e.epoch + 1).padStart(w)}/${EPOCHS}  train loss ${e.loss.toFixed(4)}  held-out loss ${e.evalLoss?.toFixed(4)}  accuracy ${pct(e.accuracy ?? NaN)}  (${e.seconds.toFixed(2)} s)`));
    }
    const before = await trainer.evaluate(test); // the untrained model: about chance (10%)
    evalLoss.x.push(0);
    evalLoss.y.push(before.loss);
    const steps = EPOCHS * train.countBatches(BATCH);
    console.log(`before training: held-out accuracy ${pct(before.accuracy ?? NaN)}, loss ${before.loss.toFixed(4)}`);
    console.log(`training: ${EPOCHS} epoch${EPOCHS === 1 ? '' : 's'} of ${train.countBatches(BATCH)} steps (batch ${BATCH}), gd lr ${LR}, ${steps} steps in all`);
    const t1 = performance.now();
    await trainer.fit(train, { eval: test });
    const trainTime = secs(t1);

    // 5. Held-out accuracy, and the loss curve.
    const { accuracy = NaN, loss } = await trainer.evaluate(test);
    const right = Math.round(accuracy * test.size);
    console.log(`held-out accuracy: ${pct(accuracy)} (${right} of ${test.size} digits right, loss ${loss.toFixed(4)}) after ${steps} steps in ${trainTime}`);
    mkdirSync(dirname(plotPath), { recursive: true });
    const drawn = await plotLines({
      path: plotPath,
      title: `CNN on scikit-learn digits: ${pct(accuracy)} held-out accuracy`,
      xlabel: 'training step',
      ylabel: 'cross-entropy loss (log scale)',
      logy: true,
      series: [
        { label: `train (mean over ${LOG_EVERY} steps)`, ...trainLoss },
        { label: 'held out (start, each epoch)', style: 'o-', ...evalLoss },
      ],
    }).then(() => true, (e: unknown) => {
      // the training went well; a Python without matplotlib (LIAISON_PYTHON) only costs the figure
      console.log(`loss curve: not drawn (${(e as Error).message})`);
      return false;
    });
    if (drawn) console.log(`loss curve: ${shown(plotPath)}`);
  } finally {
    await rt.close();
  }
  console.log(remote ? `session closed (the remote runtime keeps running); ${secs(t0)} in all.` : `runtime stopped; ${secs(t0)} in all.`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
