/**
 * Nesterov's momentum with a constant step η and a constant momentum β — the method whose
 * acceleration Liao & Kyrillidis prove for deep ReLU networks:
 *
 *     x_{k+1} = y_k − η·∇f(y_k)          y_{k+1} = x_{k+1} + β·(x_{k+1} − x_k)
 *
 * with β given (`momentum`) or derived from the condition number κ and the paper's constant
 * c (`kappa`, `c`): β = (4√κ − √c)/(4√κ + 7√c), for the rate (1 − c/(4√κ))^k against
 * gradient descent's 1 − Θ(1/κ).
 *
 * The parameters hold y_k and the state one buffer b per parameter, the form PyTorch's
 * `SGD(nesterov=True)` writes — the same y_k sequence, one tensor of state instead of two
 * (x_{k+1} − x_k = −η·b_{k+1} by induction from x_0 = y_0, b_0 = 0):
 *
 *     g ← ∇f(y) + λ·y        b ← β·b + g        y ← y − η·(g + β·b)
 *
 * so a run matches `torch.optim.SGD(lr=η, momentum=β, nesterov=True, weight_decay=λ)`
 * parameter for parameter (test/momentum-equivalence.test.ts).
 *
 * Paper: Liao & Kyrillidis, "Provable Accelerated Convergence of Nesterov's Momentum for
 * Deep ReLU Neural Networks", ALT 2024, https://proceedings.mlr.press/v237/liao24a.html.
 *
 * ```ts
 * const opt = nesterov({ lr: 0.05, momentum: 0.9 });          // η and β given
 * const paper = nesterov({ lr: 0.05, kappa: 400, c: 1 });     // β = (4·20 − 1)/(4·20 + 7) ≈ 0.908
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { type DType, LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { MomentumOptimizerBase, OptimizerFields, WeightDecayField } from '../../sdk/families/momentum/base.js';
import type { StepHyper } from '../../sdk/families/momentum/types.js';
import type { ParamInfo } from '../../sdk/hooks.js';
import { definePlugin, type PluginMeta } from '../../sdk/plugin.js';

/** β used when neither `momentum` nor `kappa` is given (PyTorch users' usual choice). */
const DEFAULT_MOMENTUM = 0.9;

/** Config of {@link Nesterov}. */
export const NesterovConfig = Type.Object({
  ...OptimizerFields,
  momentum: Type.Optional(Type.Number({ minimum: 0, exclusiveMaximum: 1, description: `momentum β, given directly (${DEFAULT_MOMENTUM} when neither momentum nor kappa is given)` })),
  kappa: Type.Optional(Type.Number({ exclusiveMinimum: 0, description: 'condition number κ = L/μ: derive β = (4√κ − √c)/(4√κ + 7√c) as the paper does, instead of giving momentum' })),
  c: Type.Number({ exclusiveMinimum: 0, default: 1, description: "the paper's constant c in β and in the rate (1 − c/(4√κ))^k; used with kappa" }),
  ...WeightDecayField,
}, { additionalProperties: false });
export type NesterovConfig = Static<typeof NesterovConfig>;

/** β = (4√κ − √c)/(4√κ + 7√c): the paper's momentum for condition number κ. */
export function paperMomentum(kappa: number, c: number): number {
  const [k, s] = [4 * Math.sqrt(kappa), Math.sqrt(c)];
  return (k - s) / (k + 7 * s);
}

/** What {@link Nesterov.prepare} makes once per step. */
export interface NesterovStep {
  /** () η·β of the step being traced, shared by every parameter's update. */
  lrBeta: Tensor;
}

/** Nesterov's momentum: one buffer per parameter, updated in place in the step program. */
export class Nesterov extends MomentumOptimizerBase<NesterovConfig, NesterovStep> {
  /** The momentum β in use: `momentum`, or derived from `kappa` and `c`. */
  readonly beta: number;

  constructor(config: NesterovConfig, meta: PluginMeta) {
    super(config, meta);
    const { momentum, kappa, c } = config;
    if (momentum !== undefined && kappa !== undefined) {
      throw new LiaisonError('E_ARG', `${this.id}: give momentum (β) or kappa (β derived from κ and c), not both; got momentum ${momentum} and kappa ${kappa}`, { param: 'kappa' });
    }
    this.beta = kappa === undefined ? momentum ?? DEFAULT_MOMENTUM : paperMomentum(kappa, c);
    if (!(this.beta >= 0 && this.beta < 1)) {
      throw new LiaisonError('E_ARG', `${this.id}: kappa ${kappa} with c ${c} gives β = ${this.beta}, outside [0, 1): the paper's β needs 16κ ≥ c`, { param: 'c' });
    }
  }

  override init(_param: Tensor, info: ParamInfo, rt: Runtime): Record<string, Tensor> {
    return { momentum: rt.zeros(info.shape, info.dtype as DType) };
  }

  /** Traced once per step, before the updates: η·β, shared by every parameter's update. */
  override prepare({ lr }: StepHyper): NesterovStep {
    return { lrBeta: lr.mul(this.beta) };
  }

  /** Traced once per parameter into the step program: b ← β·b + g, then y ← y − η·g − ηβ·b. */
  update(param: Tensor, grad: Tensor, { momentum: b }: Record<string, Tensor>, hp: StepHyper, prepared?: NesterovStep): void {
    const g = this.decayed(param, grad);
    b.mul_(this.beta).add_(g);
    const { lrBeta } = prepared ?? this.prepare(hp); // made here for a caller that traces update() alone
    // y ← y − η·(g + β·b) as two in-place passes: no temporary, one op fewer than g + β·b first
    param.addcmul_(g, hp.lr, -1);
    param.addcmul_(b, lrBeta, -1);
  }
}

/** The `nesterov` registration: `nesterov({ lr, momentum })` or `nesterov({ lr, kappa, c })`. */
export const nesterov = definePlugin({
  name: 'nesterov',
  version: '1.0.0',
  family: 'momentum-optimizer',
  schema: NesterovConfig,
  description: "Nesterov's momentum, constant η and β (β given, or from κ and c as in Liao & Kyrillidis); equals SGD(nesterov=True)",
  paper: 'https://proceedings.mlr.press/v237/liao24a.html',
  create: (config, meta) => new Nesterov(config, meta),
});
