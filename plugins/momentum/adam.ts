/**
 * Adam: momentum on the gradient and on its square, with bias corrections — the optimizer
 * transformer training expects (examples/generate.ts trains its GPT with it; plain
 * gradient descent needs many more steps to get a decoder anywhere).
 *
 *     m ← β₁·m + (1 − β₁)·g          v ← β₂·v + (1 − β₂)·g²
 *     param ← param − η · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)
 *
 * The bias corrections depend on the step number t, which arrives as a () tensor inside
 * the traced step: βᵗ is computed there as exp(t · ln β), so the program needs no retrace.
 *
 * Method: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015,
 * https://arxiv.org/abs/1412.6980 (the update as torch.optim.Adam writes it, ε outside
 * the square root).
 *
 * ```ts
 * const trainer = new Trainer({ model, optimizer: adam({ lr: 3e-3 }) });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { Runtime, Tensor } from '../../bridge/index.js';
import { MomentumOptimizerBase, OptimizerFields } from '../../sdk/families/momentum/base.js';
import type { StepHyper } from '../../sdk/families/momentum/types.js';
import type { ParamInfo } from '../../sdk/hooks.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link Adam}. */
export const AdamConfig = Type.Object({
  ...OptimizerFields,
  lr: Type.Number({ exclusiveMinimum: 0, default: 1e-3, description: 'learning rate (step size η)' }),
  beta1: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.9, description: 'decay β₁ of the gradient average m' }),
  beta2: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.999, description: 'decay β₂ of the squared-gradient average v' }),
  eps: Type.Number({ exclusiveMinimum: 0, default: 1e-8, description: 'ε added to √v, so that a parameter with no gradient yet does not divide by zero' }),
}, { additionalProperties: false });
export type AdamConfig = Static<typeof AdamConfig>;

/** What {@link Adam.prepare} makes once per step, () each: the same for every parameter. */
export interface AdamStep {
  /** η·√(1 − β₂ᵗ)/(1 − β₁ᵗ): the bias-corrected step size. */
  size: Tensor;
  /** ε·√(1 − β₂ᵗ): ε moved inside the bias correction. */
  eps: Tensor;
}

/** Adam: two state tensors per parameter (m, v), updated in place. */
export class Adam extends MomentumOptimizerBase<AdamConfig, AdamStep> {

  override init(_param: Tensor, info: ParamInfo, rt: Runtime): Record<string, Tensor> {
    return { m: rt.zeros(info.shape), v: rt.zeros(info.shape) };
  }

  /** Traced once per step, before the updates: the bias-corrected step size and ε, () each. */
  override prepare({ lr, step }: StepHyper): AdamStep {
    const { beta2, beta1, eps } = this.config;
    const correction = (beta: number) => step.mul(Math.log(beta)).exp().neg().add(1); // () 1 − βᵗ
    const root2 = correction(beta2).sqrt();
    return { size: lr.mul(root2).div(correction(beta1)), eps: root2.mul(eps) };
  }

  /** Traced once per parameter into the Trainer's step program: in-place updates of m, v and the parameter. */
  update(param: Tensor, grad: Tensor, { m, v }: Record<string, Tensor>, hp: StepHyper, prepared?: AdamStep): void {
    const { beta1, beta2 } = this.config;
    // a caller that traces update() alone (no prepare()) gets this step's scalars made here
    const { size, eps } = prepared ?? this.prepare(hp);
    m.lerp_(grad, 1 - beta1); // m ← β₁·m + (1 − β₁)·g
    v.mul_(beta2);
    v.addcmul_(grad, grad, 1 - beta2); // v ← β₂·v + (1 − β₂)·g²
    // m̂ / (√v̂ + ε) · η  =  m / (√v + ε·√(1 − β₂ᵗ)) · η·√(1 − β₂ᵗ)/(1 − β₁ᵗ)
    param.sub_(m.div(v.sqrt().add(eps)).mul(size));
  }
}

/** The `adam` registration: `adam({ lr, beta1, beta2, eps })`. */
export const adam = definePlugin({
  name: 'adam',
  version: '0.1.0',
  family: 'momentum-optimizer',
  schema: AdamConfig,
  description: 'Adam: steps scaled per entry by running averages of the gradient and its square, bias-corrected',
  paper: 'https://arxiv.org/abs/1412.6980',
  create: (config, meta) => new Adam(config, meta),
});
