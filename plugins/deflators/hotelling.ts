/**
 * Inexact Hotelling's deflation with power iteration as its subroutine (Liao, Kim, Barnum,
 * Kyrillidis, "On the Error-Propagation of Inexact Hotelling's Deflation for Principal
 * Component Analysis", ICML 2024, https://arxiv.org/abs/2310.04283).
 *
 * Sequential: component j is the top eigenvector of Σ_j found by `steps` (t) power
 * iterations from a random start, then Σ_{j+1} = Σ_j − (v_jᵀΣ_j v_j) v_j v_jᵀ. The error
 * left in v_j stays in every later Σ_{j'}, so errors compound from component to
 * component — what the paper bounds, and what the synthetic example shows.
 *
 * Rounds: one per component (k); onRound gets the components found so far and, for the
 * rest, their untouched random starts. Matvecs: t + 1 per component (the +1 is the
 * deflation's Rayleigh value), and k at the end for the values on the original matrix.
 * Each component's t steps are one traced program run, so a fit costs no round trip.
 *
 * ```ts
 * const r = await hotelling({ steps: 200 }).fit({ cov, d, k: 10 }, { rt, seed: 0 });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { type IterationContext, IterativeDeflatorBase, type IterationProblem, type Iterated, normalizeColumns, randomStarts, rayleigh, sortedResult } from '../../sdk/families/deflators/base.js';
import { definePlugin } from '../../sdk/plugin.js';
import { define } from '../../sdk/program.js';

/** Config of {@link Hotelling}. */
export const HotellingConfig = Type.Object({
  steps: Type.Integer({ minimum: 1, default: 100, description: 't: power-iteration steps per component (the inexact subroutine)' }),
  float64: Type.Boolean({ default: false, description: 'iterate and deflate in float64; results come back in the input dtype' }),
}, { additionalProperties: false });
export type HotellingConfig = Static<typeof HotellingConfig>;

/** One component at a time, each deflating the matrix the next one sees. */
export class Hotelling extends IterativeDeflatorBase<HotellingConfig> {
  protected async iterate({ cov: sigma, d, k, dtype }: IterationProblem, ctx: IterationContext): Promise<Iterated> {
    const { rt, seed } = ctx;
    const { steps } = this.config;
    const starts = randomStarts(rt, d, k, seed, dtype); // (d, k)
    // t power steps on Σ_j (d, d) from x (d, 1), then the deflated Σ_{j+1}
    const component = define(rt, { name: 'hotelling.component', inputs: { a: {}, x: {} } }, ({ a, x }) => {
      for (let t = 0; t < steps; t++) x = normalizeColumns(a.matmul(x));
      const value = x.mul(a.matmul(x)).sum();
      return { x, next: a.sub(x.matmul(x.T).mul(value)) };
    });
    const found: Tensor[] = [];
    let a = sigma;
    let matvecs = 0;
    try {
      for (let j = 0; j < k; j++) {
        const out = component.run({ a, x: starts.narrow(1, j, 1) });
        if (a !== sigma) a.free();
        a = out.next;
        found.push(out.x);
        matvecs += steps + 1;
        if (ctx.reporting) {
          const v = rt.cat(j + 1 < k ? [...found, starts.narrow(1, j + 1, k - j - 1)] : found, 1);
          await ctx.report(j + 1, v, matvecs);
          v.free();
        }
      }
      if (a !== sigma) a.free();
      const vectors = rt.cat(found, 1); // (d, k)
      const out = sortedResult(vectors, rayleigh(sigma, vectors)); // values on the original Σ
      return { ...out, rounds: k, matvecs: matvecs + k };
    } finally {
      component.free();
    }
  }
}

/** The `hotelling` registration: `hotelling({ steps })`. */
export const hotelling = definePlugin({
  name: 'hotelling',
  version: '1.0.0',
  family: 'deflator',
  schema: HotellingConfig,
  description: "inexact Hotelling's deflation: one component at a time by t power-iteration steps, each deflating the matrix for the next",
  paper: 'https://arxiv.org/abs/2310.04283',
  create: (config, meta) => new Hotelling(config, meta),
});
