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
import type { Runtime, Tensor, TensorData } from '../bridge/index.js';
import { checkEntries, checkStateNames, type EntrySpec } from './checkpoint.js';
import type { Model } from './model.js';

export interface RestoreParts {
  rt: Runtime;
  model: Model;
  file: { tensors: Record<string, TensorData>; metadata: Record<string, string> };
  path: string;
  /** The file holds plugin state (saved after the plugins attached). */
  withPlugins: boolean;
  /** The plugins of this Trainer attached already. */
  attached: boolean;
  attach: () => Promise<void>;
  /** The optimizer's state tensors under their checkpoint names. */
  optimizerState: () => Record<string, Tensor>;
  /** The plugins' state tensors under their checkpoint names (after attach). */
  pluginState: () => Record<string, Tensor>;
}

/** Check the whole checkpoint against the model, the optimizer and the plugins, then load it. */
export async function restoreCheckpoint(o: RestoreParts): Promise<void> {
  const { rt, model, file, path } = o;
  model.checkParsed(file, true, path);
  const optimizer = o.optimizerState();
  const modelNames = model.stateInfo.map((e) => e.name);
  // the optimizer's names now; the plugins' once they have attached
  const ownNames = Object.keys(file.tensors).filter((k) => k.startsWith('optimizer/') || modelNames.includes(k));
  checkStateNames(ownNames, modelNames, Object.keys(optimizer), path);
  checkEntries(file.tensors, [...model.stateInfo, ...(await specsOf(optimizer))], path);

  const mustAttach = o.withPlugins && !o.attached;
  const backup = mustAttach ? await snapshot(rt, model) : null;
  let targets: Record<string, Tensor>;
  try {
    if (mustAttach) await o.attach();
    const plugins = o.withPlugins ? o.pluginState() : {};
    targets = { ...plugins, ...optimizer };
    checkStateNames(Object.keys(file.tensors), modelNames, Object.keys(targets), path);
    checkEntries(file.tensors, await specsOf(plugins), path);
  } catch (e) {
    if (backup) await rt.scope(async () => { model.loadState(backup); await rt.flush(); });
    throw e;
  } finally {
    for (const t of Object.values(backup ?? {})) t.free();
  }
  await rt.scope(async () => {
    // the copies' handles and the uploads are freed when the scope ends
    const { tensors } = await model.loadParsed(file, true, path);
    for (const [k, t] of Object.entries(targets)) t.copy_(tensors[k]);
    await rt.flush();
  });
}

/** dtype and shape of each tensor, asked in one round trip. */
async function specsOf(tensors: Record<string, Tensor>): Promise<EntrySpec[]> {
  const names = Object.keys(tensors);
  const infos = await Promise.all(names.map((k) => tensors[k].info()));
  return names.map((name, i) => ({ name, dtype: infos[i].dtype, shape: infos[i].shape }));
}

/** Copies of the model's state, in the runtime (kept until freed). */
async function snapshot(rt: Runtime, model: Model): Promise<Record<string, Tensor>> {
  const state = model.state();
  const copies = Object.fromEntries(Object.entries(state).map(([k, t]) => [k, t.clone().keep()]));
  for (const t of Object.values(state)) t.free();
  await rt.flush();
  return copies;
}
