/**
 * Trainer.resume's checks and copies (sdk/trainer.ts): a checkpoint is validated entry by
 * entry — name, dtype and shape of the model's state, the optimizer's state and every
 * plugin's state — against what will receive it, and only then written. A refused
 * checkpoint leaves the model, the optimizer's state and the counters as they were.
 *
 * The plugins' state names are known only once the plugins have attached, and attaching
 * may change the model (a pruner that prunes before training starts). So everything that
 * can be checked without them is checked first; when they must attach for the rest, the
 * model's state is copied in the runtime beforehand and put back if the rest is refused.
 */
import { LiaisonError, type Runtime, type Tensor, type TensorData } from '../bridge/index.js';
import { checkEntries, checkStateNames, type EntrySpec, type TrainerCheckpoint } from './checkpoint.js';
import type { Model } from './model.js';
import type { Snapshots } from './snapshots.js';
import type { ParamSet } from './trainer-params.js';

export interface RestoreParts {
  rt: Runtime;
  model: Model;
  file: { tensors: Record<string, TensorData>; metadata: Record<string, string> };
  path: string;
  checkpoint: TrainerCheckpoint;
  /** The file holds plugin state (saved after the plugins attached). */
  withPlugins: boolean;
  /** The plugins of this Trainer attached already. */
  attached: boolean;
  attach: () => Promise<void>;
  /** The parameters and the optimizer's state (sdk/trainer-params.ts). */
  params: ParamSet;
  snapshots: Snapshots;
  /** The plugins' state tensors under their checkpoint names (after attach). */
  pluginState: () => Record<string, Tensor>;
}

/**
 * Check the whole checkpoint against the model, the parameters (the plugins' and which are
 * frozen), the optimizer, the plugins and the snapshots, then load it.
 */
export async function restoreCheckpoint(o: RestoreParts): Promise<void> {
  const { rt, model, file, path, params, checkpoint: c } = o;
  model.checkParsed(file, true, path);
  const modelNames = model.stateInfo.map((e) => e.name);
  // what needs no plugin first: the model's entries, and the optimizer's of the model's parameters
  checkEntries(file.tensors, model.stateInfo, path);
  const early = params.planRestore(withoutPlugins(c, model), path);
  try {
    const ofModel = (k: string) => model.params.some((p) => k.startsWith(`optimizer/${p.name}/`));
    const optimizer = Object.fromEntries(Object.entries(early.targets).filter(([k]) => ofModel(k)));
    checkStateNames(Object.keys(file.tensors).filter((k) => modelNames.includes(k) || ofModel(k)), modelNames, Object.keys(optimizer), path);
    checkEntries(file.tensors, await specsOf(optimizer), path);
  } finally {
    early.discard();
  }

  const mustAttach = o.withPlugins && !o.attached;
  const backup = mustAttach ? await backupOf(rt, model) : null;
  let targets: Record<string, Tensor>;
  let plan: ReturnType<ParamSet['planRestore']> | null = null;
  const snaps = snapshotSpecs(c, file.tensors, params, path);
  try {
    if (mustAttach) await o.attach();
    plan = params.planRestore(c.params, path);
    const plugins = o.withPlugins ? o.pluginState() : {};
    targets = { ...plugins, ...plan.targets };
    checkStateNames(Object.keys(file.tensors).filter((k) => !k.startsWith('snapshot/')), modelNames, Object.keys(targets), path);
    checkEntries(file.tensors, [...(await specsOf(targets)), ...snaps], path);
  } catch (e) {
    plan?.discard();
    if (backup) await rt.scope(async () => { model.loadState(backup); await rt.flush(); });
    throw e;
  } finally {
    for (const t of Object.values(backup ?? {})) t.free();
  }
  const held: Record<string, { step: number; tensors: Map<string, Tensor> }> = {};
  await rt.scope(async () => {
    // the copies' handles and the uploads are freed when the scope ends
    const { tensors } = await model.loadParsed(file, true, path);
    for (const [k, t] of Object.entries(targets)) t.copy_(tensors[k]);
    for (const s of snaps) {
      const [, snap, param] = /^snapshot\/([^/]+)\/(.+)$/.exec(s.name)!;
      held[snap] ??= { step: c.snapshots![snap], tensors: new Map() };
      held[snap].tensors.set(param, tensors[s.name].clone().keep());
    }
    await rt.flush();
  });
  plan.commit();
  o.snapshots.install(held);
}

/** The checkpoint's parameter record cut to the model's own parameters (checked before the plugins attach). */
function withoutPlugins(c: TrainerCheckpoint, model: Model): TrainerCheckpoint['params'] {
  const mine = new Set(model.params.map((p) => p.name));
  if (!c.params) return undefined;
  const keep = (ns: string[]) => ns.filter((n) => mine.has(n));
  return { frozen: keep(c.params.frozen), stateful: keep(c.params.stateful), started: {}, plugin: [] };
}

/**
 * The snapshot entries of a file, each checked to belong to a snapshot its metadata lists
 * and to a parameter this Trainer holds, with that parameter's dtype and shape (to check).
 */
function snapshotSpecs(c: TrainerCheckpoint, file: Record<string, TensorData>, params: ParamSet, path: string): EntrySpec[] {
  const out: EntrySpec[] = [];
  for (const name of Object.keys(file)) {
    if (!name.startsWith('snapshot/')) continue;
    const m = /^snapshot\/([^/]+)\/(.+)$/.exec(name);
    if (!m || c.snapshots?.[m[1]] === undefined) throw new LiaisonError('E_ARG', `resume: ${path} holds '${name}', which is not in a snapshot its metadata lists (${Object.keys(c.snapshots ?? {}).join(', ') || 'none'})`, { param: 'path' });
    const e = params.all().find((p) => p.info.name === m[2]);
    if (!e) throw new LiaisonError('E_ARG', `resume: ${path} holds snapshot entry '${name}' of a parameter this Trainer does not have`, { param: 'path' });
    out.push({ name, dtype: e.info.dtype, shape: e.info.shape });
  }
  return out;
}

/** dtype and shape of each tensor, asked in one round trip. */
async function specsOf(tensors: Record<string, Tensor>): Promise<EntrySpec[]> {
  const names = Object.keys(tensors);
  const infos = await Promise.all(names.map((k) => tensors[k].info()));
  return names.map((name, i) => ({ name, dtype: infos[i].dtype, shape: infos[i].shape }));
}

/** Copies of the model's state, in the runtime (kept until freed). */
async function backupOf(rt: Runtime, model: Model): Promise<Record<string, Tensor>> {
  const state = model.state();
  const copies = Object.fromEntries(Object.entries(state).map(([k, t]) => [k, t.clone().keep()]));
  for (const t of Object.values(state)) t.free();
  await rt.flush();
  return copies;
}
