// The momentum family's pieces that need no model: schedules (pure), the configs' checks,
// and the β the paper's formula gives.
import { describe, expect, it } from 'vitest';
import { LiaisonError } from '../bridge/index.js';
import { adam, gd, heavyBall, nesterov, paperMomentum } from '../plugins/index.js';
import { scheduledRate } from '../sdk/families/momentum/schedule.js';

const base = { lr: 0.1, schedule: 'constant' as const, warmupSteps: 0, decaySteps: 10, gamma: 0.5, minLr: 0.01 };

describe('learning-rate schedules (per step, from 1)', () => {
  it("'constant' keeps lr; a config with only lr (a plugin without the schedule fields) too", () => {
    expect([1, 2, 1e6].map((s) => scheduledRate(base, s))).toEqual([0.1, 0.1, 0.1]);
    expect(scheduledRate({ lr: 0.3 }, 77)).toBe(0.3);
  });

  it("'step' multiplies by gamma every decaySteps, as StepLR stepped once per step", () => {
    const cfg = { ...base, schedule: 'step' as const };
    expect([1, 10, 11, 20, 21].map((s) => scheduledRate(cfg, s))).toEqual([0.1, 0.1, 0.05, 0.05, 0.025]);
  });

  it("'cosine' falls from lr to minLr over decaySteps (CosineAnnealingLR) and then holds minLr", () => {
    const cfg = { ...base, schedule: 'cosine' as const };
    expect(scheduledRate(cfg, 1)).toBeCloseTo(0.1, 12);
    expect(scheduledRate(cfg, 6)).toBeCloseTo((0.1 + 0.01) / 2, 12); // halfway: the mean of the two
    expect(scheduledRate(cfg, 11)).toBeCloseTo(0.01, 12);
    expect(scheduledRate(cfg, 500)).toBeCloseTo(0.01, 12);
    for (let s = 1; s < 12; s++) expect(scheduledRate(cfg, s + 1)).toBeLessThanOrEqual(scheduledRate(cfg, s));
  });

  it("'linear' falls by equal steps to minLr and holds it", () => {
    const cfg = { ...base, schedule: 'linear' as const };
    expect(scheduledRate(cfg, 1)).toBeCloseTo(0.1, 12);
    expect(scheduledRate(cfg, 2) - scheduledRate(cfg, 1)).toBeCloseTo(-0.009, 12);
    expect(scheduledRate(cfg, 11)).toBeCloseTo(0.01, 12);
    expect(scheduledRate(cfg, 99)).toBeCloseTo(0.01, 12);
  });

  it('warm-up rises linearly to lr over warmupSteps, then the schedule starts at its own step 1', () => {
    const cfg = { ...base, schedule: 'step' as const, warmupSteps: 4 };
    expect([1, 2, 4, 5, 14, 15].map((s) => scheduledRate(cfg, s))).toEqual([0.025, 0.05, 0.1, 0.1, 0.1, 0.05]);
  });

  it('every optimizer plugin takes the schedule fields and uses them in learningRate()', () => {
    for (const make of [gd, nesterov, heavyBall, adam]) {
      const opt = make({ lr: 0.2, schedule: 'cosine', decaySteps: 4, minLr: 0 });
      expect(opt.learningRate(1)).toBeCloseTo(0.2, 12);
      expect(opt.learningRate(5)).toBeCloseTo(0, 12);
    }
  });

  it('a bad schedule field is refused, named', () => {
    expect(() => gd({ schedule: 'exponential' as never })).toThrow(/schedule/);
    expect(() => nesterov({ decaySteps: 0 })).toThrow(/decaySteps/);
    expect(() => heavyBall({ gamma: 1.5 })).toThrow(/gamma/);
  });
});

describe('nesterov config', () => {
  it("β is the given momentum, 0.9 by default, or the paper's (4√κ − √c)/(4√κ + 7√c) from kappa and c", () => {
    expect(nesterov({}).beta).toBe(0.9);
    expect(nesterov({ momentum: 0.5 }).beta).toBe(0.5);
    expect(nesterov({ kappa: 400 }).beta).toBeCloseTo(79 / 87, 12); // 4·20 − 1 over 4·20 + 7
    expect(nesterov({ kappa: 100, c: 4 }).beta).toBeCloseTo((40 - 2) / (40 + 14), 12);
    expect(paperMomentum(1e8, 1)).toBeGreaterThan(0.9997); // β → 1 as κ grows
  });

  it('refuses momentum and kappa together, and a c that makes β negative, naming the field', () => {
    const err = (f: () => unknown) => { try { f(); } catch (e) { return e as LiaisonError; } throw new Error('no error'); };
    const both = err(() => nesterov({ momentum: 0.9, kappa: 10 }));
    expect(both).toBeInstanceOf(LiaisonError);
    expect(both.code).toBe('E_ARG');
    expect(both.message).toMatch(/momentum .* or kappa .* not both/);
    const negative = err(() => nesterov({ kappa: 1, c: 20 }));
    expect(negative.message).toMatch(/β = -.*outside \[0, 1\)/);
    expect(negative.param).toBe('c');
    expect(() => nesterov({ momentum: 1 })).toThrow(/momentum/);
  });
});
