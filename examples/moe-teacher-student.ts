/**
 * The student–teacher experiment of Liao & Kyrillidis, "Guided by the Experts: Provable
 * Feature Learning Dynamic of Soft-Routed Mixture-of-Experts" (https://arxiv.org/abs/2510.07205):
 * a teacher MoE with soft routing and non-linear experts labels Gaussian inputs; an
 * over-parameterised student (more experts, more neurons per expert) learns it by joint
 * gradient descent on experts and router. Over training it tracks the alignment (cosine) of
 * each teacher neuron and each teacher router direction with its best student match — the
 * feature-learning phase — then prunes the student's redundant neurons and fine-tunes the
 * pruned student towards zero loss. The same run with a top-1 student (`topk`, k = 1) is
 * the contrast.
 *
 *     npx tsx examples/moe-teacher-student.ts     # table: examples/out/moe-teacher-student.md
 *                                                # plots: examples/out/moe-teacher-student-{loss,alignment}.png
 *                                                # every reading: examples/out/moe-teacher-student.json
 *     LIAISON_MOE_STEPS=600 LIAISON_MOE_FT_STEPS=200 LIAISON_MOE_SAMPLES=2048 npx tsx examples/moe-teacher-student.ts
 *
 * Knobs: LIAISON_MOE_STEPS (feature-learning steps, 3000), LIAISON_MOE_FT_STEPS (fine-tuning
 * steps, 1000), LIAISON_MOE_SAMPLES (training inputs, 8192; 2048 more are held out),
 * LIAISON_MOE_DIM (d, 32), LIAISON_MOE_EXPERTS / LIAISON_MOE_HIDDEN (the student's E and H,
 * 16 and 4; the teacher has 4 experts of 2 neurons), LIAISON_MOE_TAU (the pruning
 * threshold, 0.3), LIAISON_MOE_POINTS (alignment readings per phase, 20), LIAISON_MOE_SEED
 * (0), LIAISON_THREADS (1), --out DIR (examples/out).
 *
 * Setup (ours where the paper's figure is bigger: it trains m* = 5 teacher and m = 25 student
 * single-neuron experts at d = 1000 with online SGD): teacher E* = 4 experts of H* = 2 ReLU
 * neurons, unit-norm random input directions, output weights 1, a linear softmax router with
 * unit-norm random directions × 2; inputs x ~ N(0, I_d). Student: E experts of H ReLU
 * neurons, small init (neurons N(0, 0.1²/d), output weights N(0, 0.1²/H), router
 * N(0, 0.02²)), the `soft` router (linear: its directions are comparable with the
 * teacher's) or `topk` with k = 1 (its Switch auxiliary loss at the default weight 0.01).
 * Feature learning: heavy ball (η = 0.05, β = 0.9), mini-batches of 256. Pruning, two rules,
 * each by surgery (examples/moe-lib.ts: a smaller `moe` model loaded with what is kept): by
 * scale, teacher-free — keep the neurons whose output scale |a|·‖w‖ is ≥ τ × the largest,
 * drop the experts left empty; and to the best matches — keep, for each teacher neuron,
 * its best-aligned student neuron (the teacher's size and directions known, as in the
 * analysis). Fine-tuning: heavy ball, mini-batches of 1024; the control trains the unpruned
 * student on for the same steps. Losses are MSE / Var(y).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Runtime } from '../bridge/index.js';
import { heavyBall } from '../plugins/momentum/heavy-ball.js';
import { soft } from '../plugins/routers/soft.js';
import { topk } from '../plugins/routers/topk.js';
import { type Dataset, evaluate, type Model, plotLines, type Router, type Series, Trainer } from '../sdk/index.js';
import { outDir, positiveInt, positiveNumbers, secs } from './env.js';
import { alignment, type Alignment, bestMatches, buildMoE, buildTeacher, initStudent, type Keep, keepByScale, keepOf, type MoESize, neuronScales, prune, teacherData } from './moe-lib.js';
import { markdownTable, textTable } from './tables.js';

const STEPS = positiveInt('LIAISON_MOE_STEPS', 3000);
const FT_STEPS = positiveInt('LIAISON_MOE_FT_STEPS', 1000);
const SAMPLES = positiveInt('LIAISON_MOE_SAMPLES', 8192);
const HELD = 2048;
const D = positiveInt('LIAISON_MOE_DIM', 32);
const TEACHER: MoESize = { d: D, experts: 4, hidden: 2 };
const STUDENT: MoESize = { d: D, experts: positiveInt('LIAISON_MOE_EXPERTS', 16), hidden: positiveInt('LIAISON_MOE_HIDDEN', 4) };
const TAU = positiveNumbers('LIAISON_MOE_TAU', [0.3])[0];
const POINTS = positiveInt('LIAISON_MOE_POINTS', 20);
const SEED = Number(process.env.LIAISON_MOE_SEED ?? 0);
const BATCH = 256, FT_BATCH = 1024, LR = 0.05, MOMENTUM = 0.9, ROUTER_SCALE = 2, INIT = 0.1, ROUTER_STD = 0.02;
const OUT = outDir(process.argv.slice(2));
const KINDS = ['soft', 'top-1'] as const;
type Kind = (typeof KINDS)[number];
const RULES = ['by scale', 'to best matches'] as const;
const CONTROL = 'not pruned, trained on';

const newRouter = (kind: Kind): Router => (kind === 'soft' ? soft({}) : topk({ k: 1 }));

/** One reading: optimizer steps so far, relative losses, alignment. */
interface Point { step: number; train: number; held: number; align: Alignment }
/** A row of the table. */
interface Row { kind: Kind; phase: string; experts: number; neurons: number; point: Point }
/** What one student's run gives: its table rows and its curves. */
interface Run { rows: Row[]; learn: Point[]; tune: Map<string, Point[]> }

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const fmt = (v: number) => (v < 1e-3 ? v.toExponential(2) : v.toFixed(4));
const alignCell = (xs: readonly number[]) => `${mean(xs).toFixed(3)} (${Math.min(...xs).toFixed(3)})`;

interface Ctx { rt: Runtime; teacher: Model; train: Dataset; held: Dataset; varY: number }

async function reading(c: Ctx, model: Model, size: MoESize, step: number): Promise<Point> {
  const [tr, he] = [await evaluate(model, c.train, { loss: 'mse' }), await evaluate(model, c.held, { loss: 'mse' })];
  return { step, train: tr.loss / c.varY, held: he.loss / c.varY, align: await alignment(c.teacher, TEACHER.experts, model, size.experts) };
}

/** Train `model` for `steps` optimizer steps, reading the losses and alignment POINTS times; readings start at step `from`. */
async function train(c: Ctx, model: Model, size: MoESize, router: Router, steps: number, batch: number, from: number): Promise<Point[]> {
  const perEpoch = Math.ceil(SAMPLES / batch);
  const epochs = Math.max(1, Math.round(steps / perEpoch));
  const chunk = Math.max(1, Math.round(epochs / POINTS));
  const trainer = new Trainer({ model, optimizer: heavyBall({ lr: LR, momentum: MOMENTUM }), plugins: [router], batchSize: batch, loss: 'mse', progress: 'none', seed: SEED, logEvery: 1_000_000 });
  const points: Point[] = [];
  try {
    for (let done = 0; done < epochs;) {
      const n = Math.min(chunk, epochs - done);
      await trainer.fit(c.train, { epochs: n });
      done += n;
      points.push(await reading(c, model, size, from + done * perEpoch));
    }
  } finally {
    trainer.free();
  }
  return points;
}

async function runStudent(c: Ctx, kind: Kind): Promise<Run> {
  const t0 = performance.now();
  const router = newRouter(kind);
  const student = await buildMoE(c.rt, STUDENT, router, SEED + 10);
  const rows: Row[] = [];
  const tune = new Map<string, Point[]>();
  const all = STUDENT.experts * STUDENT.hidden;
  try {
    await initStudent(student, STUDENT, INIT, ROUTER_STD, SEED + 20);
    const init = await reading(c, student, STUDENT, 0);
    rows.push({ kind, phase: 'init', experts: STUDENT.experts, neurons: all, point: init });
    const learn = [init, ...(await train(c, student, STUDENT, router, STEPS, BATCH, 0))];
    const end = learn.at(-1)!;
    rows.push({ kind, phase: 'feature learning', experts: STUDENT.experts, neurons: all, point: end });
    console.log(`${kind}: feature learning, ${end.step} steps: held-out loss ${fmt(end.held)}, alignment neurons ${alignCell(end.align.neuron)}, routers ${alignCell(end.align.router)} (${secs(t0)})`);
    const keeps: Record<(typeof RULES)[number], Keep> = {
      'by scale': keepByScale(await neuronScales(student, STUDENT), STUDENT.hidden, TAU),
      'to best matches': keepOf(await bestMatches(c.teacher, TEACHER.experts, student, STUDENT.experts), STUDENT.hidden),
    };
    for (const rule of RULES) {
      const r2 = newRouter(kind);
      const p = await prune(student, STUDENT, keeps[rule], r2, SEED + 30);
      try {
        const cut = await reading(c, p.model, p.size, end.step);
        rows.push({ kind, phase: `pruned ${rule}`, experts: p.size.experts, neurons: p.neurons, point: cut });
        const curve = [cut, ...(await train(c, p.model, p.size, r2, FT_STEPS, Math.min(FT_BATCH, SAMPLES), end.step))];
        tune.set(rule, curve);
        const last = curve.at(-1)!;
        rows.push({ kind, phase: `fine-tuned (${rule})`, experts: p.size.experts, neurons: p.neurons, point: last });
        console.log(`${kind}: pruned ${rule} to ${p.size.experts} experts, ${p.neurons} neurons: held-out loss ${fmt(cut.held)} → fine-tuned ${fmt(last.held)} (train ${fmt(last.train)}) (${secs(t0)})`);
      } finally {
        p.model.free();
      }
    }
    // the control: the unpruned student trained on as the pruned ones are fine-tuned
    const cont = [end, ...(await train(c, student, STUDENT, newRouter(kind), FT_STEPS, Math.min(FT_BATCH, SAMPLES), end.step))];
    tune.set(CONTROL, cont);
    rows.push({ kind, phase: CONTROL, experts: STUDENT.experts, neurons: all, point: cont.at(-1)! });
    console.log(`${kind}: not pruned, trained on: held-out loss ${fmt(cont.at(-1)!.held)} (${secs(t0)})`);
    return { rows, learn, tune };
  } finally {
    student.free();
  }
}

function report(runs: Map<Kind, Run>): string {
  const header = ['student', 'phase', 'experts', 'neurons', 'steps', 'train loss', 'held-out loss', 'neuron alignment: mean (min)', 'router alignment: mean (min)'];
  const rows = [...runs.values()].flatMap((r) => r.rows).map((r) => [r.kind, r.phase, String(r.experts), String(r.neurons), String(r.point.step), fmt(r.point.train), fmt(r.point.held), alignCell(r.point.align.neuron), alignCell(r.point.align.router)]);
  console.log(`\n${textTable(header, rows)}\n`);
  return markdownTable(header, rows);
}

async function plot(runs: Map<Kind, Run>): Promise<string[]> {
  const loss: Series[] = [];
  const align: Series[] = [];
  for (const [kind, run] of runs) {
    const solid = kind === 'soft' ? '-' : '-.';
    loss.push({ label: `${kind}: feature learning`, x: run.learn.map((p) => p.step), y: run.learn.map((p) => p.held), style: solid });
    for (const [rule, curve] of run.tune) {
      const pts = rule === CONTROL ? curve : [run.learn.at(-1)!, ...curve];
      const label = rule === CONTROL ? `${kind}: ${CONTROL}` : `${kind}: pruned ${rule}, fine-tuned`;
      loss.push({ label, x: pts.map((p) => p.step), y: pts.map((p) => p.held), style: rule === 'by scale' ? '--' : rule === CONTROL ? '-' : ':' });
    }
    const scale = run.tune.get('by scale')!;
    const pts = [...run.learn, ...scale];
    for (const [panel, key] of [[0, 'neuron'], [1, 'router']] as const) {
      align.push({ label: `${kind}: mean`, x: pts.map((p) => p.step), y: pts.map((p) => mean(p.align[key])), style: solid, panel });
      align.push({ label: `${kind}: min`, x: pts.map((p) => p.step), y: pts.map((p) => Math.min(...p.align[key])), style: ':', panel });
    }
  }
  const lossPath = join(OUT, 'moe-teacher-student-loss.png');
  const alignPath = join(OUT, 'moe-teacher-student-alignment.png');
  await plotLines({ path: lossPath, series: loss, title: `held-out loss (MSE / Var y); pruned at step ${STEPS_DONE}`, xlabel: 'optimizer steps', ylabel: 'MSE / Var(y)', logy: true });
  await plotLines({ path: alignPath, series: align, panels: ['teacher neurons: best student cosine', 'teacher router directions: best student cosine'], xlabel: 'optimizer steps (pruned by scale, then fine-tuned)', ylabel: 'cosine' });
  return [lossPath, alignPath];
}

let STEPS_DONE = 0;

async function main(): Promise<void> {
  const t0 = performance.now();
  const rt = await Runtime.start({ threads: positiveInt('LIAISON_THREADS', 1) });
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  console.log(`teacher: ${TEACHER.experts} experts × ${TEACHER.hidden} ReLU neurons, soft linear router, d = ${D}; student: ${STUDENT.experts} experts × ${STUDENT.hidden} neurons; ` +
    `${SAMPLES} training inputs, ${HELD} held out; ${STEPS} feature-learning steps, ${FT_STEPS} fine-tuning steps, τ = ${TAU}`);
  const runs = new Map<Kind, Run>();
  try {
    const teacher = await buildTeacher(rt, TEACHER, soft({}), ROUTER_SCALE, SEED + 1);
    const train = await teacherData(teacher, D, SAMPLES, SEED + 2);
    const held = await teacherData(teacher, D, HELD, SEED + 3);
    const varY = await rt.scope(() => { const y = held.y; return y.sub(y.mean()).square().mean().item(); });
    const c: Ctx = { rt, teacher, train, held, varY };
    for (const kind of KINDS) runs.set(kind, await runStudent(c, kind));
    STEPS_DONE = runs.get('soft')!.learn.at(-1)!.step;
    train.free();
    held.free();
    teacher.free();
  } finally {
    await rt.close();
  }
  mkdirSync(OUT, { recursive: true });
  const table = report(runs);
  writeFileSync(join(OUT, 'moe-teacher-student.md'), `${table}\n`);
  // every reading (step, losses, per-teacher-unit cosines) of every phase, for a closer look than the plots give
  const curves = Object.fromEntries([...runs].map(([k, r]) => [k, { learn: r.learn, ...Object.fromEntries(r.tune) }]));
  writeFileSync(join(OUT, 'moe-teacher-student.json'), `${JSON.stringify(curves)}\n`);
  const pngs = await plot(runs);
  console.log(`wrote ${join(OUT, 'moe-teacher-student.md')}, ${join(OUT, 'moe-teacher-student.json')}, ${pngs.join(', ')}`);
  console.log(`done in ${secs(t0)}`);
}

await main();
