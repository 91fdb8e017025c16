/**
 * AdaPaD's deflation targets as one auxiliary loss (plugins/adapters/adapad.ts; Su, Liao,
 * Kyrillidis, "AdaPaD: Adaptive Parallel Deflation for PEFT with Self-Correcting Rank
 * Discovery"). Pure tensor functions, traced into the Trainer's step.
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
 * and since ⟨u_k v_kᵀ, u_j v_jᵀ⟩_F = (u_k·u_j)(v_k·v_j) it needs only K×K Gram products:
 * never an out×in matrix. Exact deflation for a quadratic loss with Hessian c·I, the
 * matrix-approximation setting of the paper's analysis.
 *
 * Modules are batched: their 0/1 states are (M, K) tensors, their Gram products are stacked
 * to (M, K, K), so the op count per step grows by a few ops per module, not by the formula's.
 */
import type { Runtime, Tensor } from '../../../bridge/index.js';
import { noGrad } from '../../program.js';

/** One module's components as matrices: a_k = A[k], b_k = B[:, k]. */
export interface RankOneFactors {
  /** (K, n): component k's input direction in row k (a conv's (K, in, …kernel) flattened to (K, in·∏kernel)). */
  A: Tensor;
  /** (m, K): component k's output direction in column k (a conv's (out, K, 1, …) flattened to (out, K)). */
  B: Tensor;
}

/** A conv's factors as matrices (`conv` true): A (K, in, …kernel) → (K, in·∏kernel), B (out, K, 1, …) → (out, K); a linear's as they are. */
export function asMatrices(f: RankOneFactors, K: number, conv: boolean): RankOneFactors {
  return conv ? { A: f.A.reshape([K, -1]), B: f.B.reshape([-1, K]) } : { A: f.A, B: f.B };
}

/** The constant (K, K) masks the coefficients are made of: `[j < k]` and `−[j ≠ k]`, `[j = k]` (row k, column j). */
export function deflationMasks(rt: Runtime, K: number): { lower: Tensor; negOff: Tensor; eye: Tensor } {
  const eye = rt.eye(K);
  return { lower: rt.ones([K, K]).tril(-1), negOff: eye.sub(1), eye };
}

/**
 * The coefficient tensors of the loss, both (M, K, K) with row k (the component trained) and
 * column j: `hat[k, j] = e_k e_j [j < k]` (predecessors' broadcast estimates) and
 * `live[k, j] = −e_k s_j [j ≠ k] + ghost_k [j = k]` (the live components, stop-gradient;
 * ghost_k = e_k (1 − s_k)). `exists`, `inSum`, `ghost`: (M, K) f32 0/1.
 */
export function deflationCoefficients(masks: { lower: Tensor; negOff: Tensor; eye: Tensor }, exists: Tensor, inSum: Tensor, ghost: Tensor): { hat: Tensor; live: Tensor } {
  const ek = exists.unsqueeze(2);
  const hat = masks.lower.mul(ek).mul(exists.unsqueeze(1));
  const live = masks.negOff.mul(ek).mul(inSum.unsqueeze(1)).add(masks.eye.mul(ghost.unsqueeze(2)));
  return { hat, live };
}

/**
 * Σ_m w_m Σ_k e_k ⟨sg(D_k), P_k⟩ / scale_m² over the modules, () f32, with w_m = c·scale_m²
 * (`weights`: a number when every module has the same c and scale, else a tensor that
 * broadcasts to (M, K, K): (M, 1, 1) per module, (M, 1, K) per component j, each term of D_k
 * then weighted by its own component's curvature c_j): its gradient with respect to each
 * module's a_k and b_k is what c·D_k gives through P_k = scale·b_k a_kᵀ (see the file's
 * comment). `live`: the factors being trained, as matrices; `hat`: their copies at
 * the last broadcast, A (K, n) and B (m, K), no gradient. `coef` from
 * {@link deflationCoefficients}. Must run inside a traced step: the stop-gradient copies of
 * `live` are made under {@link noGrad}, which only a trace records.
 */
export function deflationLoss(rt: Runtime, modules: readonly { live: RankOneFactors; hat: RankOneFactors }[], coef: { hat: Tensor; live: Tensor }, weights: number | Tensor): Tensor {
  const gram = { bHat: [] as Tensor[], aHat: [] as Tensor[], bSg: [] as Tensor[], aSg: [] as Tensor[] };
  for (const { live, hat } of modules) {
    const sg = noGrad(rt, () => ({ A: live.A.clone(), B: live.B.clone() }));
    const bt = live.B.transpose(0, 1); // (K, m)
    // [k, j] = b_k·x_j and a_k·x_j: the component trained in rows
    gram.bHat.push(bt.matmul(hat.B));
    gram.aHat.push(rt.call('linear', [live.A, hat.A]) as Tensor);
    gram.bSg.push(bt.matmul(sg.B));
    gram.aSg.push(rt.call('linear', [live.A, sg.A]) as Tensor);
  }
  const stack = (ts: Tensor[]) => (ts.length === 1 ? ts[0].unsqueeze(0) : rt.stack(ts)); // (M, K, K)
  const terms = stack(gram.bHat).mul(stack(gram.aHat)).mul(coef.hat).add(stack(gram.bSg).mul(stack(gram.aSg)).mul(coef.live));
  return typeof weights === 'number' ? terms.sum().mul(weights) : terms.mul(weights).sum();
}

/**
 * Round bookkeeping: after the step that ends a round (`due` () f32 1, else 0), every
 * component's broadcast copy becomes its current value (lerp_ is exact at 0 and 1). Written
 * in place; `live` and `hat` as matrices.
 */
export function broadcastAtRoundEnd(due: Tensor, live: RankOneFactors, hat: RankOneFactors): void {
  hat.A.lerp_(live.A, due);
  hat.B.lerp_(live.B, due);
}
