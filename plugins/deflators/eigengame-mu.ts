/**
 * μ-EigenGame: PCA as a game whose k players update their vectors all at once (Gemp,
 * McWilliams, Vernade, Graepel, "EigenGame Unloaded: When playing games is better than
 * optimizing", ICLR 2022, https://arxiv.org/abs/2102.04152) — the model-parallel solver
 * Parallel Deflation is compared with.
 *
 * Every step, player i moves along
 *
 *     Δ_i = C v_i − Σ_{j<i} (v_iᵀ C v_j) v_j  =  [I − Σ_{j<i} v_j v_jᵀ] C v_i
 *
 * (the two forms are the same since C is symmetric: (v_iᵀCv_j) v_j = v_j v_jᵀ C v_i), with
 * the parents' current vectors; `riemannian` first removes Δ_i's component along v_i, as
 * the sphere gradient of DeepMind's EigenGame code does; then v_i ← normalize(v_i + η Δ_i).
 * The step is η = lr / max_i v_iᵀCv_i: the largest current Rayleigh value stands in for
 * ‖C‖ so that lr is free of the matrix's scale (our choice; the paper tunes a plain η).
 *
 * Rounds: a block of `roundSteps` steps. Matvecs: k per step (C·V for all players), and k
 * at the end for the values. Each round is one traced program run.
 *
 * ```ts
 * const r = await eigengameMu({ steps: 2000 }).fit({ cov, d, k: 30 }, { rt, seed: 0 });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { type IterationContext, IterativeDeflatorBase, type IterationProblem, type Iterated, normalizeColumns, randomStarts, rayleigh, sortedResult } from '../../sdk/families/deflators/base.js';
import { definePlugin } from '../../sdk/plugin.js';
import { define, type Program } from '../../sdk/program.js';

/** Config of {@link EigengameMu}. */
export const EigengameMuConfig = Type.Object({
  lr: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 2, default: 1.5, description: 'step size η in units of 1 / max_i v_iᵀCv_i (scale-free; stable below 2)' }),
  steps: Type.Integer({ minimum: 1, default: 1000, description: 'update steps; each moves all k players (k matrix–vector products)' }),
  roundSteps: Type.Integer({ minimum: 1, default: 10, description: 'steps per round (one onRound call and one program run each)' }),
  riemannian: Type.Boolean({ default: true, description: 'project Δ_i onto the sphere\'s tangent space at v_i before the step' }),
  float64: Type.Boolean({ default: false, description: 'iterate in float64; results come back in the input dtype' }),
}, { additionalProperties: false });
export type EigengameMuConfig = Static<typeof EigengameMuConfig>;

/** All players in parallel, each penalized by its parents' current vectors. */
export class EigengameMu extends IterativeDeflatorBase<EigengameMuConfig> {
  /** `n` μ-EigenGame steps on V (d, k) against C (d, d). */
  private block(c: Tensor, n: number): Program {
    const { lr, riemannian } = this.config;
    return define(c.rt, { name: `eigengame-mu.${n}`, inputs: { v: {} } }, ({ v }) => {
      for (let s = 0; s < n; s++) {
        const cv = c.matmul(v); // (d, k)
        const m = v.T.matmul(cv); // (k, k): m[j, i] = v_jᵀ C v_i
        const parents = (c.rt.call('ones_like', [m]) as Tensor).triu(1); // [j, i] = 1 for j < i
        let delta = cv.sub(v.matmul(m.mul(parents)));
        if (riemannian) delta = delta.sub(v.mul(v.mul(delta).sum(0, true)));
        const rho = v.mul(cv).sum(0).amax().clamp(1e-30); // () largest Rayleigh value
        v = normalizeColumns(v.add(delta.mul(rho.reciprocal().mul(lr))));
      }
      return v;
    });
  }

  protected async iterate({ cov: c, d, k, dtype }: IterationProblem, ctx: IterationContext): Promise<Iterated> {
    const { rt, seed } = ctx;
    const { steps, roundSteps } = this.config;
    const full = this.block(c, Math.min(roundSteps, steps));
    const rest = steps % roundSteps && steps > roundSteps ? this.block(c, steps % roundSteps) : null;
    const rounds = Math.ceil(steps / roundSteps);
    let v = randomStarts(rt, d, k, seed, dtype); // (d, k)
    let done = 0;
    try {
      for (let r = 1; r <= rounds; r++) {
        const n = Math.min(roundSteps, steps - done);
        const next = (n === roundSteps || !rest ? full : rest).run({ v }) as Tensor;
        v.free();
        v = next;
        done += n;
        await ctx.report(r, v, done * k);
      }
      return { ...sortedResult(v, rayleigh(c, v)), rounds, matvecs: (steps + 1) * k };
    } finally {
      full.free();
      rest?.free();
    }
  }
}

/** The `eigengame-mu` registration: `eigengameMu({ lr, steps })`. */
export const eigengameMu = definePlugin({
  name: 'eigengame-mu',
  version: '1.0.0',
  family: 'deflator',
  schema: EigengameMuConfig,
  description: 'μ-EigenGame: all k players updated in parallel, each penalized by its parents (the model-parallel baseline)',
  paper: 'https://arxiv.org/abs/2102.04152',
  create: (config, meta) => new EigengameMu(config, meta),
});
