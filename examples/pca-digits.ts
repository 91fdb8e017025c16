/**
 * PCA of scikit-learn's handwritten digits with a deflator underneath, against
 * scikit-learn's own PCA of the same arrays.
 *
 * The digits (1,797 images of 8×8 pixels scaled to [0, 1]) are loaded by the runtime; the
 * SDK's `PCA` fits the top components with the chosen deflator (one `eigh` by default, or
 * an iterative method); `examples/sklearn_pca.py` runs `sklearn.decomposition.PCA` on the
 * same arrays in the project's Python. It prints a table of both, the largest component
 * difference up to sign and the largest explained-variance-ratio difference, and writes a
 * PNG of both spectra. Exit status 1 when the agreement targets are missed (components
 * equal up to sign within 1e-4 per entry, ratios within 1e-4).
 *
 *     npx tsx examples/pca-digits.ts                              # exact (eigh), 10 components
 *     npx tsx examples/pca-digits.ts --deflator hotelling         # or parallel-deflation, eigengame-mu
 *     npx tsx examples/pca-digits.ts --components 20 --config '{"steps": 800}'
 *
 * Plot: examples/out/pca-digits-<deflator>.png (`--out DIR` writes it elsewhere).
 */
import { execFile } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { LiaisonError, resolvePython, Runtime, runtimeEnv } from '../bridge/index.js';
import '../plugins/index.js'; // registers every deflator, looked up by name below
import { Dataset, getPlugin, PCA, plotLines, type Deflator } from '../sdk/index.js';
import { flag, outDir, secs } from './env.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const TOL_COMPONENTS = 1e-4;
const TOL_RATIO = 1e-4;

/**
 * Budgets that reach the targets on the digits' 10 components with room to spare (about
 * 1e-6 per entry measured), whose top eigenvalues are close (λ_{j+1}/λ_j up to 0.92):
 * power-type methods need a hundred steps or more per component. More components may need
 * more (`--config`).
 */
const CONFIGS: Record<string, Record<string, unknown>> = {
  exact: {},
  hotelling: { steps: 200 },
  'parallel-deflation': { localSteps: 10, rounds: 40, mode: 'power' },
  'eigengame-mu': { steps: 2000 },
};

interface Sklearn {
  sklearn: string;
  solver: string;
  components: number[][];
  explained_variance_ratio: number[];
  explained_variance: number[];
  mean: number[];
  noise_variance: number;
}

/** scikit-learn's PCA of the same arrays, in the project's Python. */
async function sklearnPCA(k: number): Promise<Sklearn> {
  const run = promisify(execFile);
  const { stdout } = await run(resolvePython(), [join(HERE, 'sklearn_pca.py'), '--components', String(k)], { env: runtimeEnv({ OMP_NUM_THREADS: '1' }), encoding: 'utf8', maxBuffer: 16 << 20 });
  return JSON.parse(stdout) as Sklearn;
}

const maxAbs = (a: readonly number[], b: readonly number[]) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);

async function main(argv: string[]): Promise<number> {
  const method = flag(argv, 'deflator') ?? 'exact';
  const k = Number(flag(argv, 'components') ?? 10);
  if (!Number.isInteger(k) || k < 1 || k > 64) throw new LiaisonError('E_ARG', `--components must be an integer in 1..64, got ${k}`, { param: 'components' });
  const config = { ...(CONFIGS[method] ?? {}), ...(JSON.parse(flag(argv, 'config') ?? '{}') as Record<string, unknown>) };
  const out = outDir(argv);
  const deflator = getPlugin('deflator', method)(config) as Deflator;

  const reference = sklearnPCA(k); // runs beside the runtime
  const t0 = performance.now();
  const rt = await Runtime.start();
  try {
    const digits = await Dataset.builtin(rt, 'digits');
    console.log(`data: scikit-learn digits, ${digits.xShape[0]} images of ${digits.xShape[1]} pixels; runtime torch ${rt.info.torch} on ${rt.info.device}`);
    const pca = new PCA(rt, { nComponents: k, deflator, seed: 0 });
    const t1 = performance.now();
    await pca.fit(digits.x);
    const fitTime = `${(performance.now() - t1).toFixed(0)} ms`;
    const [comps, ratio, ev, mean] = await Promise.all([pca.components, pca.explainedVarianceRatio, pca.explainedVariance, pca.mean].map(async (t) => Array.from((await t.to('f64').toArray()) as Float64Array)));
    const { rounds, matvecs } = pca.cost;
    console.log(`liaison PCA with '${method}' ${JSON.stringify(config)}: ${k} components in ${fitTime} (${rounds} round${rounds === 1 ? '' : 's'}, ${matvecs.toLocaleString('en-US')} matrix-vector products)`);
    const sk = await reference;
    console.log(`scikit-learn ${sk.sklearn} PCA (solver '${sk.solver}') on the same arrays, float64`);

    const d = mean.length;
    const rows: string[] = [];
    let compDiff = 0, signs = 0, cum = 0, cumSk = 0;
    rows.push('  component   variance (liaison / sklearn)     ratio (liaison / sklearn)     cumulative   max |Δ entry| (up to sign)');
    for (let j = 0; j < k; j++) {
      const ours = comps.slice(j * d, (j + 1) * d);
      const ref = sk.components[j];
      const same = maxAbs(ours, ref);
      const flipped = maxAbs(ours, ref.map((x) => -x));
      if (same <= flipped) signs++;
      const diff = Math.min(same, flipped);
      compDiff = Math.max(compDiff, diff);
      cum += ratio[j];
      cumSk += sk.explained_variance_ratio[j];
      rows.push(`  ${String(j + 1).padStart(9)}   ${ev[j].toFixed(6)} / ${sk.explained_variance[j].toFixed(6)}     ` +
        `${ratio[j].toFixed(6)} / ${sk.explained_variance_ratio[j].toFixed(6)}     ${cum.toFixed(4)}       ${diff.toExponential(2)}`);
    }
    console.log(rows.join('\n'));
    const ratioDiff = maxAbs(ratio, sk.explained_variance_ratio);
    const evDiff = maxAbs(ev, sk.explained_variance);
    const meanDiff = maxAbs(mean, sk.mean);
    const okComp = compDiff <= TOL_COMPONENTS, okRatio = ratioDiff <= TOL_RATIO;
    console.log(`max |component difference| up to sign: ${compDiff.toExponential(2)} (target <= ${TOL_COMPONENTS}) ${okComp ? 'ok' : 'MISSED'}`);
    console.log(`max |explained variance ratio difference|: ${ratioDiff.toExponential(2)} (target <= ${TOL_RATIO}) ${okRatio ? 'ok' : 'MISSED'}`);
    console.log(`signs as scikit-learn's: ${signs} of ${k}; max |explained variance difference| ${evDiff.toExponential(2)}; ` +
      `max |mean difference| ${meanDiff.toExponential(2)}; noise variance ${pca.noiseVariance.toFixed(6)} / ${sk.noise_variance.toFixed(6)}`);
    console.log(`cumulative explained variance of ${k} components: ${cum.toFixed(4)} (sklearn ${cumSk.toFixed(4)})`);

    mkdirSync(out, { recursive: true });
    const x = Array.from({ length: k }, (_, j) => j + 1);
    const cumsum = (a: readonly number[]) => a.map(((s) => (v: number) => (s += v))(0));
    const plot = await plotLines({
      path: join(out, `pca-digits-${method}.png`),
      title: `PCA of the digits: liaison (${method}) vs scikit-learn`,
      xlabel: 'component',
      panels: ['explained variance ratio', 'cumulative explained variance ratio'],
      series: [
        { label: `liaison (${method})`, x, y: ratio, style: 'o-', panel: 0 },
        { label: 'scikit-learn', x, y: sk.explained_variance_ratio.slice(0, k), style: 'x--', panel: 0 },
        { label: `liaison (${method})`, x, y: cumsum(ratio), style: 'o-', panel: 1 },
        { label: 'scikit-learn', x, y: cumsum(sk.explained_variance_ratio.slice(0, k)), style: 'x--', panel: 1 },
      ],
    });
    console.log(`plot: ${plot}`);
    pca.free();
    digits.free();
    return okComp && okRatio ? 0 : 1;
  } finally {
    await rt.close();
    console.log(`runtime stopped; ${secs(t0)} in all.`);
  }
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e));
    process.exitCode = 2;
  },
);
