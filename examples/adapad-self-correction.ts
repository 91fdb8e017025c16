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
 * exactly, zero-variance pixels dropped), so d' ≈ 61 features; a frozen base Linear
 * d' → OUT (the model's own init) plus a known low-rank update ΔW* = U·diag(σ)·Vᵀ with a
 * spread spectrum σ_k = σ₁·ρ^(k−1) makes the targets y = base(x) + ΔW*x. With the mean squared
 * error over n·OUT entries the loss is ‖ΔW − ΔW*‖²_F / OUT, so its curvature is c = 2/OUT:
 * `adapad` is given exactly that, and the deflation is then exact.
 *
 * `adapad` runs on that one Linear, full-batch gradient descent, one round = T steps; it
 * starts with one component and grows one every G rounds (a ghost for `advance` steps
 * first) until its budget of K components is spent. After every round the factors are read
 * and each component k (in join order, P_k = scale·b_k a_kᵀ) is scored, in float64, by
 *
 * - the relative error ‖P_k − T_k‖_F / ‖T_k‖_F against its exact deflation target T_k, the
 *   top singular pair of ΔW* − Σ_{j<k} P_j at that round (the predecessors as broadcast);
 * - the same against ΔW*'s k-th singular pair σ_k u_k v_kᵀ (what deflation converges to).
 *
 * It prints a table (per component: the round it joined, its error a warm-up after joining,
 * the decay per round from there until 1e-5, the rounds it took to get there, the final
 * errors), says whether the errors decay after warm-up at this scale, and writes
 * adapad-self-correction.png (errors over rounds, log scale) and .json to the out dir. A
 * component's curve starts at its birth: its first `advance` steps are advance learning.
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

const rt = await Runtime.start();
try {
  const t0 = performance.now();
  const { data, dIn, dW } = await problem();
  const model = await Model.build(rt, { kind: 'mlp', sizes: [dIn, OUT] }, { seed: SEED });
  const y = model.forward(data.x, { train: false }).add(data.x.matmul(dW.transpose(0, 1))).keep();
  const train = new Dataset(rt, data.x, y, [data.n, dIn], [data.n, OUT], 'f32');
  const target = await readMatrix(dW, OUT, dIn);
  const plugin = adapad({ targets: 'layers.0', maxRank: K, budget: K, growEvery: GROW * T, advance: ADVANCE, localSteps: T, curvature: 2 / OUT, seed: SEED });
  const trainer = new Trainer({ model, optimizer: gd({ lr: LR }), plugins: [plugin], loss: 'mse', batchSize: data.n, shuffle: false, progress: 'none' });
  console.log(`whitened digits: n = ${data.n}, d' = ${dIn}; ΔW* (${OUT}, ${dIn}) of rank ${K}, σ_k = ${SIGMA1}·${RHO}^(k−1); ${ROUNDS} rounds of T = ${T} gd steps (lr ${LR}), a component every ${GROW} rounds`);

  // errors[k][r]: component k's relative error after round r + 1 (NaN before it joins)
  const vsTarget: number[][] = Array.from({ length: K }, () => []);
  const vsTrue: number[][] = Array.from({ length: K }, () => []);
  const joined: number[] = Array(K).fill(0);
  const truePairs = Array.from({ length: K }, (_, k) => topSingularPair(deflate(target, []), k));
  const losses: number[] = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const [e] = await trainer.fit(train, { epochs: T });
    losses.push(e.loss);
    const comps = await components(plugin, K);
    for (let k = 0; k < K; k++) {
      const c = comps[k];
      if (!c.inSum && !c.ghost) { vsTarget[k].push(NaN); vsTrue[k].push(NaN); continue; }
      if (!joined[k] && c.inSum) joined[k] = r;
      const exact = topSingularPair(deflate(target, comps.slice(0, k).filter((p) => p.inSum || p.ghost).map((p) => p.P)), 0);
      vsTarget[k].push(relativeError(c.P, exact));
      vsTrue[k].push(relativeError(c.P, truePairs[k]));
    }
  }

  const rows = Array.from({ length: K }, (_, k) => summary(k));
  const header = ['component', 'joined (round)', `error ${WARMUP} rounds after`, 'decay per round (then, to 1e-5)', 'rounds to 1e-5', 'final error', 'final vs ΔW* pair', 'decays'];
  const cells = rows.map((s) => [String(s.k + 1), s.joined ? String(s.joined) : 'never', fmt(s.atWarmup), s.rate === null ? '—' : s.rate.toFixed(3), s.rounds === null ? '—' : String(s.rounds), fmt(s.final), fmt(s.finalTrue), s.decays ? 'yes' : 'no']);
  console.log(`\n${textTable(header, cells)}\n`);
  const judged = rows.filter((s) => s.atWarmup !== null);
  const decaying = judged.filter((s) => s.decays);
  console.log(judged.length === 0
    ? `Self-correction: not judged (no component had ${WARMUP} rounds after joining; raise LIAISON_ADAPAD_ROUNDS).`
    : `Self-correction: ${decaying.length === judged.length ? 'yes' : 'no'} — ${decaying.length} of ${judged.length} components' errors against their exact deflation targets decayed after warm-up ` +
      `(final ≤ 1/10 of the error ${WARMUP} rounds after joining, or at f32 rounding ≤ 1e-4)${decaying.length === judged.length ? '' : `; not: ${judged.filter((s) => !s.decays).map((s) => s.k + 1).join(', ')}`}.`);
  console.log(`final training loss ${losses.at(-1)!.toExponential(3)}; rank pattern ${JSON.stringify(await plugin.rankPattern())}; ${secs(t0)}`);

  mkdirSync(DIR, { recursive: true });
  const x = Array.from({ length: ROUNDS }, (_, r) => r + 1);
  const floor = (v: number) => (Number.isNaN(v) ? NaN : Math.max(v, 1e-9));
  const series: Series[] = [];
  for (let k = 0; k < K; k++) {
    series.push({ label: `component ${k + 1}`, x, y: vsTarget[k].map(floor), style: '-', panel: 0 });
    series.push({ label: `component ${k + 1}`, x, y: vsTrue[k].map(floor), style: '--', panel: 1 });
  }
  const png = join(DIR, 'adapad-self-correction.png');
  await plotLines({ path: png, series, logy: true, xlabel: `round (${T} steps each)`, ylabel: 'relative error ‖P_k − T_k‖ / ‖T_k‖', panels: ['vs the exact deflation target (ΔW* − Σ_{j<k} P_j)', "vs ΔW*'s k-th singular pair"] });
  writeFileSync(join(DIR, 'adapad-self-correction.json'), JSON.stringify({ K, ROUNDS, T, GROW, OUT, LR, vsTarget, vsTrue, joined, losses }, null, 1));
  console.log(`\n${markdownTable(header, cells)}\n\nwrote ${relative(process.cwd(), png)}`);
  trainer.free();
  plugin.free();
  model.free();
  train.free();

  function summary(k: number) {
    const errs = vsTarget[k];
    const j = joined[k];
    const w = j ? j + WARMUP - 1 : Infinity; // index of the round WARMUP rounds after joining
    const atWarmup = w < errs.length ? errs[w] : null;
    const final = errs.at(-1)!;
    // the decay from the warm-up on, until the error reaches 1e-5 (below that f32 rounding takes over)
    const hit = atWarmup === null ? -1 : errs.findIndex((e, i) => i >= w && e <= 1e-5);
    const end = hit >= 0 ? hit : errs.length - 1;
    const rate = atWarmup !== null && end > w && atWarmup > 0 ? (errs[end] / atWarmup) ** (1 / (end - w)) : null;
    const rounds = hit >= 0 && j ? hit + 1 - j : null;
    const decays = atWarmup !== null && (final <= atWarmup / 10 || final <= 1e-4);
    return { k, joined: j, atWarmup, final, rate, rounds, finalTrue: vsTrue[k].at(-1)!, decays };
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
  const [A, B, gate, ghost] = await Promise.all([f.A, f.B, f.gate, f.ghost!].map(async (t) => Array.from(await t.toArray() as Float32Array)));
  const dIn = A.length / n;
  return Array.from({ length: n }, (_, k) => ({
    P: Array.from({ length: OUT }, (_, i) => Array.from({ length: dIn }, (_, j) => f.scale * B[i * n + k] * A[k * dIn + j])),
    inSum: gate[k] !== 0,
    ghost: ghost[k] !== 0,
  }));
}
