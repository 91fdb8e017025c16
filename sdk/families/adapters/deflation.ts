/**
 * AdaPaD's deflation targets as one auxiliary loss per module (plugins/adapters/adapad.ts;
 * Su, Liao, Kyrillidis, "AdaPaD: Adaptive Parallel Deflation for PEFT with Self-Correcting
 * Rank Discovery"). Pure tensor functions, traced into the Trainer's step.
 *
 * A module's update is a sum of rank-1 components P_k = scale · b_k a_kᵀ (b_k = B[:, k],
 * a_k = A[k] flattened), k in join order. Component k trains against the deflation target
 * built from its predecessors' latest broadcast estimates P̂_j (j < k; copies refreshed once
 * per round, the worker shape of Parallel Deflation). With G = ∂L/∂ΔW at the live sum (what
 * autograd gives through the forward) and a local quadratic model of curvature c·I, the
 * gradient of the loss at ΔW_{≤k} = Σ_{j<k} P̂_j + P_k is
 *
 *     G + c·D_k,   D_k = Σ_{j<k} e_j (P̂_j − s_j P_j) + (1 − s_k) P_k − Σ_{j>k} s_j P_j
 *
 * with e_j = 1 for a component that exists (in the sum or a ghost), s_j = 1 for one in the
 * forward sum. For a component in the sum (s_k = 1) this is the contract's
 * Σ_{j<k}(P̂_j − P_j) − Σ_{j>k} P_j; a ghost (s_k = 0, in advance learning) adds nothing to
 * the forward, so G does not hold its own P_k and D_k adds it back. The loss whose gradient
 * with respect to each P_k is c·e_k·D_k is c · Σ_k e_k ⟨sg(D_k), P_k⟩_F (sg: stop-gradient),
 * and since ⟨u_j v_jᵀ, u_k v_kᵀ⟩_F = (u_j·u_k)(v_j·v_k) it needs only K×K Gram products
 * (B̂ᵀB ⊙ ÂAᵀ): never an out×in matrix. Exact deflation for a quadratic loss with Hessian
 * c·I, the matrix-approximation setting of the paper's analysis.
 */
import type { Runtime, Tensor } from '../../../bridge/index.js';
import { noGrad } from '../../program.js';

/** One module's components as the deflation sees them: a_k = A[k], b_k = B[:, k]. */
export interface RankOneFactors {
  /** (K, n): component k's input direction in row k (a conv's (K, in, …kernel) flattened to (K, in·∏kernel)). */
  A: Tensor;
  /** (m, K): component k's output direction in column k (a conv's (out, K, 1, …) flattened to (out, K)). */
  B: Tensor;
}

/** A conv's factors as matrices: A (K, in, …kernel) → (K, in·∏kernel), B (out, K, 1, …) → (out, K). */
export function asMatrices(f: RankOneFactors, K: number): RankOneFactors {
  return { A: f.A.reshape([K, -1]), B: f.B.reshape([-1, K]) };
}

/**
 * The coefficient matrices of the loss, both (K, K) with rows j and columns k:
 * `hat[j, k] = e_j e_k [j < k]` (predecessors' broadcast estimates) and
 * `live[j, k] = e_k (−s_j [j ≠ k] + (1 − s_k)[j = k])` (the live components, stop-gradient).
 * `exists`, `inSum`: (K,) f32 0/1.
 */
export function deflationCoefficients(rt: Runtime, exists: Tensor, inSum: Tensor, K: number): { hat: Tensor; live: Tensor } {
  const upper = rt.ones([K, K]).triu(1); // [j < k]
  const eye = rt.eye(K);
  const ek = exists.reshape([1, K]);
  const hat = upper.mul(exists.reshape([K, 1])).mul(ek);
  const offDiag = eye.neg().add(1).mul(inSum.reshape([K, 1])).neg(); // −s_j [j ≠ k]
  const self = eye.mul(inSum.neg().add(1).reshape([1, K])); // (1 − s_k)[j = k]
  return { hat, live: offDiag.add(self).mul(ek) };
}

/**
 * c · Σ_k e_k ⟨sg(D_k), P_k⟩_F for one module, () f32: its gradient with respect to a_k and
 * b_k is what c·D_k gives through P_k = scale · b_k a_kᵀ (see the file's comment).
 * `live`: the factors being trained (matrices, see {@link asMatrices}); `hat`: their copies
 * at the last broadcast (no gradient). Must run inside a traced step: the stop-gradient
 * copies of `live` are made with {@link noGrad}, which only a trace records.
 */
export function deflationLoss(rt: Runtime, live: RankOneFactors, hat: RankOneFactors, exists: Tensor, inSum: Tensor, opts: { scale: number; curvature: number; K: number }): Tensor {
  const { scale, curvature, K } = opts;
  const sg = noGrad(rt, () => ({ A: live.A.clone(), B: live.B.clone() }));
  const c = deflationCoefficients(rt, exists, inSum, K);
  // gram(x, y)[j, k] = ⟨b^x_j a^xᵀ_j, b^y_k a^yᵀ_k⟩ = (b^x_j · b^y_k)(a^x_j · a^y_k)
  const gram = (x: RankOneFactors, y: RankOneFactors) => x.B.transpose(0, 1).matmul(y.B).mul(x.A.matmul(y.A.transpose(0, 1)));
  const terms = gram(hat, live).mul(c.hat).add(gram(sg, live).mul(c.live));
  return terms.sum().mul(curvature * scale * scale);
}

/**
 * Round bookkeeping (one round = `localSteps` Trainer steps): after the step that ends a
 * round, every component's broadcast copy becomes its current value. `step` () f32 counts
 * from 1; the copies are written in place (call inside {@link noGrad}, as afterOptimizerStep is).
 */
export function broadcastAtRoundEnd(step: Tensor, localSteps: number, live: RankOneFactors, hat: RankOneFactors): void {
  const due = step.remainder(localSteps).eq(0);
  hat.A.copy_(live.A.where(due, hat.A));
  hat.B.copy_(live.B.where(due, hat.B));
}
