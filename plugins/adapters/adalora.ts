/**
 * AdaLoRA: the update of each module in SVD form ΔW = P·Λ·Q — here B (out, r) = P, A (r, in)
 * = Q and the gate Λ = E (r,), a trained vector of singular values that starts at zero (so
 * the model starts as it is) — and a rank budget over all modules that falls from `initR` to
 * `targetR` per module on a cubic schedule, spent on the triplets (E_k, B_·k, A_k) that
 * matter most. A triplet's importance is the smoothed sensitivity |θ·∇θ| of its entries
 * times its uncertainty (PEFT's `RankAllocator`, β1 and β2), summed over E_k and the means
 * over A_k and B_·k; every `deltaT` steps while the budget falls the best `budget`
 * triplets are kept and the others' E_k held at zero by a mask applied after every
 * optimizer step. A regularizer `orthRegWeight` · the mean over the 2M factors of
 * ‖PPᵀ − I‖_F (PEFT's form: unsquared norms, averaged) keeps P and Q near orthogonal.
 *
 * All of it runs inside the Trainer's step program (the schedule is a table indexed by the
 * step; the importance, the mask and its application are traced at `afterOptimizerStep`,
 * the regularizer is a traced loss): nothing to call per step, nothing read back. The mask
 * is held between reallocations (PEFT re-masks only at them, letting pruned E_k drift back
 * in between; the paper's Algorithm 1 applies the pruning every step). Past totalSteps −
 * tfinal the mask is final, and the step is traced once more with only the masking
 * (checked at each epoch's end). A step the Trainer skips (`nonFinite: 'skip'`) leaves
 * the averages as they were (StepTrace.finite). A fit that ends before the budget reaches
 * its target (totalSteps too large) says so: a process warning, and `pending`.
 * Init as PEFT's: A, B ~ N(0, 0.02²) seeded, E zeros.
 *
 * Method: Zhang et al., "Adaptive Budget Allocation for Parameter-Efficient Fine-Tuning",
 * ICLR 2023, https://arxiv.org/abs/2303.10512.
 *
 * ```ts
 * const adapter = adalora({ initR: 12, targetR: 8, totalSteps: epochs * batchesPerEpoch, tinit: 50, tfinal: 100, deltaT: 10 });
 * await new Trainer({ model, optimizer: adam({ lr: 1e-3 }), plugins: [adapter], epochs }).fit(train);
 * console.log(await adapter.rankPattern());  // { 'blocks.0.attn.qkv': 11, 'blocks.0.mlp.fc': 5, … }
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Tensor } from '../../bridge/index.js';
import type { AdapterSite } from '../../sdk/adapters.js';
import { type BudgetSchedule, checkSchedule, maskToBudget, orthogonalityLoss, scheduleTables, smoothImportance, tripletScores } from '../../sdk/families/adapters/allocation.js';
import { AdapterBase, AdapterFields, factorShapes, seedOf } from '../../sdk/families/adapters/base.js';
import type { ParamSpec, TrainingHooks } from '../../sdk/hooks.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link AdaLora}. */
export const AdaLoraConfig = Type.Object({
  initR: Type.Integer({ minimum: 1, default: 12, description: 'triplets per module at the start: the budget starts at initR · modules' }),
  targetR: Type.Integer({ minimum: 1, default: 8, description: 'average triplets per module at the end: the budget ends at targetR · modules, shared unevenly as importance says' }),
  totalSteps: Type.Optional(Type.Integer({ minimum: 1, description: "required, no default: the run's optimizer steps (epochs × batches per epoch); the budget reaches its target at totalSteps − tfinal" })),
  tinit: Type.Integer({ minimum: 0, default: 0, description: 'warm-up steps at the full budget before any triplet is masked' }),
  tfinal: Type.Integer({ minimum: 0, default: 0, description: 'steps at the end with the final mask fixed' }),
  deltaT: Type.Integer({ minimum: 1, default: 1, description: 'steps between two reallocations while the budget falls' }),
  beta1: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1, default: 0.85, description: 'smoothing of the sensitivity |θ·∇θ| (an exponential moving average)' }),
  beta2: Type.Number({ exclusiveMinimum: 0, exclusiveMaximum: 1, default: 0.85, description: 'smoothing of the uncertainty |I − Ī|' }),
  orthRegWeight: Type.Number({ minimum: 0, default: 0.5, description: "γ: the orthogonality regularizer is γ · the mean over every module's A and B of ‖AAᵀ − I‖_F / ‖BᵀB − I‖_F, unsquared (PEFT's AdaLoraConfig.orth_reg_weight, same form and default)" }),
  ...AdapterFields,
}, { additionalProperties: false });
export type AdaLoraConfig = Static<typeof AdaLoraConfig>;

/** The smoothed importance Ī and uncertainty Ū of one factor, shaped as it. */
interface Importance { ipt: Tensor; unc: Tensor }

/** AdaLoRA: SVD-form updates under a falling, importance-shared rank budget. */
export class AdaLora extends AdapterBase<AdaLoraConfig> {
  /** (N,) f32 0/1 over every module's triplets, modules in order: 1 = kept. */
  private mask: Tensor | null = null;
  private imp: Record<string, Record<'A' | 'B' | 'E', Importance>> = {};
  /** Past totalSteps − tfinal (seen at an epoch's end): the step only masks E. */
  private settled = false;
  /**
   * Null, or why the budget was not at its target when the last fit ended: the fit stopped
   * before step totalSteps − tfinal (a process warning says the same, the first time).
   */
  pending: string | null = null;

  protected rankOf(_site: AdapterSite): number {
    return this.config.initR;
  }

  /** PEFT's AdaLoRA: P and Q ~ N(0, 0.02²), seeded per module. */
  protected override initOf(site: AdapterSite, r: number, index: number): { A: ParamSpec; B: ParamSpec } {
    const shapes = factorShapes(site, r);
    const seed = seedOf(this.config.seed, index);
    return { A: { shape: shapes.A, init: 'normal', scale: 0.02, seed }, B: { shape: shapes.B, init: 'normal', scale: 0.02, seed: seed + 32_768 } };
  }

  /** The gate is E itself: a trained parameter, zeros at the start. */
  protected override gateOf(site: AdapterSite, r: number, hooks: TrainingHooks): { gate: Tensor } {
    return { gate: hooks.addParam(`${site.module}.lora_E`, { shape: [r], init: 'zeros', module: site.module }) };
  }

  /** The budget schedule over `modules` modules; E_ARG naming the field when it cannot run. */
  private schedule(modules: number): BudgetSchedule {
    const c = this.config;
    if (c.totalSteps === undefined) throw new LiaisonError('E_ARG', `${this.id}: config field 'totalSteps' is required: the run's optimizer steps (epochs × batches per epoch), which the budget schedule spans`, { param: 'totalSteps' });
    const schedule = { initBudget: c.initR * modules, targetBudget: c.targetR * modules, tinit: c.tinit, tfinal: c.tfinal, totalSteps: c.totalSteps, deltaT: c.deltaT };
    checkSchedule(schedule, this.id);
    return schedule;
  }

  protected override check(sites: readonly AdapterSite[]): void {
    this.schedule(sites.length);
  }

  protected override join(hooks: TrainingHooks): void {
    const { rt } = hooks;
    const c = this.config;
    const schedule = this.schedule(this.sites.length);
    const end = c.totalSteps! - c.tfinal;
    const tab = scheduleTables(schedule);
    const budget = this.hold(rt.tensor(BigInt64Array.from(tab.budget, BigInt), [tab.budget.length]));
    const reallocate = this.hold(rt.tensor(tab.reallocate, [tab.reallocate.length]));
    const update = this.hold(rt.tensor(tab.update, [tab.update.length]));
    const mask = this.mask = this.hold(rt.ones([schedule.initBudget]));
    const set = this.set!;
    for (const site of this.sites) {
      const shapes = factorShapes(site, c.initR);
      const zeros = (shape: number[]): Importance => ({ ipt: this.hold(rt.zeros(shape)), unc: this.hold(rt.zeros(shape)) });
      this.imp[site.module] = { A: zeros(shapes.A), B: zeros(shapes.B), E: zeros([c.initR]) };
    }
    // resume copies these back in place: the step program keeps its captures
    hooks.addState('adalora', () => ({
      mask,
      ...Object.fromEntries(Object.entries(this.imp).flatMap(([m, by]) => Object.entries(by).flatMap(([k, v]) => [[`${m}.ipt_${k}`, v.ipt], [`${m}.unc_${k}`, v.unc]]))),
    }));
    if (c.orthRegWeight > 0) {
      hooks.addLoss('orthogonality', () => orthogonalityLoss(rt, this.sites.map((s) => set.factors[s.module]), c.initR, c.orthRegWeight));
    }
    const masking = () => this.sites.forEach((s, i) => set.factors[s.module].gate.mul_(mask.narrow(0, i * c.initR, c.initR)));
    this.settled = false;
    this.pending = null;
    hooks.on('afterOptimizerStep', ({ step, finite }) => {
      if (this.settled) return masking();
      const at = step.clamp(0, c.totalSteps! + 1).to('i64').reshape([1]);
      // a step the Trainer skipped leaves the averages as they were (its gradients may be NaN)
      const on = update.indexSelect(0, at).gt(0).logicalAnd(finite);
      const scores = this.sites.map((s) => {
        const f = set.factors[s.module];
        const by = this.imp[s.module];
        const param = { A: f.A, B: f.B, E: f.gate };
        for (const k of ['A', 'B', 'E'] as const) smoothImportance(param[k], rt.call('grad_of', [param[k]]) as Tensor, by[k].ipt, by[k].unc, c.beta1, c.beta2, on);
        const score = (k: 'A' | 'B' | 'E') => by[k].ipt.mul(by[k].unc);
        return tripletScores(score('A'), score('E'), score('B'), c.initR);
      });
      // a reallocation step takes the fresh mask, any other keeps the held one
      mask.lerp_(maskToBudget(rt.cat(scores, 0), budget.indexSelect(0, at)), reallocate.indexSelect(0, at));
      masking();
    });
    // past the schedule's end the averages, scores and mask are never used again: trace the step without them
    hooks.on('epochEnd', ({ step }) => {
      if (!this.settled && step >= end) { this.settled = true; hooks.retrace(); }
    });
    let warned = false;
    hooks.on('fitEnd', ({ step }) => {
      this.pending = step >= end ? null : `${this.id}: the fit ended at step ${step}, and the rank budget reaches its target (targetR ${c.targetR} per module) at step ${end} = totalSteps − tfinal: it is still falling (give totalSteps the run's optimizer steps, epochs × batches per epoch; fine if more fits follow)`;
      // once per attach: a run fitted in several calls would hear it at each
      if (this.pending && !warned) { warned = true; process.emitWarning(this.pending, { code: 'LIAISON_ADALORA_BUDGET' }); }
    });
  }

  /**
   * Triplets the budget keeps per module now (the mask), whatever E holds: the budget's view.
   * rankPattern() counts E ≠ 0 (what an export holds), so it is 0 before the first step,
   * where E is still zero. One round trip.
   */
  async allocation(): Promise<Record<string, number>> {
    if (!this.mask) throw new LiaisonError('E_ARG', `${this.id}: allocation() needs the adapter attached: give it to a Trainer and fit`);
    const m = await this.mask.toArray() as Float32Array;
    const r = this.config.initR;
    return Object.fromEntries(this.sites.map((s, i) => [s.module, m.subarray(i * r, (i + 1) * r).reduce((a, v) => a + v, 0)]));
  }

  override free(): void {
    super.free();
    this.mask = null;
    this.imp = {};
    this.settled = false;
  }
}

/** The `adalora` registration: `adalora({ initR, targetR, totalSteps, tinit, tfinal, deltaT, beta1, beta2, orthRegWeight, targets, alpha, rslora, seed, merge })`. */
export const adalora = definePlugin({
  name: 'adalora', version: '1.0.0', family: 'adapter', schema: AdaLoraConfig,
  description: 'AdaLoRA: SVD-form updates P·Λ·Q whose rank budget falls from initR to targetR per module on a cubic schedule, kept for the triplets of highest smoothed |θ·∇θ|, with an orthogonality regularizer; allocated inside the training step',
  paper: 'https://arxiv.org/abs/2303.10512',
  create: (config, meta) => new AdaLora(config, meta),
});
