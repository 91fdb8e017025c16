/** Shared base of the Deflator family. */
import type { Tensor } from '../../../bridge/index.js';
import { PluginBase } from '../../plugin.js';
import type { DeflationContext, DeflationProblem, DeflationResult, Deflator } from './types.js';

export abstract class DeflatorBase<C> extends PluginBase<C> implements Deflator<C> {
  abstract fit(problem: DeflationProblem, ctx: DeflationContext): Promise<DeflationResult>;
}

/** Rayleigh quotients vᵀΣv for the columns of `vectors` (d, k) -> (k,). */
export function rayleigh(cov: Tensor, vectors: Tensor): Tensor {
  return cov.matmul(vectors).mul(vectors).sum(0);
}

/** Columns scaled to unit norm: (d, k) -> (d, k). */
export function normalizeColumns(v: Tensor): Tensor {
  return v.div(v.norm(2, 0, true).clamp(1e-30));
}
