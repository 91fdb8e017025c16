/**
 * AdaPaD's self-correction, measured (Su, Liao, Kyrillidis, "AdaPaD: Adaptive Parallel
 * Deflation for PEFT with Self-Correcting Rank Discovery"): each rank-1 component trains
 * against the deflation target built from its predecessors' latest estimates, and as those
 * improve the targets improve, so every component's error against its EXACT deflation
 * target decays over rounds after a warm-up instead of staying frozen in (as Hotelling's
 * deflation would keep it; docs/deflation.md shows the same for PCA).
 *
 * The setting is the paper's analysis: a least-squares fine-tune whose Hessian is ∝ I.
 * Inputs are the digits' 64 pixels, centered and whitened over the whole set (XᵀX/n = I
 * exactly, zero-variance directions dropped), so d' = 61 features; a frozen base Linear
 * d' → OUT (the model's own init) plus a known low-rank update ΔW* = U·diag(σ)·Vᵀ with a
 * spread spectrum σ_k = σ₁·ρ^(k−1) makes the targets y = base(x) + ΔW*x. With the mean squared
 * error over n·OUT entries the loss is ‖ΔW − ΔW*‖²_F / OUT, so its curvature is c = 2/OUT:
 * `adapad` is given exactly that (its default, 0, leaves the deflation off), and the
 * deflation is then exact.
 *
 * `adapad` runs on that one Linear, full-batch gradient descent, one round = T steps; it
 * starts with one component and grows one every G rounds (a ghost for one round first)
 * until its budget of K components is spent. The control is the same run at curvature 0:
 * the same components, growth and advance learning, trained jointly on the task loss with
 * no deflation targets. After every round the factors are read and each component k (in
 * join order, P_k = scale·b_k a_kᵀ) is scored, in float64, by
 *
 * - the relative error ‖P_k − T_k‖_F / ‖T_k‖_F against its exact deflation target T_k, the
 *   top singular pair of ΔW* − Σ_{j<k} P_j at that round (the predecessors as broadcast);
 * - the same against ΔW*'s k-th singular pair σ_k u_k v_kᵀ (what deflation converges to).
 *
 * It prints a table per run (per component: the round it joined, its error a warm-up after
 * joining, the decay per round from there until 1e-5, the rounds it took to get there, the
 * final errors), says for each whether the errors decay after warm-up at this scale, and
 * writes adapad-self-correction.png (errors against the exact targets over rounds, log
 * scale, one panel per run), -pairs.png (against ΔW*'s pairs) and .json to the out dir. A
 * component's curve starts at its birth: its first round is advance learning.
 *
 *     npx tsx examples/adapad-self-correction.ts              # examples/out/adapad-self-correction.png
 *     LIAISON_ADAPAD_ROUNDS=20 LIAISON_ADAPAD_K=3 npx tsx examples/adapad-self-correction.ts   # the fast variant
 *
 * Knobs: LIAISON_ADAPAD_K (components, 6), _ROUNDS (L, 80), _T (steps per round, 10),
 * _GROW (rounds between growths, 4), _OUT (output width, 32), _LR (gd step, 2).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Runtime, type Tensor } from '../bridge/index.js';
import { adapad } from '../plugins/adapters/adapad.js';
import { gd } from '../plugins/momentum/gd.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import { plotLines, type Series } from '../sdk/plot.js';
import { progressView } from '../sdk/progress.js';
import { Trainer } from '../sdk/trainer.js';
import { outDir, positiveInt, positiveNumbers, secs } from './env.js';
import { markdownTable, textTable } from './tables.js';

const K = positiveInt('LIAISON_ADAPAD_K', 6);
const ROUNDS = positiveInt('LIAISON_ADAPAD_ROUNDS', 80);
const T = positiveInt('LIAISON_ADAPAD_T', 10);
const GROW = positiveInt('LIAISON_ADAPAD_GROW', 4);
const OUT = positiveInt('LIAISON_ADAPAD_OUT', 32);
const [LR] = positiveNumbers('LIAISON_ADAPAD_LR', [2]);
const ADVANCE = T; // one round of advance learning
const SIGMA1 = 4, RHO = 0.7, SEED = 0;
const DIR = outDir(process.argv.slice(2));
/** Rounds after a component joins before its decay is judged (its predecessors' errors must shrink first). */
const WARMUP = 2 * GROW;

/** One run's record: errors[k][r] is component k's relative error after round r + 1 (NaN before it is born). */
interface Run { name: string; label: string; vsTarget: number[][]; vsTrue: number[][]; joined: number[]; losses: number[]; ranks: Record<string, number> }

const rt = await Runtime.start();
try {
  const t0 = performance.now();
  const { data, dIn, dW } = await problem();
  const target = await readMatrix(dW, OUT, dIn);
  const truePairs = Array.from({ length: K }, (_, k) => topSingularPair(target, k));
  console.log(`whitened digits: n = ${data.n}, d' = ${dIn}; ΔW* (${OUT}, ${dIn}) of rank ${K}, σ_k = ${SIGMA1}·${RHO}^(k−1); ${ROUNDS} rounds of T = ${T} gd steps (lr ${LR}), a component every ${GROW} rounds`);
  const runs = [
    await run('adapad', `adapad, curvature 2/${OUT}: exact deflation`, 2 / OUT),
    await run('control (curvature 0)', 'the control, curvature 0: the same components, growth and advance learning trained jointly, no deflation targets', 0),
  ];
  const header = ['component', 'joined (round)', `error ${WARMUP} rounds after`, 'decay per round (then, to 1e-5)', 'rounds to 1e-5', 'final error', 'final vs ΔW* pair', 'decays'];
  const markdown: string[] = [];
  for (const r of runs) {
    const rows = Array.from({ length: K }, (_, k) => summary(r, k));
    const cells = rows.map((s) => [String(s.k + 1), s.joined ? String(s.joined) : 'never', fmt(s.atWarmup), s.rate === null ? '—' : s.rate.toFixed(3), s.rounds === null ? '—' : String(s.rounds), fmt(s.final), fmt(s.finalTrue), s.decays ? 'yes' : 'no']);
    const judged = rows.filter((s) => s.atWarmup !== null);
    const decaying = judged.filter((s) => s.decays);
    const verdict = judged.length === 0
      ? `not judged (no component had ${WARMUP} rounds after joining; raise LIAISON_ADAPAD_ROUNDS)`
      : `${decaying.length === judged.length ? 'yes' : 'no'} — ${decaying.length} of ${judged.length} components' errors against their exact deflation targets decayed after warm-up ` +
        `(final ≤ 1/10 of the error ${WARMUP} rounds after joining, or ≤ 1e-4)${decaying.length === judged.length ? '' : `; not: ${judged.filter((s) => !s.decays).map((s) => s.k + 1).join(', ')}`}`;
    console.log(`\n${r.label}\n\n${textTable(header, cells)}\n\nSelf-correction, ${r.name}: ${verdict}.`);
    console.log(`final training loss ${r.losses.at(-1)!.toExponential(3)}; rank pattern ${JSON.stringify(r.ranks)}`);
    markdown.push(`${r.label}\n\n${markdownTable(header, cells)}`);
  }
  console.log(secs(t0));

  mkdirSync(DIR, { recursive: true });
  const x = Array.from({ length: ROUNDS }, (_, r) => r + 1);
  const floor = (v: number) => (Number.isNaN(v) ? NaN : Math.max(v, 1e-9));
  const panels = runs.map((r) => r.name);
  const plot = async (file: string, of: (r: Run) => number[][], ylabel: string) => {
    const series: Series[] = runs.flatMap((r, i) => of(r).map((e, k) => ({ label: `component ${k + 1}`, x, y: e.map(floor), style: '-', panel: i })));
    const path = join(DIR, file);
    await plotLines({ path, series, logy: true, xlabel: `round (${T} steps each)`, ylabel, panels });
    return relative(process.cwd(), path);
  };
  const pngs = [
    await plot('adapad-self-correction.png', (r) => r.vsTarget, 'error vs the exact deflation target, ‖P_k − T_k‖ / ‖T_k‖'),
    await plot('adapad-self-correction-pairs.png', (r) => r.vsTrue, "error vs ΔW*'s k-th singular pair"),
  ];
  writeFileSync(join(DIR, 'adapad-self-correction.json'), JSON.stringify({ K, ROUNDS, T, GROW, OUT, LR, runs }, null, 1));
  console.log(`\n${markdown.join('\n\n')}\n\nwrote ${pngs.join(', ')}`);
  data.x.free();
  dW.free();

  /** Train adapad with this curvature on a fresh copy of the base, scoring every component after every round. */
  async function run(name: string, label: string, curvature: number): Promise<Run> {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [dIn, OUT] }, { seed: SEED });
    const ds = train(model);
    const plugin = adapad({ targets: 'layers.0', maxRank: K, budget: K, growEvery: GROW * T, advance: ADVANCE, localSteps: T, curvature, seed: SEED });
    const trainer = new Trainer({ model, optimizer: gd({ lr: LR }), plugins: [plugin], loss: 'mse', batchSize: data.n, shuffle: false, progress: 'none' });
    const r: Run = { name, label, vsTarget: Array.from({ length: K }, () => []), vsTrue: Array.from({ length: K }, () => []), joined: Array(K).fill(0), losses: [], ranks: {} };
    const bar = progressView('auto'); // on a terminal: rounds as epochs, T steps each
    bar.start(ROUNDS * T, { epoch: 0, epochs: ROUNDS, loss: NaN });
    for (let round = 1; round <= ROUNDS; round++) {
      const [e] = await trainer.fit(ds, { epochs: T });
      r.losses.push(e.loss);
      bar.update(round * T, { epoch: round, loss: e.loss });
      const comps = await components(plugin, K);
      for (let k = 0; k < K; k++) {
        const c = comps[k];
        if (!c.inSum && !c.ghost) { r.vsTarget[k].push(NaN); r.vsTrue[k].push(NaN); continue; }
        if (!r.joined[k] && c.inSum) r.joined[k] = round;
        const exact = topSingularPair(deflate(target, comps.slice(0, k).filter((p) => p.inSum || p.ghost).map((p) => p.P)), 0);
        r.vsTarget[k].push(relativeError(c.P, exact));
        r.vsTrue[k].push(relativeError(c.P, truePairs[k]));
      }
    }
    bar.stop();
    r.ranks = await plugin.rankPattern();
    trainer.free();
    plugin.free();
    model.free();
    ds.free();
    return r;
  }

  /** The regression's data: x whitened, y = base(x) + ΔW*·x with this model's (seeded, so every run's) base. */
  function train(model: Model): Dataset {
    const y = model.forward(data.x, { train: false }).add(data.x.matmul(dW.transpose(0, 1)));
    return new Dataset(rt, data.x.clone(), y, [data.n, dIn], [data.n, OUT], 'f32');
  }

  function summary(r: Run, k: number) {
    const errs = r.vsTarget[k];
    const j = r.joined[k];
    const w = j ? j + WARMUP - 1 : Infinity; // index of the round WARMUP rounds after joining
    const atWarmup = w < errs.length ? errs[w] : null;
    const final = errs.at(-1)!;
    // the decay from the warm-up on, until the error reaches 1e-5 (below that f32 rounding takes over)
    const hit = atWarmup === null ? -1 : errs.findIndex((e, i) => i >= w && e <= 1e-5);
    const end = hit >= 0 ? hit : errs.length - 1;
    const rate = atWarmup !== null && end > w && atWarmup > 0 ? (errs[end] / atWarmup) ** (1 / (end - w)) : null;
    const rounds = hit >= 0 && j ? hit + 1 - j : null;
    const decays = atWarmup !== null && (final <= atWarmup / 10 || final <= 1e-4);
    return { k, joined: j, atWarmup, final, rate, rounds, finalTrue: r.vsTrue[k].at(-1)!, decays };
  }
} finally {
  await rt.close();
}

type Mat = number[][];

/** The k-th (from 0) singular pair of M as the rank-1 matrix σ·u·vᵀ, float64: power iteration on MᵀM, deflating the pairs before it. */
function topSingularPair(M: Mat, k: number): Mat {
  let R = M.map((row) => [...row]);
  let pair: Mat = [];
  for (let q = 0; q <= k; q++) {
    let v = R[0].map((_, j) => Math.cos(1 + j * (q + 1)));
    let sigma = 0;
    for (let it = 0; it < 20_000; it++) {
      const u = R.map((row) => row.reduce((a, x, j) => a + x * v[j], 0));
      const w = v.map((_, j) => R.reduce((a, row, i) => a + row[j] * u[i], 0));
      const norm = Math.hypot(...w);
      const next = w.map((x) => x / norm);
      const moved = Math.hypot(...next.map((x, j) => x - v[j]));
      v = next;
      sigma = Math.sqrt(norm);
      if (moved < 1e-13) break;
    }
    const u = R.map((row) => row.reduce((a, x, j) => a + x * v[j], 0) / sigma);
    pair = u.map((ui) => v.map((vj) => sigma * ui * vj));
    R = R.map((row, i) => row.map((x, j) => x - pair[i][j]));
  }
  return pair;
}

/** ‖P − T‖_F / ‖T‖_F. */
function relativeError(P: Mat, T: Mat): number {
  let num = 0, den = 0;
  for (let i = 0; i < T.length; i++) for (let j = 0; j < T[i].length; j++) { num += (P[i][j] - T[i][j]) ** 2; den += T[i][j] ** 2; }
  return Math.sqrt(num / den);
}

function fmt(v: number | null): string {
  return v === null || Number.isNaN(v) ? '—' : v.toExponential(2);
}

/** ΔW* minus the given rank-1 matrices. */
function deflate(target: Mat, minus: Mat[]): Mat {
  return target.map((row, i) => row.map((v, j) => minus.reduce((acc, P) => acc - P[i][j], v)));
}

/** The whitened digits (n, d') f32 and ΔW* (OUT, d') f32, in the runtime. */
async function problem(): Promise<{ data: { x: Tensor; n: number }; dIn: number; dW: Tensor }> {
  const digits = await Dataset.builtin(rt, 'digits');
  const n = digits.xShape[0];
  const x = digits.x.to('f64');
  const xc = x.sub(x.mean(0, true));
  const [lam, V] = xc.transpose(0, 1).matmul(xc).div(n).eigh();
  const lams = Array.from(await lam.toArray() as Float64Array);
  const keep = lams.map((l, i) => (l > 1e-9 * lams.at(-1)! ? i : -1)).filter((i) => i >= 0);
  const idx = rt.tensor(keep, [keep.length], 'i64');
  const xw = xc.matmul(V.indexSelect(1, idx)).mul(lam.indexSelect(0, idx).rsqrt()).to('f32').keep(); // (n, d'): XᵀX/n = I
  const dIn = keep.length;
  // ΔW* = U diag(σ) Vᵀ, U (OUT, K), V (d', K) orthonormal columns from seeded Gaussians
  const [U] = rt.randn([OUT, K], { seed: SEED + 1, dtype: 'f64' }).qr();
  const [Vr] = rt.randn([dIn, K], { seed: SEED + 2, dtype: 'f64' }).qr();
  const sigma = rt.tensor(Array.from({ length: K }, (_, k) => SIGMA1 * RHO ** k), [1, K], 'f64');
  const dW = U.mul(sigma).matmul(Vr.transpose(0, 1)).to('f32').keep();
  digits.free();
  return { data: { x: xw, n }, dIn, dW };
}

async function readMatrix(t: Tensor, r: number, c: number): Promise<Mat> {
  const a = Array.from(await t.toArray() as Float32Array);
  return Array.from({ length: r }, (_, i) => a.slice(i * c, (i + 1) * c));
}

/** Each component as a dense (OUT, d') matrix P_k = scale·b_k a_kᵀ, with its phase. */
async function components(p: ReturnType<typeof adapad>, n: number): Promise<{ P: Mat; inSum: boolean; ghost: boolean }[]> {
  const f = p.set!.factors['layers.0'];
  const [A, B] = await Promise.all([f.A, f.B].map(async (t) => Array.from(await t.toArray() as Float32Array)));
  const phase = (await p.phases())['layers.0'];
  const dIn = A.length / n;
  return Array.from({ length: n }, (_, k) => ({
    P: Array.from({ length: OUT }, (_, i) => Array.from({ length: dIn }, (_, j) => f.scale * B[i * n + k] * A[k * dIn + j])),
    inSum: phase[k] === 'sum',
    ghost: phase[k] === 'ghost',
  }));
}
