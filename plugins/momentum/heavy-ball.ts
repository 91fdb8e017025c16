/**
 * Polyak's heavy ball: gradient descent plus a multiple of the last move,
 *
 *     x_{k+1} = x_k − η·∇f(x_k) + β·(x_k − x_{k−1}),
 *
 * the momentum method Liao & Kyrillidis set against Nesterov's: on strongly convex
 * quadratics it accelerates too, but no accelerated rate holds for it beyond them (Goujaud
 * et al. 2023), and the paper's experiment shows it between gradient descent and Nesterov.
 *
 * The state is one buffer b per parameter, in the form PyTorch's `SGD(momentum=β)` writes
 * (x_{k+1} − x_k = −η·b_{k+1} with a constant η):
 *
 *     g ← ∇f(x) + λ·x        b ← β·b + (1 − τ)·g   (b ← g at the first step)        x ← x − η·b
 *
 * with weight decay λ and dampening τ, so a run matches
 * `torch.optim.SGD(lr=η, momentum=β, dampening=τ, weight_decay=λ)` parameter for parameter
 * (test/momentum-equivalence.test.ts).
 *
 * Method: Polyak, "Some methods of speeding up the convergence of iteration methods", 1964,
 * https://doi.org/10.1016/0041-5553(64)90137-5; the comparison: Liao & Kyrillidis, ALT 2024,
 * https://proceedings.mlr.press/v237/liao24a.html.
 *
 * ```ts
 * const opt = heavyBall({ lr: 0.05, momentum: 0.9 });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { DType, Runtime, Tensor } from '../../bridge/index.js';
import { MomentumOptimizerBase, OptimizerFields, WeightDecayField } from '../../sdk/families/momentum/base.js';
import type { StepHyper } from '../../sdk/families/momentum/types.js';
import type { ParamInfo } from '../../sdk/hooks.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link HeavyBall}. */
export const HeavyBallConfig = Type.Object({
  ...OptimizerFields,
  momentum: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.9, description: 'momentum β: the share of the last move carried into the next' }),
  dampening: Type.Number({ minimum: 0, maximum: 1, default: 0, description: "dampening τ: the gradient enters the buffer as (1 − τ)·g after the first step (PyTorch's SGD dampening)" }),
  ...WeightDecayField,
}, { additionalProperties: false });
export type HeavyBallConfig = Static<typeof HeavyBallConfig>;

/**
 * β·[t > 1] and 1 − τ·[t > 1] as () tensors of the step being traced (PyTorch starts the
 * buffer at g, undamped); null without dampening, where constants do.
 */
export type HeavyBallStep = { beta: Tensor; gain: Tensor } | null;

/** Heavy-ball momentum: one buffer per parameter, updated in place in the step program. */
export class HeavyBall extends MomentumOptimizerBase<HeavyBallConfig, HeavyBallStep> {

  override init(_param: Tensor, info: ParamInfo, rt: Runtime): Record<string, Tensor> {
    return { momentum: rt.zeros(info.shape, info.dtype as DType) };
  }

  /** Traced once per step, before the updates: the dampened coefficients, when there is dampening. */
  override prepare({ step }: StepHyper): HeavyBallStep {
    if (this.config.dampening === 0) return null;
    const later = step.gt(1).to('f32'); // () 1 after the first step, else 0
    return { beta: later.mul(this.config.momentum), gain: later.mul(-this.config.dampening).add(1) };
  }

  /** Traced once per parameter into the step program: b ← β·b + (1 − τ)·g, then x ← x − η·b. */
  update(param: Tensor, grad: Tensor, { momentum: b }: Record<string, Tensor>, hp: StepHyper, prepared?: HeavyBallStep): void {
    const { momentum: beta, dampening } = this.config;
    const g = this.decayed(param, grad);
    if (dampening === 0) {
      b.mul_(beta).add_(g); // from b = 0 the first step gives b = g, as PyTorch's
    } else {
      const coef = prepared ?? this.prepare(hp)!; // made here for a caller that traces update() alone
      b.mul_(coef.beta).addcmul_(g, coef.gain);
    }
    param.addcmul_(b, hp.lr, -1); // x ← x − η·b; lr is a () tensor
  }
}

/** The `heavy-ball` registration: `heavyBall({ lr, momentum, dampening, weightDecay })`. */
export const heavyBall = definePlugin({
  name: 'heavy-ball',
  version: '1.0.0',
  family: 'momentum-optimizer',
  schema: HeavyBallConfig,
  description: "Polyak's heavy-ball momentum (equals PyTorch's SGD(momentum=β), with dampening and weight decay)",
  paper: 'https://doi.org/10.1016/0041-5553(64)90137-5',
  create: (config, meta) => new HeavyBall(config, meta),
});
