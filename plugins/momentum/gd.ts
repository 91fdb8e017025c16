/**
 * Plain gradient descent: the baseline every momentum method is measured against.
 *
 *     param ← param − η · (grad + λ · param)
 *
 * with step size η (`lr`) and an optional L2 weight decay λ (`weightDecay`, 0 by default).
 * Liao & Kyrillidis compare Nesterov's momentum, rate `(1 − c/(4√κ))^k`, against exactly
 * this method's `1 − Θ(1/κ)` (docs/architecture.md, "Plugins and families").
 *
 * Method: Cauchy (1847), https://en.wikipedia.org/wiki/Gradient_descent; the comparison:
 * Liao & Kyrillidis, "Provable Accelerated Convergence of Nesterov's Momentum for Deep ReLU
 * Neural Networks", ALT 2024, https://proceedings.mlr.press/v237/liao24a.html.
 *
 * ```ts
 * const opt = gd({ lr: 0.05, weightDecay: 1e-4 });
 * const trainer = new Trainer({ model, optimizer: opt, epochs: 5, batchSize: 64, loss: 'cross_entropy' });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { MomentumOptimizerBase, OptimizerFields, WeightDecayField } from '../../sdk/families/momentum/base.js';
import type { StepHyper } from '../../sdk/families/momentum/types.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link GD}. */
export const GDConfig = Type.Object({
  ...OptimizerFields,
  ...WeightDecayField,
}, { additionalProperties: false });
export type GDConfig = Static<typeof GDConfig>;

/** Gradient descent: no state, one in-place update per parameter. */
export class GD extends MomentumOptimizerBase<GDConfig> {
  /** param ← param − lr·(grad + wd·param); traced once into the step program. */
  update(param: Tensor, grad: Tensor, _state: Record<string, Tensor>, { lr }: StepHyper): void {
    param.addcmul_(this.decayed(param, grad), lr, -1); // param -= lr * direction, one op (lr is a () tensor)
  }
}

/** The `gd` registration: `gd({ lr, weightDecay })`. */
export const gd = definePlugin({
  name: 'gd',
  version: '1.0.0',
  family: 'momentum-optimizer',
  schema: GDConfig,
  description: 'plain gradient descent with optional L2 weight decay (the baseline of momentum methods)',
  paper: 'https://proceedings.mlr.press/v237/liao24a.html',
  create: (config, meta) => new GD(config, meta),
});
