// AdaLoRA: its allocation math against plain references and against PEFT's RankAllocator
// and AdaLoraModel regularizer (test/adalora_peft.py, skipped only when peft cannot be
// imported), and its allocation driven by the Trainer alone, replayed against the pure
// functions (test/adapters-base.test.ts has the base and the suite's failing adapters).
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { resolvePython, runtimeEnv } from '../bridge/launcher.js';
import { adalora } from '../plugins/adapters/adalora.js';
import { adapterSites } from '../sdk/adapters.js';
import { Dataset } from '../sdk/data.js';
import { factorShapes } from '../sdk/families/adapters/base.js';
import { budgetAt, checkSchedule, maskToBudget, orthogonality, orthogonalityLoss, scheduleTables, smoothImportance, tripletScores } from '../sdk/families/adapters/allocation.js';
import type { TrainingHooks } from '../sdk/hooks.js';
import { Model } from '../sdk/model.js';
import { writeSafetensors } from '../sdk/safetensors.js';
import { Trainer } from '../sdk/trainer.js';
import { gd } from '../plugins/momentum/gd.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);

describe('adalora allocation math', () => {
  const s = { initBudget: 24, targetBudget: 16, tinit: 2, tfinal: 3, totalSteps: 12, deltaT: 2 };

  it('budget schedule: full through tinit, cubic fall reallocating every deltaT, the target forced at T − tfinal, then fixed', () => {
    // by hand: b(t) = ⌊8·(1 − (t − 2)/7)³ + 16⌋ for 2 < t < 9
    const want = [[24, 0, 1], [24, 0, 1], [21, 0, 1], [18, 1, 1], [17, 0, 1], [16, 1, 1], [16, 0, 1], [16, 1, 1], [16, 1, 0], [16, 0, 0], [16, 0, 0], [16, 0, 0]];
    for (let t = 1; t <= 12; t++) {
      const p = budgetAt(t, s);
      expect([p.budget, +p.reallocate, +p.update], `step ${t}`).toEqual(want[t - 1]);
    }
    const tab = scheduleTables(s);
    expect(tab.budget.length).toBe(14);
    expect(tab.budget.slice(1, 13)).toEqual(want.map((w) => w[0]));
    expect(tab.reallocate.slice(1, 13)).toEqual(want.map((w) => w[1]));
    expect([tab.budget[13], tab.reallocate[13], tab.update[13]]).toEqual([16, 0, 0]);
  });

  it('a schedule that cannot run is E_ARG naming the field', () => {
    const refused = (o: Partial<typeof s>) => { try { checkSchedule({ ...s, ...o }, 'adalora'); } catch (e) { return e instanceof LiaisonError && e.code === 'E_ARG' ? e.param : 'other'; } return null; };
    expect(refused({})).toBe(null);
    expect(refused({ tinit: 6, tfinal: 6 })).toBe('totalSteps');
    expect(refused({ targetBudget: 30 })).toBe('targetR');
    expect(refused({ deltaT: 0 })).toBe('deltaT');
    expect(refused({ initBudget: 0 })).toBe('initR'); // a budget is not a config field: the field behind it is named
  });

  it('importance: smoothed |θ·∇θ| and its uncertainty as PEFT computes them; a step with on = false changes nothing, NaN gradients included', async () => {
    const th = [0.5, -2, 1.5, 0], g = [1, 0.25, -2, 3];
    const theta = rt.tensor(th, [4]), grad = rt.tensor(g, [4]);
    const ipt = rt.tensor([0.1, 0.2, 0.3, 0.4], [4]), unc = rt.tensor([0, 0.1, 0, 0.1], [4]);
    const yes = rt.full([], 1).gt(0), no = rt.full([], 0).gt(0);
    smoothImportance(theta, grad, ipt, unc, 0.85, 0.9, yes);
    const I = th.map((v, i) => Math.abs(v * g[i]));
    const ev = [0.1, 0.2, 0.3, 0.4].map((v, i) => 0.85 * v + 0.15 * I[i]);
    const eu = [0, 0.1, 0, 0.1].map((v, i) => 0.9 * v + 0.1 * Math.abs(I[i] - ev[i]));
    (await list(ipt)).forEach((v, i) => expect(v).toBeCloseTo(ev[i], 6));
    (await list(unc)).forEach((v, i) => expect(v).toBeCloseTo(eu[i], 6));
    const [ipt1, unc1] = [await list(ipt), await list(unc)];
    smoothImportance(theta, grad, ipt, unc, 0.85, 0.9, no);
    // a skipped step's gradient (nonFinite 'skip'): NaN / Inf, and nothing of it gets in
    smoothImportance(theta, rt.tensor([NaN, Infinity, 1, -Infinity], [4]), ipt, unc, 0.85, 0.9, no);
    expect(await list(ipt)).toEqual(ipt1);
    expect(await list(unc)).toEqual(unc1);
  });

  it('triplet scores: S(E_k) + mean S(A_k) + mean S(B_·k), linear and conv shapes', async () => {
    const r = 2;
    const sA = rt.tensor([1, 2, 3, 4, 5, 6], [2, 3]), sE = rt.tensor([10, 20], [2]), sB = rt.tensor([1, 0, 3, 2], [2, 2]);
    expect(await list(tripletScores(sA, sE, sB, r))).toEqual([10 + 2 + 2, 20 + 5 + 1]);
    // conv: A (r, in, kh, kw), B (out, r, 1, 1)
    const cA = rt.tensor([1, 1, 1, 1, 2, 2, 2, 2], [2, 1, 2, 2]), cB = rt.tensor([4, 0, 0, 2], [2, 2, 1, 1]);
    expect(await list(tripletScores(cA, sE, cB, r))).toEqual([10 + 1 + 2, 20 + 2 + 1]);
  });

  it('mask to budget keeps exactly the budget highest scores, ties broken by position', async () => {
    const scores = rt.tensor([0.3, 0.9, 0.1, 0.5, 0.5, 0.7], [6]);
    for (const [b, want] of [[1, [0, 1, 0, 0, 0, 0]], [3, [0, 1, 0, 1, 0, 1]], [4, [0, 1, 0, 1, 1, 1]], [6, [1, 1, 1, 1, 1, 1]]] as const) {
      const m = await list(maskToBudget(scores, rt.tensor(BigInt64Array.of(BigInt(b)), [1])));
      expect(m, `budget ${b}`).toEqual(want);
    }
  });

  it("importance over steps, triplet scores and the mask keep what PEFT's RankAllocator keeps", async (ctx) => {
    // two linear modules in PEFT's shapes, four steps of (θ, ∇θ), then the mask at two budgets
    const [r, steps, dims] = [5, 4, [[7, 3], [4, 9]]];
    const file: Record<string, Tensor> = {};
    const scores: Tensor[] = [];
    for (const [i, [inF, outF]] of dims.entries()) {
      const by: Record<string, Tensor> = {};
      for (const [j, [k, shape]] of ([['A', [r, inF]], ['B', [outF, r]], ['E', [r]]] as const).entries()) {
        const [ipt, unc] = [rt.zeros([...shape]), rt.zeros([...shape])];
        for (let st = 0; st < steps; st++) {
          const p = (file[`m${i}.${k}.p${st}`] = rt.randn([...shape], { seed: 1000 * i + 100 * j + st }));
          const g = (file[`m${i}.${k}.g${st}`] = rt.randn([...shape], { seed: 5000 + 1000 * i + 100 * j + st }).mul(st + 1));
          smoothImportance(p, g, ipt, unc, 0.85, 0.7, rt.full([], 1).gt(0));
        }
        by[k] = ipt.mul(unc);
      }
      scores.push(tripletScores(by.A, by.E, by.B, r));
    }
    const budgets = [7, 3];
    const ours: Record<string, number[]> = Object.fromEntries(await Promise.all(budgets.map(async (b) => [String(b), await list(maskToBudget(rt.cat(scores, 0), rt.tensor(BigInt64Array.of(BigInt(b)), [1])))])));
    const work = mkdtempSync(join(tmpdir(), 'liaison-adalora-peft-'));
    try {
      const data = Object.fromEntries(await Promise.all(Object.entries(file).map(async ([k, t]) => [k, await t.data()])));
      await writeSafetensors(join(work, 'allocation.safetensors'), data, { r: String(r), steps: String(steps), modules: String(dims.length), beta1: '0.85', beta2: '0.7', budgets: JSON.stringify(budgets), orth_weight: '0.5' });
      const { stdout } = await promisify(execFile)(resolvePython(), [join(import.meta.dirname, 'adalora_peft.py'), work], { env: runtimeEnv({ OMP_NUM_THREADS: '1' }), encoding: 'utf8', timeout: 120_000 });
      const reply = JSON.parse(stdout.trim().split('\n').at(-1)!) as { skip?: string; masks?: Record<string, number[]>; orth?: number };
      if (reply.skip) return ctx.skip(reply.skip);
      expect(ours).toEqual(reply.masks);
      // the orthogonality term AdaLoraModel.forward adds, on the last step's A and B
      const last = dims.map((_, i) => ({ A: file[`m${i}.A.p${steps - 1}`], B: file[`m${i}.B.p${steps - 1}`] }));
      const orth = await orthogonalityLoss(rt, last, r, 0.5).item();
      expect(Math.abs(orth - reply.orth!)).toBeLessThanOrEqual(1e-5 * reply.orth!);
      expect(ours['7'].reduce((a, v) => a + v, 0)).toBe(7);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });

  it('orthogonality: ‖A·Aᵀ − I‖_F + ‖Bᵀ·B − I‖_F, unsquared, zero for orthonormal factors; the loss γ · their mean over the 2M factors', async () => {
    const A = rt.tensor([1, 0, 0, 0, 1, 0], [2, 3]), B = rt.tensor([0, 1, 1, 0, 0, 0], [3, 2]);
    expect(await orthogonality(rt, A, B, 2).item()).toBeCloseTo(0, 6);
    const A2 = rt.tensor([2, 0, 0, 1, 1, 0], [2, 3]); // AAᵀ = [[4, 2], [2, 2]]: √(3² + 2² + 2² + 1²) = √18
    const B2 = rt.tensor([1, 0, 0, 0], [2, 2, 1, 1]); // BᵀB = [[1, 0], [0, 0]]: 1
    expect(await orthogonality(rt, A2, B2, 2).item()).toBeCloseTo(Math.sqrt(18) + 1, 5);
    // two modules, four factors: 0.5 · (0 + √18 + 1) / 4
    expect(await orthogonalityLoss(rt, [{ A, B }, { A: A2, B: B2 }], 2, 0.5).item()).toBeCloseTo(0.5 * (Math.sqrt(18) + 1) / 4, 5);
  });
});

// ---- the suite fails adapters that break the family's contract ----

describe('adalora allocation, driven by the Trainer alone', () => {
  it('follows the budget schedule, holds pruned singular values at zero, ends at targetR · modules', async () => {
    const all = await Dataset.builtin(rt, 'digits');
    const [rest, data] = all.split(256 / all.size, 0);
    all.free(); rest.free();
    const model = await Model.build(rt, { kind: 'cnn', image: [8, 8], channels: [4], hidden: 16, classes: 10 }, { seed: 0 });
    const cfg = { initR: 6, targetR: 3, totalSteps: 20, tinit: 2, tfinal: 4, deltaT: 3 };
    const adapter = adalora(cfg);
    const dir = mkdtempSync(join(tmpdir(), 'liaison-adalora-'));
    const opts = { optimizer: gd({ lr: 0.05 }), epochs: 1, batchSize: 64, loss: 'cross_entropy' as const, progress: 'none' as const, logEvery: 1000 };
    const trainer = new Trainer({ model, plugins: [adapter], ...opts, checkpointDir: dir });
    const schedule = { initBudget: 12, targetBudget: 6, tinit: 2, tfinal: 4, totalSteps: 20, deltaT: 3 }; // two modules: convs.0, fc
    // the mask after step s holds the budget of the last reallocation up to s
    const held = (s: number) => { for (let t = s; t >= 1; t--) if (budgetAt(t, schedule).reallocate) return budgetAt(t, schedule).budget; return 12; };
    try {
      const seen: number[] = [];
      for (let epoch = 0; epoch < 5; epoch++) {
        await trainer.fit(data); // 4 steps; nothing else is called
        const alloc = await adapter.allocation();
        expect(Object.keys(alloc)).toEqual(['convs.0', 'fc']);
        const kept = Object.values(alloc).reduce((a, b) => a + b, 0);
        seen.push(kept);
        expect(kept, `after step ${trainer.step}`).toBe(held(trainer.step));
        // a masked singular value is exactly zero: E ≠ 0 only where the mask keeps it
        const ranks = await adapter.rankPattern();
        for (const m of Object.keys(alloc)) expect(ranks[m]).toBeLessThanOrEqual(alloc[m]);
      }
      // by hand, b(t) = ⌊6·(1 − (t − 2)/14)³ + 6⌋ reallocated at t = 3, 6, 9, 12 and 16: 10 (t 3), 8 (t 6), 6 (t 12, 16)
      expect(seen).toEqual([10, 8, 6, 6, 6]); // after steps 4, 8, 12, 16, 20
      // the kept counts match the budget by construction; the importance behind them must be real:
      // Ī and Ū non-zero for every factor, and the kept triplets not simply the first ones
      const imp = (adapter as unknown as { imp: Record<string, Record<string, { ipt: Tensor; unc: Tensor }>> }).imp;
      for (const [m, by] of Object.entries(imp)) for (const [k, v] of Object.entries(by)) for (const t of [v.ipt, v.unc]) expect(await t.abs().amax().item(), `${m} ${k}`).toBeGreaterThan(0);
      const mask = await list((adapter as unknown as { mask: Tensor }).mask);
      const prefix = (seg: number[]) => seg.every((v, i) => i === 0 || v <= seg[i - 1]);
      expect(prefix(mask.slice(0, 6)) && prefix(mask.slice(6)), `mask ${mask}`).toBe(false);
      expect(adapter.pending).toBe(null); // the run reached T − tfinal
      const end = await adapter.allocation(), ranks = await adapter.rankPattern();
      expect(end['convs.0'] + end.fc).toBe(cfg.targetR * 2);
      expect(ranks).toEqual(end); // every kept triplet is in the sum
      expect(await adapter.parameterCount()).toBe(end['convs.0'] * (1 * 9 + 4) + end.fc * (64 + 16));
      // resumed after step 8: the mask and the importance averages come back, and the run goes on as the straight one
      const twin = await Model.build(rt, { kind: 'cnn', image: [8, 8], channels: [4], hidden: 16, classes: 10 }, { seed: 1 });
      const again = adalora(cfg);
      const resumed = await Trainer.resume(join(dir, 'epoch-2.safetensors'), { model: twin, plugins: [again], ...opts });
      try {
        const at = await again.allocation();
        expect(at['convs.0'] + at.fc).toBe(seen[1]);
        await resumed.fit(data, { epochs: 3 });
        expect(await again.allocation()).toEqual(end);
        for (const m of ['convs.0', 'fc']) {
          const [a, b] = [adapter.set!.factors[m].gate, again.set!.factors[m].gate];
          expect(await a.sub(b).abs().amax().item(), m).toBeLessThanOrEqual(1e-6 * await a.abs().amax().item());
        }
      } finally { resumed.free(); again.free(); twin.free(); }
    } finally {
      trainer.free(); adapter.free(); data.free(); model.free();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the traced allocation is the pure functions replayed on the θ and ∇θ each step saw (recorded inside the step)', async () => {
    const all = await Dataset.builtin(rt, 'digits');
    const [rest, data] = all.split(256 / all.size, 0);
    all.free(); rest.free();
    const model = await Model.build(rt, { kind: 'cnn', image: [8, 8], channels: [4], hidden: 16, classes: 10 }, { seed: 0 });
    const [r, steps] = [4, 8];
    const cfg = { initR: r, targetR: 2, totalSteps: 10, tinit: 1, tfinal: 2, deltaT: 2 }; // reallocations at steps 2, 4, 6 and 8
    const sites = adapterSites(model, 'convs\\.0|fc');
    const adapter = adalora(cfg);
    // θ and ∇θ of every factor at afterOptimizerStep, before adalora's code there (the recorder is the first plugin)
    const rec: Record<string, { p: Tensor; g: Tensor; shape: number[] }> = {};
    for (const s of sites) {
      const sh = factorShapes(s, r);
      for (const [k, shape] of [['A', sh.A], ['B', sh.B], ['E', [r]]] as const) rec[`${s.module}.${k}`] = { p: rt.zeros([steps, ...shape]).keep(), g: rt.zeros([steps, ...shape]).keep(), shape: [...shape] };
    }
    const recorder = {
      attach: (h: TrainingHooks) => h.on('afterOptimizerStep', ({ step }) => {
        const at = step.sub(1).to('i64').reshape([1]);
        for (const s of sites) {
          const f = adapter.set!.factors[s.module];
          for (const [k, t] of [['A', f.A], ['B', f.B], ['E', f.gate]] as const) {
            const b = rec[`${s.module}.${k}`];
            rt.call('index_copy_', [b.p, 0, at, t.unsqueeze(0)]);
            rt.call('index_copy_', [b.g, 0, at, (rt.call('grad_of', [t]) as Tensor).unsqueeze(0)]);
          }
        }
      }),
    };
    const trainer = new Trainer({ model, optimizer: gd({ lr: 0.05 }), plugins: [recorder, adapter], epochs: 1, batchSize: 32, loss: 'cross_entropy', progress: 'none', logEvery: 1000 });
    try {
      await trainer.fit(data);
      expect(trainer.step).toBe(steps);
      const schedule = { initBudget: 2 * r, targetBudget: 4, tinit: 1, tfinal: 2, totalSteps: 10, deltaT: 2 };
      const mine: Record<string, { ipt: Tensor; unc: Tensor }> = Object.fromEntries(Object.entries(rec).map(([k, v]) => [k, { ipt: rt.zeros(v.shape), unc: rt.zeros(v.shape) }]));
      let mask: Tensor = rt.ones([2 * r]);
      for (let st = 1; st <= steps; st++) {
        const point = budgetAt(st, schedule);
        const scores = sites.map((s) => {
          for (const k of ['A', 'B', 'E']) {
            const b = rec[`${s.module}.${k}`], m = mine[`${s.module}.${k}`];
            smoothImportance(b.p.narrow(0, st - 1, 1).reshape(b.shape), b.g.narrow(0, st - 1, 1).reshape(b.shape), m.ipt, m.unc, 0.85, 0.85, rt.full([], +point.update).gt(0));
          }
          const score = (k: string) => mine[`${s.module}.${k}`].ipt.mul(mine[`${s.module}.${k}`].unc);
          return tripletScores(score('A'), score('E'), score('B'), r);
        });
        if (point.reallocate) mask = maskToBudget(rt.cat(scores, 0), rt.tensor(BigInt64Array.of(BigInt(point.budget)), [1]));
      }
      expect(await list((adapter as unknown as { mask: Tensor }).mask)).toEqual(await list(mask));
      const imp = (adapter as unknown as { imp: Record<string, Record<string, { ipt: Tensor; unc: Tensor }>> }).imp;
      for (const [key, m] of Object.entries(mine)) {
        const [module, k] = [key.slice(0, key.lastIndexOf('.')), key.slice(key.lastIndexOf('.') + 1)];
        for (const f of ['ipt', 'unc'] as const) {
          const [a, b] = [imp[module][k][f], m[f]];
          expect(await b.abs().amax().item(), `${key} ${f}`).toBeGreaterThan(0);
          expect(await a.sub(b).abs().amax().item(), `${key} ${f}`).toBeLessThanOrEqual(1e-6 * await b.abs().amax().item());
        }
      }
    } finally {
      trainer.free(); adapter.free(); data.free(); model.free();
      for (const v of Object.values(rec)) { v.p.free(); v.g.free(); }
    }
  });

  it("a step the Trainer skips (nonFinite 'skip') leaves the importance finite; a fit that ends before the budget's target says so", async () => {
    const data = await Dataset.builtin(rt, 'digits');
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 16, 10] }, { seed: 0 });
    const adapter = adalora({ initR: 4, targetR: 2, totalSteps: 40 });
    // a loss term that is NaN at step 2 only
    const poison = { attach: (h: TrainingHooks) => h.addLoss('poison', ({ step }) => rt.where(step.eq(2), NaN, 0)) };
    const trainer = new Trainer({ model, optimizer: gd({ lr: 0.1 }), plugins: [adapter, poison], epochs: 1, batchSize: 512, progress: 'none', nonFinite: 'skip' });
    const warned: string[] = [];
    const onWarning = (w: Error) => { warned.push(w.message); };
    process.on('warning', onWarning);
    try {
      const [r] = await trainer.fit(data); // 4 steps, the second skipped
      expect(r.skipped).toBe(1);
      const imp = (adapter as unknown as { imp: Record<string, Record<string, { ipt: Tensor; unc: Tensor }>> }).imp;
      for (const [m, by] of Object.entries(imp)) for (const [k, v] of Object.entries(by)) for (const t of [v.ipt, v.unc]) expect(await (rt.call('isfinite', [t]) as Tensor).all().item(), `${m} ${k}`).toBe(1);
      expect(adapter.pending).toMatch(/ended at step 4.*at step 40 = totalSteps − tfinal/);
      await new Promise((done) => setImmediate(done)); // warnings are emitted on the next tick
      expect(warned.some((w) => w === adapter.pending)).toBe(true);
    } finally { process.off('warning', onWarning); trainer.free(); adapter.free(); model.free(); data.free(); }
  });

  it('StepTrace.finite is known once the loss is: read at beforeStep it is E_ARG naming it', async () => {
    const data = await Dataset.builtin(rt, 'digits');
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 10] }, { seed: 0 });
    const early = { attach: (h: TrainingHooks) => h.on('beforeStep', (t) => { t.finite.logicalNot(); }) };
    const trainer = new Trainer({ model, optimizer: gd({ lr: 0.1 }), plugins: [early], epochs: 1, batchSize: 512, progress: 'none' });
    try {
      await expect(trainer.fit(data)).rejects.toMatchObject({ code: 'E_ARG', param: 'finite' });
    } finally { trainer.free(); model.free(); data.free(); }
  });

  it('a failed attach (no totalSteps) takes nothing onto the model: a corrected adapter goes on it', async () => {
    const data = await Dataset.builtin(rt, 'digits');
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 16, 10] }, { seed: 0 });
    try {
      const bad = adalora({});
      const t1 = new Trainer({ model, optimizer: gd({ lr: 0.1 }), plugins: [bad], epochs: 1, batchSize: 512, progress: 'none' });
      await expect(t1.fit(data)).rejects.toMatchObject({ code: 'E_ARG', param: 'totalSteps' });
      t1.free();
      expect(model.hookAt('output', 'layers.0')).toBe(undefined);
      const good = adalora({ totalSteps: 4 });
      const t2 = new Trainer({ model, optimizer: gd({ lr: 0.1 }), plugins: [good], epochs: 1, batchSize: 512, progress: 'none' });
      try {
        await t2.fit(data);
        expect(Object.keys(await good.allocation())).toEqual(['layers.0']);
      } finally { t2.free(); good.free(); }
    } finally { model.free(); data.free(); }
  });

  it('a merge by hand refuses the next fit as merge: true does, and unmerge restores the weights (1e-6)', async () => {
    const data = await Dataset.builtin(rt, 'digits');
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 16, 10] }, { seed: 0 });
    const w0 = model.param('layers.0.weight').clone().keep();
    const adapter = adalora({ initR: 4, targetR: 2, totalSteps: 40 }); // its orthogonality loss would move A and B while merged
    const trainer = new Trainer({ model, optimizer: gd({ lr: 0.1 }), plugins: [adapter], epochs: 1, batchSize: 128, progress: 'none' });
    try {
      await trainer.fit(data);
      await adapter.set!.merge();
      const A = adapter.set!.factors['layers.0'].A.clone().keep();
      await expect(trainer.fit(data)).rejects.toMatchObject({ code: 'E_ARG', message: expect.stringMatching(/unmerge\(\) before training again/) });
      expect(await adapter.set!.factors['layers.0'].A.sub(A).abs().amax().item()).toBe(0);
      A.free();
      await adapter.set!.unmerge();
      const w = model.param('layers.0.weight');
      expect(await w.sub(w0).abs().amax().item()).toBeLessThanOrEqual(1e-6 * await w0.abs().amax().item());
      await trainer.fit(data); // unmerged: trains again
    } finally { w0.free(); trainer.free(); adapter.free(); model.free(); data.free(); }
  });

  it('refuses a run without totalSteps, and a schedule that cannot fit, naming the field', async () => {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 8, 10] }, { seed: 0 });
    const data = await Dataset.builtin(rt, 'digits');
    try {
      for (const [cfg, field] of [[{}, 'totalSteps'], [{ totalSteps: 4, tinit: 2, tfinal: 2 }, 'totalSteps'], [{ totalSteps: 40, initR: 4, targetR: 6 }, 'targetR']] as const) {
        const adapter = adalora(cfg);
        const trainer = new Trainer({ model, optimizer: gd({ lr: 0.05 }), plugins: [adapter], epochs: 1, batchSize: 512, progress: 'none' });
        try {
          await expect(trainer.fit(data)).rejects.toMatchObject({ code: 'E_ARG', param: field });
        } finally { trainer.free(); adapter.free(); }
      }
    } finally { data.free(); model.free(); }
  });
});
