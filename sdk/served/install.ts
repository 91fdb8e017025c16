/**
 * What {@link Service.install} (sdk/served.ts) traces for one plugin: the programs a served
 * script replays at its step moments, as the Trainer traces them into its step
 * (sdk/trainer.ts), but each moment its own program, since the script's own code runs
 * between them.
 *
 * - An optimizer plugin (the momentum-optimizer family): `update()` traced over every
 *   parameter the script's optimizer holds (traceEach, as the Trainer does), its state made
 *   by `init()`; the program `svc.optimizer.step()` replays. Inputs: lr () and step ().
 * - A router: set into the served model's MoE layers (`Model.setRouter`): a liaison MoE
 *   model the script built has router hook points, which its forward runs; a plain
 *   `nn.Module` has none (E_ARG).
 * - A KV policy: set into the served model's attention layers (`Model.setKVPolicy`): a
 *   liaison GPT the script built has a `kv` hook point per layer, which its cached decoding
 *   (`svc.generate`, `svc.kv_eval` in the script) runs; a plain `nn.Module` has none (E_ARG).
 * - Any other plugin with `attach(hooks)` (a pruner): attached to a {@link HookRegistry};
 *   each traced point it used becomes a program (inputs lr, step), its loss terms one more
 *   (`svc.extra_loss()` runs it), and its loop points stay TypeScript functions run when the
 *   script's event arrives.
 *
 * What a served script cannot give a plugin is refused with E_ARG naming it: parameters of
 * its own, freezing, snapshots and rewinding, the optimizer's state (the Trainer's
 * ParamControl), metrics, an LR schedule (the script's own scheduler sets the rate).
 */
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { pluginRecord } from '../checkpoint.js';
import { traceUpdate } from '../families/momentum/base.js';
import type { MomentumOptimizer } from '../families/momentum/types.js';
import type { KVPolicy } from '../families/kv-policies/types.js';
import type { Router } from '../families/routers/types.js';
import { LOOP_POINTS, type LoopPoint, type ParamControl, type StepTrace, TRACED_POINTS, type TrainerPlugin } from '../hooks.js';
import type { Model } from '../model.js';
import { define, noGrad, type Program, traceEach } from '../program.js';
import { HookRegistry } from '../training-hooks.js';

/** The plugins a served script takes: an optimizer, a plugin that attaches to training hooks, a router (for a served liaison MoE model), a KV policy (for a served liaison GPT). */
export type ServedPlugin = MomentumOptimizer | TrainerPlugin | Router | KVPolicy;

/** One plugin's programs and what they hold, as installed under `key`. */
export interface Traced {
  key: string;
  model: string;
  /** The `serve_install` op's fields: program handles, names, state. */
  fields: Record<string, unknown>;
  /** Everything made for it: freed on uninstall. */
  made: { free(): void }[];
  /** The hooks it attached (not for an optimizer): loop points run here. */
  hooks?: HookRegistry;
  /** A KV policy's attention layers (those it still holds: a later policy takes over the layers it is set on). */
  layers?: number[];
}

const STEP_INPUTS = { lr: { dtype: 'f32', shape: [] }, step: { dtype: 'f32', shape: [] } } as const;

/** Steps at which a constant rate is checked: a schedule changes it by then. */
const SCHEDULE_PROBES = [1, 2, 10, 100, 1000, 10_000, 100_000];

const FAMILY_WHY: Record<string, string> = {
  deflator: 'a deflator is not a training plugin (it runs in PCA)',
  adapter: 'an adapter adds parameters of its own, which a served script does not optimize yet',
};

export function isRouter(p: unknown): p is Router {
  return (p as { meta?: { family?: string } })?.meta?.family === 'router';
}

export function isKVPolicy(p: unknown): p is KVPolicy {
  return (p as { meta?: { family?: string } })?.meta?.family === 'kv-policy';
}

export function isOptimizer(p: unknown): p is MomentumOptimizer {
  return (p as { meta?: { family?: string } })?.meta?.family === 'momentum-optimizer';
}

/** E_ARG for a plugin a served script cannot take, naming why; nothing for one it can. */
export function checkServable(plugin: unknown): void {
  const family = (plugin as { meta?: { family?: string } })?.meta?.family;
  if (family && FAMILY_WHY[family]) {
    throw new LiaisonError('E_ARG', `Service.install: ${pluginRecord(plugin as object).id}: a served script cannot take a ${family} plugin: ${FAMILY_WHY[family]}`, { param: 'plugin' });
  }
  if (!isOptimizer(plugin) && !isRouter(plugin) && !isKVPolicy(plugin) && typeof (plugin as TrainerPlugin)?.attach !== 'function') {
    throw new LiaisonError('E_ARG', 'Service.install: plugin must be an optimizer plugin (momentum-optimizer family), a router, a KV policy, or a plugin with attach(hooks) (a pruner)', { param: 'plugin' });
  }
}

/** The optimizer's update over `names`, its state, and the install fields. */
export function traceOptimizer(rt: Runtime, key: string, model: Model, modelName: string, optimizer: MomentumOptimizer, names: readonly string[]): Traced {
  const lr = optimizer.learningRate(1);
  const moving = SCHEDULE_PROBES.find((s) => optimizer.learningRate(s) !== lr);
  if (moving !== undefined) {
    throw new LiaisonError('E_ARG', `Service.install: ${pluginRecord(optimizer).id} changes its learning rate over the steps (${lr} at step 1, ${optimizer.learningRate(moving)} at step ${moving}); a served script's rate is its optimizer's param_groups[0]['lr']: give the plugin a constant rate and put a torch LR scheduler on svc.optimizer`, { param: 'plugin' });
  }
  if (!names.length) throw new LiaisonError('E_ARG', `Service.install: the script's optimizer holds no parameter of model '${modelName}': serve it with optimizer= over that model's parameters`, { param: 'model' });
  const made: { free(): void }[] = [];
  const entries = names.map((name) => {
    const info = model.params.find((p) => p.name === name);
    if (!info) throw new LiaisonError('E_ARG', `Service.install: the served model '${modelName}' has no parameter '${name}'`, { param: 'params' });
    const param = model.param(name).keep();
    const state = optimizer.init(param, info, rt);
    for (const t of Object.values(state)) t.keep();
    made.push(param, ...Object.values(state));
    return { name, param, state };
  });
  const program = define(rt, { name: `${key}/update`, inputs: STEP_INPUTS }, ({ lr: lrT, step }) => {
    noGrad(rt, () => {
      const hp = { lr: lrT, step };
      const prepared = optimizer.prepare?.(hp); // shared by every parameter's update()
      traceEach(rt, entries, (e) => traceUpdate(optimizer, e.name, e.param, model.grad(e.name), e.state, hp, prepared));
    });
  });
  made.push(program);
  const state = Object.fromEntries(entries.map((e) => [e.name, e.state]));
  return { key, model: modelName, fields: { update: program.handle, params: [...names], state, lr }, made };
}

/** The hooks a served plugin sees for what only a Trainer has. */
function servedControl(model: Model, step: () => number): ParamControl {
  const refuse = (what: string) => (): never => {
    throw new LiaisonError('E_ARG', `hooks.${what}: a served script does not support ${what} yet; plugins that need it run in the Trainer or a loop of your own (docs/any-loop.md)`, { param: 'hooks' });
  };
  return {
    addParam: refuse('addParam'), freeze: refuse('freeze'), unfreeze: refuse('unfreeze'),
    optimizerState: refuse('optimizerState'), snapshot: refuse('snapshot'), rewind: refuse('rewind'), resetOptimizer: refuse('resetOptimizer'),
    params: () => model.params.map((p) => ({ name: p.name, shape: p.shape, module: p.name.includes('.') ? p.name.slice(0, p.name.lastIndexOf('.')) : '', trainable: true, plugin: false, hasState: false })),
    get step() { return step(); },
  };
}

/** Attach `plugin` and trace the points it used. */
export async function attachPlugin(rt: Runtime, key: string, model: Model, modelName: string, plugin: TrainerPlugin, step: () => number): Promise<Traced> {
  const hooks = new HookRegistry(rt, model, servedControl(model, step));
  await plugin.attach(hooks.forPlugin(0));
  if (hooks.metrics.length) {
    throw new LiaisonError('E_ARG', `Service.install: ${pluginRecord(plugin).id} adds metrics (${hooks.metrics.map((m) => m.name).join(', ')}), which a served script does not report yet`, { param: 'plugin' });
  }
  const t: Traced = { key, model: modelName, fields: {}, made: [], hooks };
  retrace(rt, t, model);
  return t;
}

/** (Re)trace an attached plugin's programs from its hooks as they are now. */
export function retrace(rt: Runtime, t: Traced, model: Model): void {
  const hooks = t.hooks!;
  for (const m of t.made) m.free();
  t.made = [];
  const trace = (lr: Tensor, step: Tensor): StepTrace => {
    let yes: Tensor | null = null; // () bool true: a served script applies every step it takes
    return { rt, model, lr, step, get finite(): Tensor { return (yes ??= (rt.call('isfinite', [rt.zeros([])]) as Tensor)); } };
  };
  const points: Record<string, Tensor> = {};
  for (const point of TRACED_POINTS) {
    const fns = hooks.traced[point];
    if (!fns.length) continue;
    const p: Program = define(rt, { name: `${t.key}/${point}`, inputs: STEP_INPUTS }, ({ lr, step }) => {
      const st = trace(lr, step);
      const run = () => { for (const fn of fns) fn(st); };
      if (point === 'afterOptimizerStep') noGrad(rt, run);
      else run();
    });
    t.made.push(p);
    points[point] = p.handle;
  }
  let loss: Program | null = null;
  if (hooks.losses.length) {
    loss = define(rt, { name: `${t.key}/loss`, inputs: STEP_INPUTS }, ({ lr, step }) => {
      const st = trace(lr, step);
      return hooks.losses.map((l) => l.fn(st)).reduce((a, b) => a.add(b));
    });
    t.made.push(loss);
  }
  const loops: LoopPoint[] = LOOP_POINTS.filter((p) => hooks.loop[p].length > 0);
  t.fields = { points, ...(loss ? { loss: loss.handle } : {}), loops };
  hooks.stale = false;
}
