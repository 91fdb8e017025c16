/**
 * The experiment of Liao & Kyrillidis (ALT 2024), "Provable Accelerated Convergence of
 * Nesterov's Momentum for Deep ReLU Neural Networks": the additive model
 *
 *     h(x, u) = A₁x + ReLU(A₂u),        f(x, u) = (1/m)·‖h(x, u) − y‖²
 *
 * is strongly convex in x (A₁ square, of full rank) and couples the non-convex part u in
 * through A₂. At three scales of A₂ (small, medium, large coupling) it trains x and u with
 * full-batch gradient descent, heavy ball and Nesterov's momentum (the `gd`, `heavy-ball`
 * and `nesterov` plugins, each a program in the Trainer's step) over several seeds, and
 * counts the iterations each needs to bring the loss to a target.
 *
 *     npx tsx examples/nesterov-additive.ts          # table: examples/out/nesterov-additive.md
 *                                                    # curves: examples/out/nesterov-additive.png
 *     LIAISON_MOMENTUM_STEP=full npx tsx examples/nesterov-additive.ts
 *     LIAISON_MOMENTUM_SEEDS=2 LIAISON_MOMENTUM_ITERS=400 LIAISON_MOMENTUM_SCALES=0.1,1,1.5,2 npx tsx examples/nesterov-additive.ts
 *
 * Knobs: LIAISON_MOMENTUM_SEEDS (5), LIAISON_MOMENTUM_ITERS (the budget, 3000),
 * LIAISON_MOMENTUM_SCALES (0.1,1,2), LIAISON_MOMENTUM_STEP (x), LIAISON_MOMENTUM_TARGET (1e-6),
 * LIAISON_THREADS (1), --out DIR (examples/out).
 *
 * Setup (the paper's sizes are not public, so these are ours): m = d₁ = 64 rows, d₂ = 32;
 * A₁ = √(m/2)·Q₁·diag(s)·Q₂ᵀ with random orthogonal Q₁, Q₂ and s² spread geometrically
 * over [1/KAPPA_X, 1], so the Hessian in x, (2/m)·A₁ᵀA₁, has its eigenvalues there; A₂
 * Gaussian, rescaled so that λ_max((2/m)·A₂ᵀA₂) = scale² (scale = ‖A₂‖/‖A₁‖, the coupling);
 * y = A₁x* + ReLU(A₂u*) for a random planted (x*, u*). A₁ being invertible, every u has an x
 * of zero loss (the paper's "universal optimality"): the optimum is 0.
 *
 * Step and momentum come from A₁ and A₂ as measured (eigh in float64). μ = λ_min((2/m)·A₁ᵀA₁)
 * is the strong convexity in x. L, by LIAISON_MOMENTUM_STEP:
 * - `x` (default): L = λ_max((2/m)·A₁ᵀA₁), the smoothness of the strongly convex block, in
 *   which the paper states η and β. The coupling's curvature is left out of the step, as
 *   the theory's assumption that the coupling is small allows; a large A₂ breaks it.
 * - `full`: L = λ_max((2/m)·A₁ᵀA₁) + λ_max((2/m)·A₂ᵀA₂), which bounds f's curvature wherever
 *   f is twice differentiable (the ReLU part is piecewise linear, so the Hessian is the
 *   Gauss–Newton matrix there): a step safe at every scale, with κ growing with the coupling.
 * Then κ = L/μ, η = 1/L for all three methods, Nesterov's β = (4√κ − √c)/(4√κ + 7√c) (the
 * plugin's `kappa` and `c`), and heavy ball the same β, so that the two momentum methods
 * differ only in where the gradient is taken. Target: TARGET × the initial loss; a run
 * whose loss ends above its start (or not finite) counts as diverged. The loss Nesterov
 * reports is f(y_k), where its gradient is taken (the parameters hold y_k, as in PyTorch's
 * SGD(nesterov=True)).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LiaisonError, Runtime, type Tensor } from '../bridge/index.js';
import { gd, heavyBall, nesterov, paperMomentum } from '../plugins/index.js';
import { Dataset, evaluate, Model, type MomentumOptimizer, plotLines, type Series } from '../sdk/index.js';
import { outDir, positiveInt, positiveNumbers, secs } from './env.js';
import { itersCell, itersTo, lossCurve, median } from './momentum-runs.js';
import { markdownTable, textTable } from './tables.js';

const SEEDS = positiveInt('LIAISON_MOMENTUM_SEEDS', 5);
const ITERS = positiveInt('LIAISON_MOMENTUM_ITERS', 3000); // the budget per run
const STEP = process.env.LIAISON_MOMENTUM_STEP || 'x';
if (STEP !== 'x' && STEP !== 'full') throw new LiaisonError('E_ARG', `LIAISON_MOMENTUM_STEP must be 'x' or 'full', got ${JSON.stringify(STEP)}`);
const M = 64; // rows of A₁ and A₂ = d₁, the width of x (A₁ square)
const D2 = 32; // width of u
const KAPPA_X = 100; // condition number of the Hessian in x
// ‖A₂‖/‖A₁‖, the coupling: small, medium and large by default
const SCALE_VALUES = positiveNumbers('LIAISON_MOMENTUM_SCALES', [0.1, 1, 2]);
const SCALES = SCALE_VALUES.map((scale, i) => ({ scale, name: SCALE_VALUES.length === 3 ? ['small', 'medium', 'large'][i] : `×${scale}` }));
const C = 1; // the paper's constant c in β
const TARGET = positiveNumbers('LIAISON_MOMENTUM_TARGET', [1e-6])[0]; // the loss to reach, relative to the initial loss
const OUT = outDir(process.argv.slice(2)); // --out DIR, default examples/out
const METHODS = ['gd', 'heavy-ball', 'nesterov'] as const;
type Method = (typeof METHODS)[number];

interface Problem { data: Dataset; L: number; mu: number; kappa: number }
/** One run: iterations to the target (null: not within the budget), divergence, loss / initial loss per iteration. */
interface Result { iters: number | null; diverged: boolean; curve: number[] }

const targetText = TARGET < 1e-3 ? TARGET.toExponential(0) : String(TARGET);

/** A₁, A₂ and y for one seed and scale, with L and μ measured from A₁ and A₂. */
async function problem(rt: Runtime, seed: number, scale: number): Promise<Problem> {
  return rt.scope(async () => {
    const f64 = { dtype: 'f64' as const };
    const [q1] = rt.randn([M, M], { seed: 10 * seed + 1, ...f64 }).qr();
    const [q2] = rt.randn([M, M], { seed: 10 * seed + 2, ...f64 }).qr();
    const s = Array.from({ length: M }, (_, i) => KAPPA_X ** (-i / (2 * (M - 1)))); // s² from 1 to 1/KAPPA_X
    const a1 = q1.mul(rt.tensor(new Float64Array(s), [1, M])).matmul(q2.T).mul(Math.sqrt(M / 2)); // (M, M)
    const g = rt.randn([M, D2], { seed: 10 * seed + 3, ...f64 });
    const gTop = g.T.matmul(g).eigh()[0].amax().sqrt(); // () the largest singular value of g
    const a2 = g.div(gTop).mul(scale * Math.sqrt(M / 2)); // (M, D2)
    const xStar = rt.randn([M], { seed: 10 * seed + 4, ...f64 }).div(Math.sqrt(M));
    const uStar = rt.randn([D2], { seed: 10 * seed + 5, ...f64 }).div(Math.sqrt(D2));
    const y = a1.matmul(xStar).add(a2.matmul(uStar).relu()); // (M)
    const [e1] = a1.T.matmul(a1).mul(2 / M).eigh(); // ascending
    const [e2] = a2.T.matmul(a2).mul(2 / M).eigh();
    const [mu, l1, l2] = await Promise.all([e1.amin().item(), e1.amax().item(), e2.amax().item()]);
    const rows: Tensor = rt.cat([a1, a2], 1).to('f32'); // (M, M + D2): row i is [a1ᵢ, a2ᵢ]
    const data = new Dataset(rt, rows, y.to('f32'), [M, M + D2], [M], 'f32');
    const L = STEP === 'x' ? l1 : l1 + l2;
    return { data, L, mu, kappa: L / mu };
  });
}

function optimizer(method: Method, p: Problem): MomentumOptimizer {
  const lr = 1 / p.L;
  if (method === 'gd') return gd({ lr });
  if (method === 'heavy-ball') return heavyBall({ lr, momentum: paperMomentum(p.kappa, C) });
  return nesterov({ lr, kappa: p.kappa, c: C });
}

async function main(): Promise<void> {
  const t0 = performance.now();
  // one torch thread unless told otherwise: on models this small, intra-op threads only add
  // synchronization (2 threads ran the diabetes MLP ~5x slower on a busy 2-core machine)
  const rt = await Runtime.start({ threads: positiveInt('LIAISON_THREADS', 1) });
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  console.log(`additive model h = A₁x + ReLU(A₂u): m = d₁ = ${M}, d₂ = ${D2}, κ of the x-part ${KAPPA_X}; full-batch; ` +
    `η = 1/L with L ${STEP === 'x' ? 'of the x-part' : 'of x and u together'} (LIAISON_MOMENTUM_STEP=${STEP}), β = (4√κ − √c)/(4√κ + 7√c) with c = ${C}`);
  console.log(`${SEEDS} seed${SEEDS === 1 ? '' : 's'} × ${SCALES.length} scales × ${METHODS.length} methods, budget ${ITERS} iterations, target ${targetText} × the initial loss`);
  const results = new Map<string, Result[]>(); // by `${scale name}/${method}`, one per seed
  const kappas = new Map<string, number[]>();
  try {
    for (const { name, scale } of SCALES) {
      const ts = performance.now();
      for (let seed = 0; seed < SEEDS; seed++) {
        const p = await problem(rt, seed, scale);
        kappas.set(name, [...(kappas.get(name) ?? []), p.kappa]);
        for (const method of METHODS) {
          const model = await Model.build(rt, { kind: 'additive', linear: M, relu: D2 }, { seed });
          const start = (await evaluate(model, p.data, { loss: 'mse' })).loss;
          const { losses, trainer } = await lossCurve({ model, optimizer: optimizer(method, p), data: p.data, iters: ITERS, stopBelow: start * TARGET });
          trainer.free();
          model.free();
          const last = losses.at(-1)!;
          const r: Result = { iters: itersTo(losses, start * TARGET), diverged: !(last <= start), curve: losses.map((l) => l / start) };
          results.set(`${name}/${method}`, [...(results.get(`${name}/${method}`) ?? []), r]);
        }
        p.data.free();
      }
      const k = median(kappas.get(name)!);
      console.log(`scale ${name} (‖A₂‖/‖A₁‖ = ${scale}): κ ≈ ${k.toFixed(0)}, β = ${paperMomentum(k, C).toFixed(4)}; ` +
        METHODS.map((m) => `${m} ${itersCell(results.get(`${name}/${m}`)!.map((r) => r.iters), ITERS).text}`).join(', ') + ` (${secs(ts)})`);
    }
  } finally {
    await rt.close();
  }
  report(results, kappas);
  await plot(results);
  console.log(`done in ${secs(t0)}`);
}

/** The table: iterations to the target per scale and method, and the speed-up over gd (of the medians). */
function report(results: Map<string, Result[]>, kappas: Map<string, number[]>): void {
  const header = ['scale', '‖A₂‖/‖A₁‖', 'κ', '√κ', 'method', 'iterations to target: median (min–max)', 'reached', 'diverged', 'speed-up over gd'];
  const rows: string[][] = [];
  for (const { name, scale } of SCALES) {
    const g = itersCell(results.get(`${name}/gd`)!.map((r) => r.iters), ITERS);
    const k = median(kappas.get(name)!);
    for (const m of METHODS) {
      const rs = results.get(`${name}/${m}`)!;
      const c = itersCell(rs.map((r) => r.iters), ITERS);
      // a lower bound when gd's median is past the budget
      const speedup = m === 'gd' || !Number.isFinite(c.median) ? '' : `${Number.isFinite(g.median) ? '' : '> '}${((Number.isFinite(g.median) ? g.median : ITERS) / c.median).toFixed(1)}×`;
      rows.push([name, String(scale), k.toFixed(0), Math.sqrt(k).toFixed(1), m, c.text, `${c.reached}/${SEEDS}`, `${rs.filter((r) => r.diverged).length}/${SEEDS}`, speedup]);
    }
  }
  console.log(`\niterations to a loss of ${targetText} × the initial loss (${SEEDS} seeds, budget ${ITERS}, LIAISON_MOMENTUM_STEP=${STEP}):\n`);
  console.log(textTable(header, rows));
  mkdirSync(OUT, { recursive: true });
  const md = join(OUT, 'nesterov-additive.md');
  writeFileSync(md, `# Additive model h = A₁x + ReLU(A₂u): iterations to ${targetText} × the initial loss\n\n` +
    `m = d₁ = ${M}, d₂ = ${D2}, κ of the x-part ${KAPPA_X}; full-batch; η = 1/L with L ${STEP === 'x' ? 'of the x-part' : 'of x and u together'} ` +
    `(LIAISON_MOMENTUM_STEP=${STEP}); β = (4√κ − √c)/(4√κ + 7√c), c = ${C}, for heavy ball and Nesterov; ${SEEDS} seeds, budget ${ITERS} iterations.\n\n` +
    `${markdownTable(header, rows)}\n`);
  console.log(`\ntable: ${md}`);
}

/** One panel per scale: per method the curve of its median seed (by iterations to the target), and the target. */
async function plot(results: Map<string, Result[]>): Promise<void> {
  const series: Series[] = [];
  SCALES.forEach(({ name }, panel) => {
    let longest = 1;
    for (const m of METHODS) {
      const rs = results.get(`${name}/${m}`)!;
      const order = rs.map((r, i) => [r.iters ?? Infinity, i] as const).sort((a, b) => a[0] - b[0]);
      // a diverged curve is drawn up to where its loss stops being finite
      const y = rs[order[(order.length - 1) >> 1][1]].curve.filter(Number.isFinite);
      longest = Math.max(longest, y.length);
      series.push({ label: m, y, panel, style: m === 'gd' ? ':' : m === 'heavy-ball' ? '--' : '-' });
    }
    series.push({ label: 'target', x: [0, longest - 1], y: [TARGET, TARGET], panel, style: 'k-.' });
  });
  const path = join(OUT, 'nesterov-additive.png');
  await plotLines({
    path, series, logy: true, xlabel: 'iteration', ylabel: 'loss / initial loss (log scale)',
    title: `additive model, η = 1/L (${STEP === 'x' ? 'L of the x-part' : 'L of x and u'})`,
    panels: SCALES.map(({ name, scale }) => `${name} coupling (‖A₂‖/‖A₁‖ = ${scale})`),
  }).then(() => console.log(`loss curves: ${path}`), (e: unknown) => console.log(`loss curves: not drawn (${(e as Error).message})`));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
