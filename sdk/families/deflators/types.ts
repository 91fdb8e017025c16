/**
 * The `Deflator` family: the top-k eigenpairs of a symmetric positive semi-definite matrix,
 * one component at a time (Hotelling deflation, Parallel Deflation, EigenGame; docs/architecture.md, "Plugins and families").
 *
 * A plugin writes `fit()`. Progress is reported per round through `ctx.onRound`, so the
 * per-component error against exact eigenvectors can be tracked as the method runs.
 */
import type { Runtime, Tensor } from '../../../bridge/index.js';
import type { PluginInstance } from '../../plugin.js';

export interface DeflationProblem {
  /** (d, d) symmetric PSD, f32 or f64: a covariance. */
  cov: Tensor;
  /** Dimension d. */
  d: number;
  /** Components wanted, 1 ≤ k ≤ d. */
  k: number;
  /**
   * (n, d) the data rows behind `cov`, centered (so `cov` = dataᵀdata / (n − 1) as PCA makes it, or / n: the eigenvectors are the same), same dtype.
   * Optional: only stochastic methods that draw minibatches of rows need it
   * (`parallel-deflation` in `hebbian` mode); the others use `cov` alone.
   */
  data?: Tensor;
}

export interface DeflationContext {
  rt: Runtime;
  /** Seed for random starts, so a fit is reproducible. */
  seed: number;
  /**
   * Called after each round (an outer iteration of the method) with the current estimates
   * (d, k), columns unit-norm; awaited, so the caller may read them. `matvecs` counts
   * matrix–vector products so far (budgets compare methods fairly). `vectors` may be freed
   * once the call returns: `clone()` it to keep it. A method that reads nothing itself
   * costs no round trip per round unless this callback reads.
   */
  onRound?(round: number, vectors: Tensor, matvecs: number): void | Promise<void>;
}

export interface DeflationResult {
  /** (d, k): column j estimates the eigenvector of the j-th largest eigenvalue; unit norm. */
  vectors: Tensor;
  /** (k,): the matching eigenvalues (Rayleigh quotients), descending. */
  values: Tensor;
  /** Rounds run (1 for a direct method). */
  rounds: number;
  /** Matrix–vector products used (d per column for a direct method's full matrix). */
  matvecs: number;
}

export interface Deflator<C = unknown> extends PluginInstance<C> {
  /** Required: the top-k eigenpairs of `problem.cov`. */
  fit(problem: DeflationProblem, ctx: DeflationContext): Promise<DeflationResult>;
}
