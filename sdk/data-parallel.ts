/**
 * Data-parallel training on a runtime group (docs/distributed.md): the part of a traced
 * training step (sdk/loop-step.ts) that makes N ranks train as one runtime would on the
 * whole batch.
 *
 * Every rank replays the same step program on the same global batch (the dataset and the
 * batch order are the same on every rank: SPMD). Inside the program each rank keeps its
 * part of the batch (`dist_shard(x, 0)`: rows split as `torch.tensor_split` does, uneven
 * sizes allowed), computes its loss on it, and backward runs on that loss weighted by the
 * rank's share of the rows, n_r / n. The gradients are then summed over the ranks
 * (`dist_all_reduce_many`, one flat bucket as DDP does, the weighted loss riding in it)
 * before any afterBackward hook or the optimizer sees them, so every rank applies
 *
 *     Σ_r (n_r / n) ∇L_r = ∇L                  (L the mean loss over the n rows)
 *
 * — the gradient one runtime computes on the concatenated batch — and the parameters stay
 * identical on every rank. A loss term that is not a mean over rows (a plugin's penalty)
 * is weighted the same way and sums back to itself. The loss the step reports is the
 * weighted losses' sum over the ranks, so the non-finite guard — on a group after
 * backward, once that sum is known, still before any update — and the logged loss see
 * the global value, and every rank skips (or stops at) the same steps.
 *
 * A step with no inputs (a text sampler drawing windows inside the step) cannot shard:
 * every rank computes the same loss on the same windows, weighted 1/N — correct, with no
 * speed-up.
 *
 * The collectives skip their shape meeting (`check: false`): the same program on every
 * rank gives every rank the same gradient shapes.
 *
 * On a plain runtime {@link dataParallel} returns null and the step is traced as before
 * (the dist ops would be a group of one there: the same numbers, a few ops more).
 *
 * Randomness inside the forward pass (dropout) draws per rank on the rank's rows, so it
 * does not reproduce one runtime's draws on the whole batch; everything else does
 * (test/distributed.test.ts: 2 and 4 ranks against one runtime, to 1e-5).
 */
import type { Runtime, Tensor } from '../bridge/index.js';
import { noGrad } from './program.js';

/** The world size of `rt`: N on a runtime group, 1 on a plain runtime. */
export function worldSize(rt: Runtime): number {
  return rt.info.group?.worldSize ?? 1;
}

/** What a traced step does differently on a group; made per trace by {@link dataParallel}. */
export interface DataParallelStep {
  readonly world: number;
  /**
   * This rank's part of every input (dim 0), and its share of the rows as a () f32 weight
   * (n_r / n; 1/N when there is no input to shard). Inputs named in `keep` pass whole.
   */
  shard(inputs: Record<string, Tensor>, keep: readonly string[]): { inputs: Record<string, Tensor>; weight: Tensor };
  /** The loss backward runs on: `loss` × the rank's weight (0 for an empty shard, whose mean is NaN). */
  local(loss: Tensor, weight: Tensor): Tensor;
  /**
   * After backward: these gradients and the weighted loss summed over the ranks in one
   * collective (one flat bucket), the gradients written back in place (so every later
   * reader sees the sums); returns the global loss (no autograd).
   */
  reduce(local: Tensor, grads: readonly Tensor[]): Tensor;
}

/** The data-parallel step of `rt` when it is a group of more than one rank, else null. */
export function dataParallel(rt: Runtime): DataParallelStep | null {
  const world = worldSize(rt);
  if (world === 1) return null;
  const count = (t: Tensor) => (rt.call('ones_like', [t], { dtype: 'f32' }) as Tensor).sum();
  return {
    world,
    shard(inputs, keep) {
      const names = Object.keys(inputs).filter((k) => !keep.includes(k));
      if (!names.length) return { inputs, weight: rt.full([], 1 / world) };
      const out: Record<string, Tensor> = { ...inputs };
      for (const k of names) out[k] = rt.call('dist_shard', [inputs[k]], { dim: 0 }) as Tensor;
      // n_r / n as element counts of the first input: every row has as many elements
      const first = names[0];
      const weight = noGrad(rt, () => count(out[first]).div(count(inputs[first])));
      return { inputs: out, weight };
    },
    local(loss, weight) {
      return rt.where(weight.gt(0), loss.mul(weight), 0);
    },
    reduce(local, grads) {
      return noGrad(rt, () => {
        const summed = rt.call('dist_all_reduce_many', [[...grads, local]], { op: 'sum', check: false }, grads.length + 1) as Tensor | Tensor[];
        const list = Array.isArray(summed) ? summed : [summed];
        grads.forEach((g, i) => { g.copy_(list[i]); });
        return list[grads.length];
      });
    },
  };
}

/**
 * Make every rank's copy of `params` rank 0's (`dist_broadcast`), in place: parameters
 * built from the same seed are equal already, this makes sure (a model loaded or changed
 * on one rank only). Queued; a no-op on a plain runtime.
 */
export function syncParams(rt: Runtime, params: readonly Tensor[]): void {
  if (worldSize(rt) === 1 || !params.length) return;
  noGrad(rt, () => {
    for (const p of params) p.copy_(rt.call('dist_broadcast', [p], { src: 0 }) as Tensor);
  });
}
