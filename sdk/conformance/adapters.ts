/**
 * Conformance suite of the Adapter family (sdk/families/adapters/types.ts).
 *
 * Every case attaches the adapter to a Trainer that fits a small CNN on the digits — a
 * conv2d (`convs.0`) and two nn.Linear (`fc`, and `head`, the output layer the family
 * leaves alone unless named) — with plain SGD, and checks the family's contract, never one
 * algorithm's numbers: a fresh adapter changes no output; training moves only the adapter's
 * parameters; merge, unmerge, save/load and the PEFT export agree with the side paths; a
 * resumed run equals a straight one. A plugin whose schedule spans the run reads its length
 * from a config field `totalSteps`: the suite sets it to the run's steps.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Type } from '@sinclair/typebox';
import type { Tensor } from '../../bridge/index.js';
import { AdapterSet } from '../adapters.js';
import { Dataset } from '../data.js';
import type { Adapter } from '../families/adapters/types.js';
import { MomentumOptimizerBase, OptimizerFields } from '../families/momentum/base.js';
import type { StepHyper } from '../families/momentum/types.js';
import { Model } from '../model.js';
import type { ModelSpec } from '../model-spec.js';
import type { PluginMeta } from '../plugin.js';
import { Trainer } from '../trainer.js';
import { type CaseContext, type CaseDef, check, registrationCases } from './suite.js';

type P = Adapter;

const SPEC: ModelSpec = { kind: 'cnn', image: [8, 8], channels: [4], hidden: 16, classes: 10 };
const BATCH = 64;
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const ROWS = 256; // 4 steps an epoch

/** Plain SGD, not registered: the suite's own optimizer. */
class Sgd extends MomentumOptimizerBase<{ lr: number }> {
  static readonly meta: PluginMeta = Object.freeze({
    name: 'conformance-sgd', version: '1.0.0', family: 'momentum-optimizer',
    schema: Type.Object({ lr: OptimizerFields.lr }), description: 'plain SGD, the adapter suite’s optimizer',
  });
  update(param: Tensor, grad: Tensor, _s: Record<string, Tensor>, { lr }: StepHyper): void {
    param.sub_(grad.mul(lr));
  }
}

/** What one case builds: the model, data, a Trainer with the adapter; freed by `free()`. */
interface Run { model: Model; adapter: P; trainer: Trainer; data: Dataset; x: Tensor; free(): void }

/** The overrides a case needs: the run's length for a plugin that schedules over it, and its own. */
function configFor(p: P, steps: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const fields = Object.keys(p.meta.schema.properties);
  return { ...(fields.includes('totalSteps') ? { totalSteps: steps } : {}), ...Object.fromEntries(Object.entries(extra).filter(([k]) => fields.includes(k))) };
}

/** A model, data and a Trainer with a fresh adapter (overrides applied when the subject is a factory). */
async function setup(ctx: CaseContext<P>, epochs: number, opts: { lr?: number; extra?: Record<string, unknown>; checkpointDir?: string; resumeFrom?: string } = {}): Promise<Run> {
  const { rt, seed } = ctx;
  const all = await Dataset.builtin(rt, 'digits');
  const [rest, data] = all.split(ROWS / all.size, seed);
  all.free(); rest.free();
  const model = await Model.build(rt, SPEC, { seed });
  const probe = ctx.plugin();
  const adapter = ctx.canOverride ? ctx.plugin(configFor(probe, epochs * (ROWS / BATCH), opts.extra)) : probe;
  const trainerOpts = { model, optimizer: new Sgd({ lr: opts.lr ?? 0.05 }, Sgd.meta), plugins: [adapter], epochs, batchSize: BATCH, loss: 'cross_entropy' as const, progress: 'none' as const, logEvery: 1000, seed };
  const trainer = opts.resumeFrom ? await Trainer.resume(opts.resumeFrom, trainerOpts) : new Trainer({ ...trainerOpts, ...(opts.checkpointDir ? { checkpointDir: opts.checkpointDir } : {}) });
  const x = data.x.narrow(0, 0, 32).keep();
  return { model, adapter, trainer, data, x, free: () => { trainer.free(); adapter.free(); x.free(); data.free(); model.free(); } };
}

/** max |a − b| ≤ tol · max(floor, max |b|): relative to b's size, down to `floor`. */
async function close(a: Tensor, b: Tensor, tol: number, what: string, floor = 1): Promise<void> {
  const diff = await a.sub(b).abs().amax().item();
  const scale = Math.max(floor, await b.abs().amax().item());
  check(diff <= tol * scale, `${what}: they differ by ${diff} (tolerance ${tol} × ${scale})`);
}

const forward = (r: Run) => r.model.forward(r.x, { train: false });
const set = (a: P) => { check(a.set !== null, 'after training, adapter.set is null: attach() must build and install an AdapterSet'); return a.set!; };

/** The Adapter cases. */
export function adapterCases(): CaseDef<P>[] {
  return [
    ...registrationCases<P>(),
    {
      name: 'attached: a fresh adapter leaves the outputs unchanged, the base frozen, the head left alone',
      async run(ctx) {
        const r = await setup(ctx, 1, { lr: 0 }); // lr 0: attached, every factor as it started
        try {
          const base = forward(r).keep();
          try {
            await r.trainer.fit(r.data);
            await close(forward(r), base, 1e-6, 'a fresh adapter (B = 0, or a zero gate) changed the model\'s outputs');
          } finally { base.free(); }
          const params = r.trainer.paramList();
          const live = params.filter((p) => !p.plugin && p.trainable).map((p) => p.name);
          check(!live.length, `the model's own parameters must all be frozen; trainable: ${live.join(', ')}`);
          const modules = Object.keys(set(r.adapter).sites);
          check(modules.length > 0 && !modules.includes('head'), `the adapted modules are ${modules.join(', ') || 'none'}; the default targets take every Linear / Conv but the output layer 'head'`);
          check(modules.includes('convs.0') && modules.includes('fc'), `the default targets must adapt the conv 'convs.0' and the Linear 'fc'; got ${modules.join(', ')}`);
          const pattern = await r.adapter.rankPattern();
          check(Object.keys(pattern).every((m) => modules.includes(m)), `rankPattern() names modules that are not adapted: ${Object.keys(pattern).join(', ')}`);
        } finally { r.free(); }
      },
    },
    {
      name: "targets naming the head ('fc|head') adapt it",
      skipFor: (_p, subject) => (typeof subject === 'function' ? undefined : 'needs a config with targets set (give the suite the factory)'),
      async run(ctx) {
        const named = await setup(ctx, 1, { lr: 0, extra: { targets: 'fc|head' } });
        try {
          await named.trainer.fit(named.data);
          const modules = Object.keys(set(named.adapter).sites).sort();
          check(modules.join() === 'fc,head', `targets 'fc|head' names the head: the adapted modules must be fc and head, got ${modules.join(', ')}`);
        } finally { named.free(); }
      },
    },
    {
      name: 'training moves only the adapter: every model parameter and buffer bit for bit as it was, A and B trained',
      async run(ctx) {
        const r = await setup(ctx, 2);
        try {
          // the whole state_dict: buffers too (a norm's running statistics are the base's as much as its weights)
          const before = Object.fromEntries(Object.entries(r.model.state()).map(([k, t]) => [k, t.clone().keep()]));
          try {
            await r.trainer.fit(r.data);
            for (const [name, t] of Object.entries(r.model.state())) {
              const same = await t.eq(before[name]).all().item();
              check(same === 1, `'${name}' changed in training: the base must stay bit for bit (frozen, and never written while the update is apart)`);
            }
          } finally { for (const t of Object.values(before)) t.free(); }
          // the factors as they started: a twin attached with lr 0 (the same config and seed)
          const twin = await setup(ctx, 2, { lr: 0 });
          try {
            await twin.trainer.fit(twin.data, { epochs: 1 });
            // A and B each, summed over the modules: an adapter that never trains one of them fails
            const moved = { A: 0, B: 0 };
            for (const [m, f] of Object.entries(set(r.adapter).factors)) {
              const g = set(twin.adapter).factors[m];
              for (const k of ['A', 'B'] as const) moved[k] += await f[k].sub(g[k]).abs().sum().item();
            }
            for (const k of ['A', 'B'] as const) check(moved[k] > 0, `after 2 epochs every module's ${k} is as it started: the adapter did not train its ${k} factors`);
          } finally { twin.free(); }
        } finally { r.free(); }
      },
    },
    {
      name: 'merge then forward equals the side paths (1e-5); unmerge restores the stored weights (1e-6) and the side paths',
      async run(ctx) {
        const merging = ctx.canOverride && 'merge' in ctx.plugin().meta.schema.properties;
        const r = await setup(ctx, 2, { extra: { merge: true } });
        try {
          const weights = Object.fromEntries(r.model.params.map((p) => [p.name, r.model.param(p.name).clone().keep()]));
          try {
            await r.trainer.fit(r.data);
            const s = set(r.adapter);
            if (merging) check(s.merged, 'config merge: true, and the update is not merged after fit()');
            else await s.merge();
            const merged = forward(r).keep();
            try {
              await s.unmerge();
              check(!s.merged, 'unmerge() left the set merged');
              for (const p of r.model.params) await close(r.model.param(p.name), weights[p.name], 1e-6, `unmerge(): '${p.name}' against its value before training`);
              await close(forward(r), merged, 1e-5, 'the merged forward against the side paths\' forward');
              await s.merge();
              await close(forward(r), merged, 1e-5, 'merging again');
            } finally { merged.free(); }
          } finally { for (const t of Object.values(weights)) t.free(); }
        } finally { r.free(); }
      },
    },
    {
      name: 'save then load: the same outputs from the file, onto a freshly built model',
      async run(ctx) {
        const r = await setup(ctx, 2);
        const dir = mkdtempSync(join(tmpdir(), 'liaison-adapter-save-'));
        let twin: Model | null = null;
        let loaded: AdapterSet | null = null;
        try {
          await r.trainer.fit(r.data);
          const path = join(dir, 'adapted.safetensors');
          await set(r.adapter).save(path);
          twin = await Model.build(ctx.rt, SPEC, { seed: ctx.seed + 1 });
          loaded = await AdapterSet.load(twin, path);
          await close(twin.forward(r.x, { train: false }), forward(r), 1e-6, 'the loaded model + adapters against the trained ones');
        } finally {
          loaded?.free();
          twin?.free();
          r.free();
          rmSync(dir, { recursive: true, force: true });
        }
      },
    },
    {
      name: "PEFT tensors: a lora_A / lora_B pair per module with components, shaped by rankPattern(); parameterCount() is their size",
      async run(ctx) {
        const r = await setup(ctx, 2);
        try {
          await r.trainer.fit(r.data);
          const s = set(r.adapter);
          const pattern = await r.adapter.rankPattern();
          const { tensors } = await s.peftTensors();
          let size = 0;
          for (const [module, site] of Object.entries(s.sites)) {
            const rank = pattern[module] ?? 0;
            const key = (f: string) => `base_model.model.${module}.lora_${f}.weight`;
            if (rank === 0) {
              for (const f of ['A', 'B']) check(!(key(f) in tensors), `'${module}' has no component in the sum, and the export holds ${key(f)}`);
              continue;
            }
            const [a, b] = [tensors[key('A')], tensors[key('B')]];
            check(!!a && !!b, `rankPattern() gives '${module}' ${rank} components, and the export lacks ${a ? key('B') : key('A')}`);
            const [sa, sb] = [(await a.info()).shape, (await b.info()).shape];
            const want = { A: [rank, site.in, ...site.kernel], B: [site.out, rank, ...site.kernel.map(() => 1)] };
            check(sa.join() === want.A.join() && sb.join() === want.B.join(), `'${module}': exported A [${sa}] and B [${sb}]; rankPattern() says ${rank} components: A [${want.A}], B [${want.B}]`);
            size += numel(sa) + numel(sb);
          }
          const count = await r.adapter.parameterCount();
          check(count === size, `parameterCount() is ${count}; the exported tensors hold ${size} entries`);
        } finally { r.free(); }
      },
    },
    {
      name: 'resumed from a checkpoint mid-run: the same factors and outputs as a straight run',
      skipFor: (_p, subject) => (typeof subject === 'function' ? undefined : 'needs fresh instances for the straight and the resumed run (give the suite the factory)'),
      async run(ctx) {
        const EPOCHS = 3;
        const dir = mkdtempSync(join(tmpdir(), 'liaison-adapter-resume-'));
        const runs: Run[] = [];
        try {
          const straight = await setup(ctx, EPOCHS, { checkpointDir: dir });
          runs.push(straight);
          await straight.trainer.fit(straight.data);
          const resumed = await setup(ctx, EPOCHS, { resumeFrom: join(dir, 'epoch-1.safetensors') });
          runs.push(resumed);
          await resumed.trainer.fit(resumed.data, { epochs: EPOCHS - 1 });
          const [a, b] = [set(straight.adapter), set(resumed.adapter)];
          for (const [module, f] of Object.entries(a.factors)) {
            const g = b.factors[module];
            check(!!g, `the resumed adapter has no factors on '${module}'`);
            // relative to each tensor's own size: a gate of trained singular values may be small
            for (const k of ['A', 'B', 'gate'] as const) await close(g[k], f[k], 1e-5, `'${module}' ${k} of the resumed run against the straight run's (its state must come back from the checkpoint)`, 1e-12);
          }
          const [pa, pb] = [await straight.adapter.rankPattern(), await resumed.adapter.rankPattern()];
          check(JSON.stringify(pa) === JSON.stringify(pb), `rank pattern straight ${JSON.stringify(pa)}, resumed ${JSON.stringify(pb)}`);
          await close(forward(resumed), forward(straight), 1e-5, 'outputs of the resumed run against the straight run\'s');
        } finally {
          for (const r of runs.reverse()) r.free();
          rmSync(dir, { recursive: true, force: true });
        }
      },
    },
  ];
}
