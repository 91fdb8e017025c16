/**
 * Exact eigendecomposition: the reference every deflation method is scored against.
 *
 * One symmetric eigendecomposition (`eigh`, LAPACK's divide and conquer in PyTorch) of the
 * whole matrix, the top k eigenpairs kept in descending order. Signs are made
 * deterministic the way scikit-learn's PCA does it: the entry of largest magnitude of each
 * vector is positive. The per-component error `√(2 − 2|⟨u_k, v_k⟩|)` of an iterative
 * method (Hotelling, Parallel Deflation) is measured against these vectors.
 *
 * Method: `torch.linalg.eigh`, https://pytorch.org/docs/stable/generated/torch.linalg.eigh.html;
 * sign convention: scikit-learn's `svd_flip`, https://scikit-learn.org/stable/modules/generated/sklearn.decomposition.PCA.html.
 *
 * ```ts
 * const { vectors, values } = await exact().fit({ cov, d: 64, k: 8 }, { rt, seed: 0 });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { canonicalSigns, checkK, DeflatorBase } from '../../sdk/families/deflators/base.js';
import type { DeflationContext, DeflationProblem, DeflationResult } from '../../sdk/families/deflators/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link Exact}. */
export const ExactConfig = Type.Object({
  float64: Type.Boolean({ default: true, description: 'decompose in float64 (accurate eigenvectors for close eigenvalues); results come back in the input dtype' }),
}, { additionalProperties: false });
export type ExactConfig = Static<typeof ExactConfig>;

/** Top-k eigenpairs from one full eigendecomposition; one round. */
export class Exact extends DeflatorBase<ExactConfig> {
  async fit({ cov, d, k }: DeflationProblem, ctx: DeflationContext): Promise<DeflationResult> {
    checkK(this.id, d, k);
    const { dtype } = await cov.info();
    const a = this.config.float64 ? cov.to('f64') : cov;
    const [vals, vecs] = a.eigh(); // (d,) ascending, (d, d) columns
    // the last k columns, largest eigenvalue first
    const top = vecs.slice(1, d - k, d).flip(1); // (d, k)
    const values = vals.slice(0, d - k, d).flip(0); // (k,)
    const vectors = canonicalSigns(top); // the largest-|entry| of each column positive
    const out = { vectors: vectors.to(dtype), values: values.to(dtype) };
    // a direct method reads the whole matrix: d matrix–vector products' worth per component
    const matvecs = d * k;
    await ctx.onRound?.(1, out.vectors, matvecs);
    return { ...out, rounds: 1, matvecs };
  }
}

/** The `exact` registration: `exact({ float64 })`. */
export const exact = definePlugin({
  name: 'exact',
  version: '1.0.0',
  family: 'deflator',
  schema: ExactConfig,
  description: 'exact top-k eigenpairs from one eigendecomposition (eigh), descending, deterministic signs',
  paper: 'https://pytorch.org/docs/stable/generated/torch.linalg.eigh.html',
  create: (config, meta) => new Exact(config, meta),
});
