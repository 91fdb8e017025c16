/**
 * Learning-rate schedules shared by every optimizer of the family: a pure function of the
 * config and the step, read by the loop in TypeScript before each step (so a schedule costs
 * the step program nothing: the rate arrives as the `lr` placeholder).
 *
 * The forms follow PyTorch's schedulers stepped once per optimizer step, so a run can be
 * compared with a plain PyTorch loop: `step` ↔ `StepLR(step_size, gamma)`, `cosine` ↔
 * `CosineAnnealingLR(T_max, eta_min)` (held at `minLr` after `decaySteps`, where PyTorch's
 * would rise again), `linear` ↔ `LinearLR(1, minLr/lr, total_iters)`, a linear warm-up from
 * lr/warmupSteps before any of them.
 */
import { type Static, Type } from '@sinclair/typebox';

/** Schedule fields, spread into an optimizer's schema through `OptimizerFields`. */
export const ScheduleFields = {
  schedule: Type.Union([Type.Literal('constant'), Type.Literal('step'), Type.Literal('cosine'), Type.Literal('linear')], {
    default: 'constant', description: "learning-rate schedule after warm-up: 'constant', 'step' (×gamma every decaySteps), 'cosine' or 'linear' (to minLr over decaySteps)",
  }),
  warmupSteps: Type.Integer({ minimum: 0, default: 0, description: 'steps of linear warm-up from lr/warmupSteps to lr before the schedule starts (0: none)' }),
  decaySteps: Type.Integer({ minimum: 1, default: 1000, description: "the schedule's period ('step') or horizon ('cosine', 'linear'), in steps after warm-up" }),
  gamma: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.1, description: "factor applied every decaySteps by the 'step' schedule" }),
  minLr: Type.Number({ minimum: 0, default: 0, description: "the rate 'cosine' and 'linear' reach after decaySteps, and keep" }),
};

const ScheduleObject = Type.Object(ScheduleFields);
/**
 * The schedule part of an optimizer's config, with its base rate. The schedule fields are
 * optional here so that a plugin whose schema has only `lr` keeps a constant rate.
 */
export type ScheduleConfig = Partial<Static<typeof ScheduleObject>> & { lr: number };

/** The learning rate of `step` (counting from 1) under `cfg`. */
export function scheduledRate(cfg: ScheduleConfig, step: number): number {
  const { lr, warmupSteps = 0, decaySteps = 1, gamma = 1, minLr = 0 } = cfg;
  if (step <= warmupSteps) return (lr * step) / warmupSteps;
  const s = step - warmupSteps - 1; // steps since the schedule started: 0 at its first
  switch (cfg.schedule) {
    case 'step': return lr * gamma ** Math.floor(s / decaySteps);
    case 'cosine': return minLr + ((lr - minLr) * (1 + Math.cos((Math.PI * Math.min(s, decaySteps)) / decaySteps))) / 2;
    case 'linear': return lr + ((minLr - lr) * Math.min(s, decaySteps)) / decaySteps;
    default: return lr;
  }
}
