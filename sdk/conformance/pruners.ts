/**
 * Conformance suite of the Pruner family (sdk/families/pruners/types.ts).
 *
 * The unit cases call `masks()` on seeded weights of realistic shapes (linear and conv);
 * the end-to-end case attaches the pruner to a Trainer that fits a small MLP on the
 * digits with heavy-ball momentum — the optimizer that revives pruned weights unless the
 * masks are re-applied after every step.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import type { Runtime, Tensor } from '../../bridge/index.js';
import { Dataset } from '../data.js';
import { MomentumOptimizerBase, OptimizerFields } from '../families/momentum/base.js';
import type { StepHyper } from '../families/momentum/types.js';
import { PrunerBase } from '../families/pruners/base.js';
import { ScorePrunerBase } from '../families/pruners/score.js';
import type { PrunableWeight, Pruner } from '../families/pruners/types.js';
import type { ParamInfo } from '../hooks.js';
import { Model } from '../model.js';
import type { PluginMeta } from '../plugin.js';
import { Trainer } from '../trainer.js';
import { type CaseDef, check, registrationCases, values } from './suite.js';

type P = Pruner;

const SHAPES = [[16, 8], [10, 16], [4, 2, 3, 3]];
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function weights(rt: Runtime, seed: number): PrunableWeight[] {
  return SHAPES.map((shape, i) => ({ name: `layers.${i}.weight`, weight: rt.randn(shape, { seed: seed + i }), shape }));
}

/** Entries equal to zero, over tensors. */
async function zeros(ts: Tensor[]): Promise<number> {
  let n = 0;
  for (const t of ts) n += await t.eq(0).sum().item();
  return n;
}

/** Whole rows (a neuron's, a filter's weights) a unit-granularity mask keeps or drops: the first row that mixes 0 and 1, or -1. */
async function mixedRow(mask: Tensor, shape: readonly number[]): Promise<number> {
  const rows = mask.reshape([shape[0], -1]);
  const mixed = await values(rows.amax(1).ne(rows.amin(1)).to('f32'));
  return mixed.findIndex((v) => v !== 0);
}

/** How far the pruned count may miss `sparsity · total`: one entry, or for whole-row masks one row of every weight. */
function slack(p: P, shapes: readonly (readonly number[])[]): number {
  return p.granularity === 'unit' ? shapes.reduce((a, s) => a + numel(s) / s[0], 0) : 1;
}

/** A pruner's masks in force by parameter name (a `'hook'`-mode pruner must report them). */
async function masksOf(p: P, names: string[]): Promise<Record<string, Tensor>> {
  check(typeof p.currentMasks === 'function', "mode 'hook': the pruner has no currentMasks(); its stored weights do not show its masks, so it must report them");
  const m = p.currentMasks!();
  const missing = names.filter((n) => !(m[n] && typeof m[n] === 'object'));
  check(!missing.length, `currentMasks() has no mask for ${missing.join(', ')}`);
  return m;
}

/**
 * Mode 'hook': the forward must use W ⊙ mask. The model's own forward (hooks installed) is
 * compared with a second model of the same spec holding W ⊙ mask in its stored weights.
 */
async function checkHookForward(rt: Runtime, model: Model, masks: Record<string, Tensor>, x: Tensor, seed: number): Promise<void> {
  const twin = await Model.build(rt, model.spec!, { seed });
  try {
    twin.loadState(model.state());
    for (const [name, m] of Object.entries(masks)) twin.param(name).mul_(m).free();
    const a = model.forward(x, { train: false });
    const b = twin.forward(x, { train: false });
    const diff = await a.sub(b).abs().amax().item();
    const scale = Math.max(1, await b.abs().amax().item());
    check(diff <= 1e-4 * scale, `mode 'hook': the model's forward differs from the forward with W ⊙ mask in the stored weights by ${diff}: the weight hooks do not apply the masks currentMasks() reports`);
  } finally {
    twin.free();
  }
}

/** The overrides that make a pruner prune once, before training, when its config has PrunerBase's fields. */
function pruneNow(p: P, sparsity: number): Record<string, unknown> {
  const fields = Object.keys(p.meta.schema.properties);
  const o: Record<string, unknown> = {};
  if (fields.includes('sparsity')) o.sparsity = sparsity;
  if (fields.includes('atEpoch')) o.atEpoch = 0;
  if (fields.includes('rounds')) o.rounds = 1;
  return o;
}

/**
 * Heavy-ball momentum (β = 0.9), not registered: the suite's own optimizer, chosen because
 * its velocity moves a pruned weight off zero at the next step unless the mask is applied.
 */
class HeavyBall extends MomentumOptimizerBase<{ lr: number }> {
  static readonly meta: PluginMeta = Object.freeze({
    name: 'conformance-heavy-ball', version: '1.0.0', family: 'momentum-optimizer',
    schema: Type.Object({ lr: OptimizerFields.lr }), description: 'heavy-ball momentum (β = 0.9), the pruner suite’s optimizer',
  });
  override init(_p: Tensor, info: ParamInfo, rt: Runtime): Record<string, Tensor> {
    return { v: rt.zeros(info.shape) };
  }
  update(param: Tensor, grad: Tensor, { v }: Record<string, Tensor>, { lr }: StepHyper): void {
    v.mul_(0.9).add_(grad);
    param.sub_(v.mul(lr));
  }
}

/** The Pruner cases. */
export function prunerCases(): CaseDef<P>[] {
  return [
    ...registrationCases<P>(),
    {
      name: 'masks(): one per weight, shaped as it, 0/1, at the requested sparsity within one entry',
      async run({ rt, plugin, seed }) {
        const pruner = plugin();
        const ws = weights(rt, seed);
        const total = SHAPES.reduce((a, s) => a + numel(s), 0);
        for (const sparsity of [0.3, 0.75]) {
          const masks = pruner.masks(ws, { rt, round: 0, current: SHAPES.map((s) => rt.ones(s)), sparsity });
          check(Array.isArray(masks) && masks.length === ws.length, `masks() returned ${Array.isArray(masks) ? masks.length : typeof masks} masks for ${ws.length} weights`);
          for (const [i, m] of masks.entries()) {
            const shape = (await m.info()).shape;
            check(shape.join() === SHAPES[i].join(), `mask ${i} has shape [${shape}], its weight [${SHAPES[i]}]`);
            check((await values(m)).every((v) => v === 0 || v === 1), `mask ${i} holds values other than 0 and 1`);
          }
          if (pruner.granularity === 'unit') {
            for (const [i, m] of masks.entries()) {
              const row = await mixedRow(m, SHAPES[i]);
              check(row < 0, `granularity 'unit': row ${row} of mask ${i} (shape [${SHAPES[i]}]) mixes kept and pruned entries; a unit is kept or dropped whole`);
              // whole rows per weight: the sparsity is met in each weight's rows, to one row
              const [rows, want] = [await zeros([m]) / (numel(SHAPES[i]) / SHAPES[i][0]), Math.round(sparsity * SHAPES[i][0])];
              check(Math.abs(rows - want) <= 1, `granularity 'unit': mask ${i} drops ${rows} of ${SHAPES[i][0]} rows; sparsity ${sparsity} asks for ${want}`);
            }
          }
          const pruned = await zeros(masks);
          const want = Math.round(sparsity * total);
          const tol = slack(pruner, SHAPES);
          check(Math.abs(pruned - want) <= tol, `sparsity ${sparsity} of ${total} entries asks for ${want} pruned (± ${tol}); the masks prune ${pruned}`);
        }
      },
    },
    {
      name: "score-based: score() shaped as each weight; scope 'layer' prunes every weight at the sparsity, 'global' the total; a pruned entry stays pruned",
      skipFor: (p) => (p instanceof ScorePrunerBase ? undefined : 'writes masks() itself, not score() on ScorePrunerBase'),
      async run({ rt, plugin, seed, canOverride }) {
        const probe = plugin() as unknown as ScorePrunerBase<{ sparsity: number; atEpoch: number; rounds: number }>;
        const ws = weights(rt, seed);
        const ctx = { rt, round: 0, current: SHAPES.map((s) => rt.ones(s)), sparsity: 0.5 };
        for (const [i, w] of ws.entries()) {
          const shape = (await probe.score(w, ctx, i).info()).shape;
          check(shape.join() === w.shape.join(), `score() of '${w.name}' has shape [${shape}], its weight [${w.shape}]`);
        }
        if (!canOverride) return; // an instance keeps the scope it was made with
        for (const scope of ['layer', 'global'] as const) {
          const p = plugin({ scope }) as unknown as ScorePrunerBase<{ sparsity: number; atEpoch: number; rounds: number }>;
          // round 1 after a first round at 0.4: 0.7 of each weight pruned, the first round's entries among them
          const first = p.masks(ws, { ...ctx, sparsity: 0.4 });
          const next = p.masks(ws, { ...ctx, round: 1, current: first, sparsity: 0.7 });
          for (const [i, m] of next.entries()) {
            const revived = await m.gt(first[i]).sum().item();
            check(revived === 0, `scope '${scope}': ${revived} entries of weight ${i} pruned in round 0 are kept in round 1`);
          }
          if (scope === 'layer') {
            for (const [i, m] of next.entries()) {
              const [pruned, want] = [await zeros([m]), Math.round(0.7 * numel(SHAPES[i]))];
              check(Math.abs(pruned - want) <= 1, `scope 'layer': weight ${i} (${numel(SHAPES[i])} entries) has ${pruned} pruned; sparsity 0.7 asks for ${want}`);
            }
          } else {
            const total = SHAPES.reduce((a, sh) => a + numel(sh), 0);
            check(await zeros(next) === Math.round(0.7 * total), `scope 'global': ${await zeros(next)} of ${total} entries pruned; sparsity 0.7 asks for ${Math.round(0.7 * total)}`);
          }
        }
      },
    },
    {
      name: 'selects(): weights (rank ≥ 2) by default, not biases',
      skipFor: (p) => (p instanceof PrunerBase && p.selects !== PrunerBase.prototype.selects ? 'overrides selects(): it chooses its own parameters' : undefined),
      async run({ plugin }) {
        const p = plugin();
        const info = (name: string, shape: number[]): ParamInfo => ({ name, shape, dtype: 'f32', numel: numel(shape) });
        check(p.selects(info('layers.0.weight', [16, 8])), 'selects() refuses a linear weight (16, 8)');
        check(p.selects(info('convs.0.weight', [4, 1, 3, 3])), 'selects() refuses a conv weight (4, 1, 3, 3)');
        check(!p.selects(info('layers.0.bias', [16])), 'selects() takes a bias (16,)');
      },
    },
    {
      name: 'attached to a Trainer on a small MLP: pruned entries stay zero through momentum steps, at the requested sparsity',
      async run(ctx) {
        const { rt, seed } = ctx;
        const probe = ctx.plugin();
        const pruner = ctx.canOverride ? ctx.plugin(pruneNow(probe, 0.6)) : probe;
        const cfg = pruner.config as Record<string, unknown>;
        const sparsity = typeof cfg.sparsity === 'number' ? cfg.sparsity : undefined;
        // an instance keeps its own schedule: train until its last round has run
        const epochs = ctx.canOverride ? 2 : Math.max(2, Number(cfg.atEpoch ?? 0) + Number(cfg.rounds ?? 1) + 1);
        const data = await Dataset.builtin(rt, 'digits');
        const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 24, 10] }, { seed });
        const optimizer = new HeavyBall({ lr: 0.05 }, HeavyBall.meta);
        const trainer = new Trainer({ model, optimizer, plugins: [pruner], epochs, batchSize: 256, loss: 'cross_entropy', progress: 'none', logEvery: 1000 });
        try {
          await trainer.fit(data);
          const chosen = model.params.filter((p) => pruner.selects(p));
          check(chosen.length > 0, 'the pruner selects none of the MLP\'s parameters');
          const total = chosen.reduce((a, p) => a + p.numel, 0);
          if (pruner.granularity === 'unit') {
            // dropping a row of the output layer drops a class (or an output) outright
            const out = model.params.filter((p) => p.shape.length >= 2).at(-1)!;
            check(!pruner.selects(out), `granularity 'unit': selects the output layer '${out.name}' (${out.shape[0]} outputs); a unit pruner drops hidden neurons and filters, never outputs`);
          }
          const hooked = pruner.mode === 'hook';
          // 'hook': the stored weights stay whole; what the forward uses is W ⊙ mask
          const masks = hooked ? await masksOf(pruner, chosen.map((p) => p.name)) : null;
          const effective = chosen.map((p) => (masks ? model.param(p.name).mul(masks[p.name]) : model.param(p.name)));
          // a live weight lands on exactly 0.0 with probability ~0: the zeros are the masked entries
          const pruned = await zeros(effective);
          check(pruned > 0, `no selected weight is ${hooked ? 'masked' : 'zero'} after ${epochs} epochs: the masks are not applied (or momentum revived them)`);
          if (sparsity !== undefined) {
            const want = Math.round(sparsity * total);
            const tol = slack(pruner, chosen.map((p) => p.shape));
            check(Math.abs(pruned - want) <= tol, `after training, ${pruned} of ${total} selected entries are ${hooked ? 'masked' : 'zero'}; sparsity ${sparsity} asks for ${want} (± ${tol})${hooked ? '' : ': masks must be re-applied after every optimizer step'}`);
          }
          if (masks) await checkHookForward(rt, model, masks, data.x.narrow(0, 0, 32), seed);
        } finally {
          // what outlives the case's scope: the trainer's, the pruner's, the data, the model
          trainer.free();
          (pruner as Partial<{ free(): void }>).free?.();
          data.free();
          model.free();
        }
      },
    },
    {
      name: 'resumed from a checkpoint mid-schedule: the same masks and weights as a straight run',
      skipFor: (_p, subject) => (typeof subject === 'function' ? undefined : 'needs fresh instances for the straight and the resumed run (give the suite the factory)'),
      async run(ctx) {
        const { rt, seed } = ctx;
        const probe = ctx.plugin();
        const fields = Object.keys(probe.meta.schema.properties);
        // a round after epoch 0 and one after epoch 1 (where the schedule has those fields); the checkpoint falls between them
        const o: Record<string, unknown> = {};
        if (fields.includes('sparsity')) o.sparsity = 0.6;
        if (fields.includes('atEpoch')) o.atEpoch = 1;
        if (fields.includes('rounds')) o.rounds = 2;
        if (fields.includes('every')) o.every = 1;
        const EPOCHS = 3;
        const data = await Dataset.builtin(rt, 'digits');
        const dir = mkdtempSync(join(tmpdir(), 'liaison-pruner-resume-'));
        const made: { free(): void }[] = [data];
        const run = async (resumeFrom?: string) => {
          const pruner = ctx.plugin(o);
          const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 24, 10] }, { seed });
          const optimizer = new HeavyBall({ lr: 0.05 }, HeavyBall.meta);
          const opts = { model, optimizer, plugins: [pruner], epochs: EPOCHS, batchSize: 256, loss: 'cross_entropy' as const, progress: 'none' as const, logEvery: 1000, seed, checkpointSnapshots: true };
          const trainer = resumeFrom ? await Trainer.resume(resumeFrom, opts) : new Trainer({ ...opts, checkpointDir: dir });
          made.push(model, { free: () => (pruner as Partial<{ free(): void }>).free?.() }, trainer); // freed in reverse: the trainer, the pruner, the model
          await trainer.fit(data, { epochs: resumeFrom ? EPOCHS - 1 : EPOCHS });
          const chosen = model.params.filter((p) => pruner.selects(p));
          const masks = pruner.mode === 'hook' ? await masksOf(pruner, chosen.map((p) => p.name)) : null;
          const zeroed = await zeros(chosen.map((p) => (masks ? model.param(p.name).mul(masks[p.name]) : model.param(p.name))));
          return { model, zeroed };
        };
        try {
          const straight = await run();
          const resumed = await run(join(dir, 'epoch-1.safetensors'));
          check(resumed.zeroed === straight.zeroed, `the resumed run has ${resumed.zeroed} pruned entries, the straight run ${straight.zeroed}: the pruner's schedule or masks were not restored from the checkpoint`);
          for (const p of straight.model.params) {
            const a = straight.model.param(p.name);
            const diff = await a.sub(resumed.model.param(p.name)).abs().amax().item();
            const scale = Math.max(1, await a.abs().amax().item());
            check(diff <= 1e-4 * scale, `'${p.name}' differs by ${diff} between the straight run and the run resumed after epoch 1: the pruner's state (masks, round, snapshots) must come back from the checkpoint`);
          }
        } finally {
          for (const m of made.reverse()) m.free();
          rmSync(dir, { recursive: true, force: true });
        }
      },
    },
  ];
}
