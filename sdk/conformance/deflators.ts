/**
 * Conformance suite of the Deflator family (sdk/families/deflators/types.ts).
 *
 * The problem is a seeded PSD matrix with a known spectrum, Σ = Q·diag(λ)·Qᵀ with Q from
 * the QR of a seeded Gaussian matrix, so the exact eigenvectors are Q's columns. Iterative
 * plugins reach the tolerance with enough steps: pass them in the suite's `config`
 * (`runConformance(factory, { rt, config: { steps: 300 } })`), or widen `tolerance`.
 */
import type { Runtime, Tensor } from '../../bridge/index.js';
import { knownCovariance } from '../families/deflators/base.js';
import type { DeflationResult, Deflator } from '../families/deflators/types.js';
import { type CaseDef, check, registrationCases, values } from './suite.js';

type D = Deflator;

const DIM = 16;
const K = 4;
/** Well separated at the top (gaps ≥ 2× between the first five), a decaying tail. */
const SPECTRUM = [8, 4, 2, 1, 0.5, ...Array.from({ length: DIM - 5 }, (_, i) => 0.3 * 0.8 ** i)];

interface Known { cov: Tensor; q: Tensor; lambda: number[] }

function known(rt: Runtime, seed: number): Known {
  return { ...knownCovariance(rt, SPECTRUM, { seed }), lambda: SPECTRUM };
}

async function fit(rt: Runtime, d: D, p: Known, k: number, seed: number, onRound?: (r: number, v: Tensor, m: number) => void | Promise<void>): Promise<DeflationResult> {
  return d.fit({ cov: p.cov, d: DIM, k }, { rt, seed, ...(onRound ? { onRound } : {}) });
}

/** √(2 − 2|⟨u, v⟩|) per column pair of (d, k) matrices, as read here. */
async function errors(u: Tensor, v: Tensor): Promise<number[]> {
  const dots = await values(u.mul(v.to('f32')).sum(0));
  return dots.map((c) => Math.sqrt(Math.max(0, 2 - 2 * Math.min(1, Math.abs(c)))));
}

async function shapeOf(t: Tensor): Promise<string> {
  return (await t.info()).shape.join(',');
}

/** The Deflator cases. */
export function deflatorCases(): CaseDef<D>[] {
  return [
    ...registrationCases<D>(),
    {
      name: 'fit(): vectors (d, k) unit norm and mutually orthogonal to 1e-3, values (k,) descending',
      async run({ rt, plugin, seed }) {
        const r = await fit(rt, plugin(), known(rt, seed), K, seed);
        const shape = await shapeOf(r.vectors);
        check(shape === `${DIM},${K}`, `vectors have shape [${shape}], expected [${DIM},${K}] (d, k)`);
        const v = r.vectors.to('f32');
        const gram = await values(v.T.matmul(v).sub(rt.eye(K)).abs());
        const worst = Math.max(...gram);
        check(worst <= 1e-3, `|VᵀV − I| reaches ${worst.toExponential(2)} (unit norm and orthogonality want ≤ 1e-3)`);
        const vals = await values(r.values);
        check(vals.length === K, `values has ${vals.length} entries, expected k = ${K}`);
        check(vals.every((x, i) => i === 0 || x <= vals[i - 1] + 1e-6), `values are not descending: ${vals}`);
        check(Number.isInteger(r.rounds) && r.rounds >= 1, `rounds is ${r.rounds}, expected an integer ≥ 1`);
        check(Number.isFinite(r.matvecs) && r.matvecs > 0, `matvecs is ${r.matvecs}, expected a positive count`);
      },
    },
    {
      name: 'fit(): per-component error √(2 − 2|⟨u_k, v_k⟩|) within the tolerance on a known spectrum, values match λ',
      async run({ rt, plugin, seed, options }) {
        const tol = options.tolerance ?? 0.01;
        const p = known(rt, seed);
        const r = await fit(rt, plugin(), p, K, seed);
        const errs = await errors(p.q.slice(1, 0, K), r.vectors);
        errs.forEach((e, j) => check(e <= tol, () => `component ${j}: error ${e.toExponential(2)} > tolerance ${tol} (errors ${errs.map((x) => x.toExponential(1)).join(', ')}); iterative plugins: pass more steps in the suite's config`));
        const vals = await values(r.values);
        vals.forEach((x, j) => check(Math.abs(x - p.lambda[j]) <= tol * p.lambda[0], `value ${j} is ${x}, the eigenvalue is ${p.lambda[j]}`));
      },
    },
    {
      name: 'onRound(round, vectors (d, k), matvecs) is called every round; rounds count the calls; matvecs never decrease',
      async run({ rt, plugin, seed }) {
        const calls: { round: number; shape: string; matvecs: number }[] = [];
        const r = await fit(rt, plugin(), known(rt, seed), K, seed, async (round, v, matvecs) => {
          calls.push({ round, shape: await shapeOf(v), matvecs });
        });
        check(calls.length >= 1, 'onRound was never called');
        check(calls.length === r.rounds, `onRound was called ${calls.length} times, but the result says ${r.rounds} rounds`);
        calls.forEach((c, i) => {
          check(c.shape === `${DIM},${K}`, `round ${c.round}: vectors have shape [${c.shape}], expected [${DIM},${K}] (d, k)`);
          check(i === 0 || c.matvecs >= calls[i - 1].matvecs, `matvecs went down from ${calls[i - 1]?.matvecs} to ${c.matvecs} at round ${c.round}`);
          check(i === 0 || c.round > calls[i - 1].round, `round numbers do not increase: ${calls.map((x) => x.round)}`);
        });
        check(calls[calls.length - 1].matvecs <= r.matvecs, `the last round reported ${calls[calls.length - 1].matvecs} matvecs, more than the result's ${r.matvecs}`);
      },
    },
    {
      name: 'fit(): the same seed gives the same vectors (reproducible)',
      async run({ rt, plugin, seed }) {
        const p = known(rt, seed);
        const [a, b] = [await fit(rt, plugin(), p, K, seed), await fit(rt, plugin(), p, K, seed)];
        const [va, vb] = [await values(a.vectors), await values(b.vectors)];
        const worst = Math.max(...va.map((x, i) => Math.abs(x - vb[i])));
        check(worst <= 1e-5, `two fits with seed ${seed} differ by up to ${worst.toExponential(2)}`);
      },
    },
  ];
}
