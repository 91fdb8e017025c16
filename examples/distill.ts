/**
 * Knowledge distillation into a pruned student, on the digits: a training loop `fit()`
 * cannot express (two models in one step, the teacher's soft targets), written on the
 * SDK's public loop parts (`TrainingLoop`, sdk/loop.ts) with the same plugins and the same
 * guarantees as the Trainer: a `magnitude` pruner and the `nesterov` optimizer on the
 * student only, its masks held after every step, its pruning rounds at epoch ends, its
 * state in the checkpoint.
 *
 * 1. The teacher: a CNN (convs of 16 and 32 channels, fc 64) trained with the Trainer.
 * 2. Per seed, two students, MLP 64-H-10 from the same initial weights, batch order,
 *    optimizer and pruner (90% of the weights pruned in three rounds, then fine-tuned):
 *    - labels only: `Trainer.fit()` with cross-entropy;
 *    - distilled: an own loop whose traced step runs the teacher's forward (eval mode, no
 *      graph) beside the student's and trains on α·T²·KL(teacher ‖ student) at
 *      temperature T + (1 − α)·cross-entropy (examples/distill-lib.ts).
 * 3. Held-out accuracy of both after every epoch; the last distilled student is saved as a
 *    loop checkpoint (model, optimizer state, masks) and resumed into a fresh loop to check
 *    it scores the same.
 *
 *     npx tsx examples/distill.ts                         # ~1 min on 2 cores (2.5 min under a load of 15)
 *     LIAISON_DISTILL_SEEDS=1 LIAISON_DISTILL_EPOCHS=3 LIAISON_DISTILL_TEACHER_EPOCHS=2 npx tsx examples/distill.ts
 *
 * Prints markdown tables (final accuracy per seed and arm; mean ± std; accuracy by epoch),
 * writes `distill.png` (held-out accuracy per epoch, mean over seeds, the teacher's as a
 * line), `distill.md`, `distill.json` and `distill-student.safetensors` to the out folder
 * (`--out DIR`, default examples/out). Knobs: LIAISON_DISTILL_SEEDS (5),
 * LIAISON_DISTILL_EPOCHS (30), LIAISON_DISTILL_TEACHER_EPOCHS (20), LIAISON_DISTILL_HIDDEN
 * (student width H, 32), LIAISON_THREADS (1). Results: docs/any-loop.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Runtime } from '../bridge/index.js';
import { magnitude, nesterov } from '../plugins/index.js';
import { Dataset, evaluate, Model, plotLines, sparsityOf, Trainer } from '../sdk/index.js';
import { distillEpoch, distillLoop, type DistillLoop } from './distill-lib.js';
import { outDir, positiveInt, secs } from './env.js';
import { markdownTable } from './tables.js';

const SEEDS = positiveInt('LIAISON_DISTILL_SEEDS', 5);
const EPOCHS = positiveInt('LIAISON_DISTILL_EPOCHS', 30);
const TEACHER_EPOCHS = positiveInt('LIAISON_DISTILL_TEACHER_EPOCHS', 20);
const HIDDEN = positiveInt('LIAISON_DISTILL_HIDDEN', 32);
const BATCH = 32;
const SPARSITY = 0.9;
const TEMPERATURE = 4;
const ALPHA = 0.7;
const optimizer = () => nesterov({ lr: 0.05, momentum: 0.9 });
// three rounds from a fifth of the way in, then fine-tuning at 90%
const every = Math.max(1, Math.floor(EPOCHS / 10));
const pruner = () => magnitude({ sparsity: SPARSITY, atEpoch: Math.max(1, Math.floor(EPOCHS / 5)), rounds: 3, every });
const ARMS = ['labels only (Trainer.fit)', `distilled (own loop, T ${TEMPERATURE}, α ${ALPHA})`] as const;

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
function meanStd(xs: number[]): string {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = xs.length > 1 ? Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1)) : 0;
  return xs.length > 1 ? `${pct(m)} ± ${(100 * sd).toFixed(1)}` : pct(m);
}

async function main(): Promise<void> {
  const out = outDir(process.argv.slice(2));
  mkdirSync(out, { recursive: true });
  const t0 = performance.now();
  const rt = await Runtime.start({ threads: positiveInt('LIAISON_THREADS', 1) });
  try {
    const [train, test] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    console.log(`digits: ${train.size} to train on, ${test.size} held out; batch ${BATCH}, nesterov lr 0.05 β 0.9`);

    // 1. the teacher, trained by the Trainer
    const teacher = await Model.build(rt, { kind: 'cnn', image: [8, 8], channels: [16, 32], hidden: 64, classes: 10 }, { seed: 100 });
    const tt = new Trainer({ model: teacher, optimizer: optimizer(), epochs: TEACHER_EPOCHS, batchSize: BATCH, progress: 'none', logEvery: 1_000_000 });
    await tt.fit(train);
    tt.free();
    const teacherAcc = (await evaluate(teacher, test, { loss: 'cross_entropy' })).accuracy!;
    const teacherParams = teacher.params.reduce((n, p) => n + p.numel, 0);
    console.log(`teacher: CNN, ${teacherParams.toLocaleString('en-US')} parameters, ${TEACHER_EPOCHS} epoch${TEACHER_EPOCHS === 1 ? '' : 's'}: held-out accuracy ${pct(teacherAcc)} (${secs(t0)})`);
    console.log(`students: MLP 64-${HIDDEN}-10, magnitude pruning to ${SPARSITY * 100}% in 3 rounds (after epochs ${[0, 1, 2].map((r) => Math.max(1, Math.floor(EPOCHS / 5)) + r * every).join(', ')}), ${EPOCHS} epochs, ${SEEDS} seed${SEEDS === 1 ? '' : 's'}`);

    // 2. the students: acc[arm][seed][epoch]
    const acc: number[][][] = ARMS.map(() => []);
    const sparsity: number[] = [];
    let checkpoint = '';
    for (let seed = 0; seed < SEEDS; seed++) {
      const t1 = performance.now();
      const sizes = [64, HIDDEN, 10];
      // labels only: the Trainer
      const alone = await Model.build(rt, { kind: 'mlp', sizes }, { seed });
      const trainer = new Trainer({ model: alone, optimizer: optimizer(), plugins: [pruner()], epochs: EPOCHS, batchSize: BATCH, seed, progress: 'none', logEvery: 1_000_000 });
      const history = await trainer.fit(train, { eval: test });
      acc[0].push(history.map((h) => h.accuracy!));
      trainer.free();
      alone.free();
      // distilled: the own loop, same init, data order, optimizer and pruner
      const student = await Model.build(rt, { kind: 'mlp', sizes }, { seed });
      const d = await distillLoop({ student, teacher, optimizer: optimizer(), plugins: [pruner()], temperature: TEMPERATURE, alpha: ALPHA });
      const curve: number[] = [];
      for (let e = 0; e < EPOCHS; e++) {
        await distillEpoch(d, train, BATCH, seed);
        const ev = await evaluate(student, test, { loss: 'cross_entropy' });
        curve.push(ev.accuracy!);
        await d.loop.evaluation({ loss: ev.loss, accuracy: ev.accuracy! });
      }
      await d.loop.fitEnd({ accuracy: curve.at(-1)! });
      acc[1].push(curve);
      const s = await sparsityOf(student);
      sparsity.push(s.sparsity);
      console.log(`seed ${seed}: labels only ${pct(acc[0][seed].at(-1)!)}, distilled ${pct(curve.at(-1)!)}; student weights ${pct(s.sparsity)} zero (${secs(t1)})`);
      if (seed === SEEDS - 1) checkpoint = await saveAndResume(d, student, teacher, test, sizes, out);
      d.loop.free();
      student.free();
    }

    // 3. tables, figure, files
    const rows = acc[0].map((_, s) => [String(s), pct(acc[0][s].at(-1)!), pct(acc[1][s].at(-1)!), pct(sparsity[s])]);
    const perSeed = markdownTable(['seed', ...ARMS, 'student weights zero'], rows);
    const summary = markdownTable(['model', 'parameters (nonzero)', 'held-out accuracy'], [
      ['teacher CNN (Trainer)', teacherParams.toLocaleString('en-US'), pct(teacherAcc)],
      ...ARMS.map((a, i) => [`student MLP 64-${HIDDEN}-10, ${a}`, `${(64 * HIDDEN + HIDDEN * 10 + HIDDEN + 10).toLocaleString('en-US')} (${Math.round((64 * HIDDEN + HIDDEN * 10) * (1 - SPARSITY) + HIDDEN + 10).toLocaleString('en-US')})`, meanStd(acc[i].map((c) => c.at(-1)!))]),
    ]);
    const marks = [...new Set([0, Math.floor(EPOCHS / 5), Math.floor(EPOCHS / 2), EPOCHS - 1])].filter((e) => e >= 0 && e < EPOCHS);
    const byEpoch = markdownTable(['epoch', ...ARMS], marks.map((e) => [String(e + 1), ...acc.map((arm) => meanStd(arm.map((c) => c[e])))]));
    const text = `${summary}\n\n${perSeed}\n\n${byEpoch}\n`;
    console.log(`\n${text}`);
    console.log(checkpoint);
    writeFileSync(join(out, 'distill.md'), `${text}\n${checkpoint}\n`);
    writeFileSync(join(out, 'distill.json'), `${JSON.stringify({ teacher: teacherAcc, arms: ARMS, accuracy: acc, sparsity, epochs: EPOCHS, seeds: SEEDS, hidden: HIDDEN, temperature: TEMPERATURE, alpha: ALPHA }, null, 1)}\n`);
    const epochs = Array.from({ length: EPOCHS }, (_, e) => e + 1);
    const mean = (arm: number[][]) => epochs.map((_, e) => arm.reduce((a, c) => a + c[e], 0) / arm.length);
    await plotLines({
      path: join(out, 'distill.png'),
      title: `MLP 64-${HIDDEN}-10 pruned to ${SPARSITY * 100}% on the digits, mean of ${SEEDS} seed${SEEDS === 1 ? '' : 's'}`,
      xlabel: 'epoch', ylabel: 'held-out accuracy',
      series: [
        ...ARMS.map((label, i) => ({ label, x: epochs, y: mean(acc[i]) })),
        { label: 'teacher (CNN)', x: [1, EPOCHS], y: [teacherAcc, teacherAcc], style: '--' },
      ],
    }).then(() => console.log(`figure: ${join(out, 'distill.png')}`), (e: unknown) => console.log(`figure: not drawn (${(e as Error).message})`));
  } finally {
    await rt.close();
  }
  console.log(`done in ${secs(t0)}`);
}

/** Save the distilled student's loop, resume it into a fresh loop and model, and check both score alike. */
async function saveAndResume(d: DistillLoop, student: Model, teacher: Model, test: Dataset, sizes: number[], out: string): Promise<string> {
  const path = join(out, 'distill-student.safetensors');
  await d.loop.save(path);
  const fresh = await Model.build(student.rt, { kind: 'mlp', sizes }, { seed: 999 });
  const again = await distillLoop({ student: fresh, teacher, optimizer: optimizer(), plugins: [pruner()], temperature: TEMPERATURE, alpha: ALPHA });
  await again.loop.resume(path);
  const [a, b] = await Promise.all([evaluate(student, test, { loss: 'cross_entropy' }), evaluate(fresh, test, { loss: 'cross_entropy' })]);
  again.loop.free();
  fresh.free();
  return `checkpoint: ${path} (epoch ${d.loop.epoch}, step ${d.loop.step}); resumed into a fresh loop: held-out accuracy ${pct(b.accuracy!)} (saved ${pct(a.accuracy!)}), loss ${b.loss.toFixed(6)} (saved ${a.loss.toFixed(6)})`;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
