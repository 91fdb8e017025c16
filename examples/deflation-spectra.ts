/**
 * The synthetic setting of Parallel Deflation (Liao, Su, Kyrillidis, CPAL 2025,
 * https://arxiv.org/abs/2502.17615): the top K = 30 eigenvectors of a d = 1000 covariance
 * Σ = Q·diag(λ)·Qᵀ (Q from the QR of a seeded Gaussian matrix, so the true eigenvectors are
 * Q's columns) for two spectra, λ_k = k^−0.5 and λ_k = 1.1^−k, each law continued over all
 * d eigenvalues. Four deflators at one matrix–vector budget:
 *
 * - `exact` (eigh, the reference; it reads the whole matrix: d·K matvecs' worth),
 * - `hotelling` with t = ⌊budget/K⌋ − 2 power steps per component,
 * - `parallel-deflation` (power mode, T local steps) with the most rounds the budget allows,
 * - `eigengame-mu` with ⌊budget/K⌋ − 1 steps,
 *
 * every component scored by √(2 − 2|⟨u_k, v_k⟩|) against Q after every round. It plots max
 * (solid) and RMS (dashed) error against matvecs, one panel per spectrum
 * (deflation-spectra.png), and each component's final error (-components.png); it prints a
 * table of final errors, matvecs and wall time (of a second, untracked fit: reading errors
 * every round costs a round trip per round) and writes the numbers to deflation-spectra.json.
 *
 *     npx tsx examples/deflation-spectra.ts                 # plot: examples/out/deflation-spectra.png (--out DIR: elsewhere)
 *     LIAISON_DEFLATION_D=200 LIAISON_DEFLATION_K=8 LIAISON_DEFLATION_BUDGET=2000 npx tsx examples/deflation-spectra.ts
 *
 * Knobs: LIAISON_DEFLATION_D (1000), _K (30), _BUDGET (matvecs, 30000), _T (Parallel
 * Deflation's local steps per round, 10).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { LiaisonError, Runtime, type Tensor } from '../bridge/index.js';
import { eigengameMu, exact, hotelling, parallelDeflation } from '../plugins/index.js';
import { knownCovariance } from '../sdk/families/deflators/base.js';
import { errorSummary, errorTracker, type TrackedRound } from '../sdk/families/deflators/errors.js';
import type { Deflator } from '../sdk/families/deflators/types.js';
import { plotLines, type Series } from '../sdk/plot.js';
import { outDir, positiveInt, secs } from './env.js';
import { textTable } from './tables.js';

const D = positiveInt('LIAISON_DEFLATION_D', 1000);
const K = positiveInt('LIAISON_DEFLATION_K', 30);
const BUDGET = positiveInt('LIAISON_DEFLATION_BUDGET', 30_000);
const T = positiveInt('LIAISON_DEFLATION_T', 10);
const SEED = 0;
const OUT = outDir(process.argv.slice(2)); // --out DIR, default examples/out

/** A log axis cannot show 0. */
const floor = (y: number) => Math.max(y, 1e-12);

const SPECTRA = [
  { name: 'λ_k = k^-0.5', law: (k: number) => k ** -0.5 },
  { name: 'λ_k = 1.1^-k', law: (k: number) => 1.1 ** -k },
];

/** Parallel Deflation's rounds within the budget: T per joined worker per round, +1 as each joins. */
function roundsWithin(budget: number): number {
  let used = 0;
  let rounds = 0;
  for (;;) {
    const next = rounds + 1;
    const cost = T * Math.min(next, K) + (next <= K ? 1 : 0);
    if (used + cost > budget) break;
    used += cost;
    rounds = next;
  }
  if (rounds < K) throw new LiaisonError('E_ARG', `LIAISON_DEFLATION_BUDGET=${budget} gives parallel-deflation ${rounds} rounds, fewer than K = ${K} (worker K joins at round K); raise the budget, or lower K or T`);
  return rounds;
}

/** The four methods, each at the budget (exact aside: it is the reference). */
function methods(): { label: string; make: () => Deflator }[] {
  const perComponent = Math.floor(BUDGET / K);
  const L = roundsWithin(BUDGET);
  return [
    { label: 'exact (eigh)', make: () => exact() },
    { label: `hotelling (t=${perComponent - 2})`, make: () => hotelling({ steps: perComponent - 2 }) },
    { label: `parallel-deflation (T=${T}, L=${L})`, make: () => parallelDeflation({ localSteps: T, rounds: L }) },
    { label: `eigengame-mu (${perComponent - 1} steps)`, make: () => eigengameMu({ steps: perComponent - 1 }) },
  ];
}

interface Row { spectrum: string; method: string; max: number; rms: number; errors: number[]; matvecs: number; rounds: number; seconds: number; reach: number | null; history: TrackedRound[] }

/** Σ = Q diag(λ) Qᵀ (d, d) f32 with its true top-K eigenvectors Q[:, :K]. */
function problem(rt: Runtime, law: (k: number) => number): { cov: Tensor; reference: Tensor } {
  const { cov, q } = knownCovariance(rt, Array.from({ length: D }, (_, i) => law(i + 1)), { seed: 1 });
  return { cov, reference: q.narrow(1, 0, K) };
}

async function main(): Promise<void> {
  if (K > D) throw new LiaisonError('E_ARG', `LIAISON_DEFLATION_K (${K}) must be at most LIAISON_DEFLATION_D (${D})`);
  const t0 = performance.now();
  const list = methods();
  const rt = await Runtime.start();
  console.log(`runtime: torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  console.log(`d = ${D}, K = ${K}, budget ${BUDGET.toLocaleString('en-US')} matrix-vector products per method`);
  const rows: Row[] = [];
  try {
    for (const s of SPECTRA) {
      const { cov, reference } = problem(rt, s.law);
      for (const m of list) {
        const tr = errorTracker(reference);
        const tracked = await m.make().fit({ cov, d: D, k: K }, { rt, seed: SEED, onRound: tr.onRound });
        const start = performance.now();
        const timed = await m.make().fit({ cov, d: D, k: K }, { rt, seed: SEED });
        const final = await errorSummary(reference, timed.vectors); // the read waits for the fit
        const seconds = (performance.now() - start) / 1000;
        const reach = tr.history.find((h) => h.max <= 1e-3)?.matvecs ?? null;
        rows.push({ spectrum: s.name, method: m.label, max: final.max, rms: final.rms, errors: final.errors, matvecs: timed.matvecs, rounds: tracked.rounds, seconds, reach, history: tr.history });
      }
      cov.free();
      reference.free();
    }
  } finally {
    await rt.close();
  }

  const head = ['spectrum', 'method', 'max error', 'RMS error', 'matvecs', 'rounds', 'wall s', 'matvecs to max ≤ 1e-3'];
  const body = rows.map((r) => [r.spectrum, r.method, r.max.toExponential(2), r.rms.toExponential(2), r.matvecs.toLocaleString('en-US'), String(r.rounds), r.seconds.toFixed(2), r.reach === null ? '—' : r.reach.toLocaleString('en-US')]);
  console.log(textTable(head, body, { right: head.map((_, i) => i >= 2) }));

  mkdirSync(OUT, { recursive: true });
  writeFileSync(join(OUT, 'deflation-spectra.json'), JSON.stringify({ d: D, k: K, budget: BUDGET, localSteps: T, rows }, null, 1));
  const series: Series[] = rows.flatMap((r) => {
    const panel = SPECTRA.findIndex((s) => s.name === r.spectrum);
    const x = r.history.map((h) => h.matvecs);
    return [
      { label: `${r.method} max`, x, y: r.history.map((h) => floor(h.max)), style: r.history.length === 1 ? 'o' : '-', panel },
      ...(r.history.length > 1 ? [{ label: `${r.method} RMS`, x, y: r.history.map((h) => floor(h.rms)), style: '--', panel }] : []),
    ];
  });
  const panels = SPECTRA.map((s) => `d = ${D}, K = ${K}, ${s.name}`);
  const ylabel = 'error √(2 − 2|⟨u, v⟩|)';
  const byComponent: Series[] = rows.map((r) => ({
    label: r.method, x: r.errors.map((_, j) => j + 1), y: r.errors.map(floor), style: 'o-', panel: SPECTRA.findIndex((s) => s.name === r.spectrum),
  }));
  for (const [file, spec] of [
    ['deflation-spectra.png', { series, xlabel: 'matrix-vector products', ylabel: `${ylabel}: max (solid), RMS (dashed)` }],
    ['deflation-spectra-components.png', { series: byComponent, xlabel: 'component k', ylabel: `${ylabel}, final` }],
  ] as const) {
    const png = join(OUT, file);
    const drawn = await plotLines({ path: png, logy: true, panels, ...spec }).then(() => true, (e: unknown) => {
      console.log(`plot: not drawn (${(e as Error).message})`);
      return false;
    });
    if (drawn) console.log(`plot: ${relative(process.cwd(), png)}`);
  }
  console.log(`runtime stopped; ${secs(t0)} in all.`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
