/**
 * What a Trainer checkpoint holds, besides the model: one safetensors file (written by
 * `Model.save`) with
 *
 * - the model's state under its own names (`layers.0.weight`), so the file also loads
 *   into a bare model (`model.load(path, { strict: false })`);
 * - the optimizer's state as `optimizer/<param>/<key>` (e.g. `optimizer/layers.0.weight/velocity`);
 * - every plugin's `addState` tensors as `<prefix>.<key>` (e.g. `pruner.layers.0.weight`).
 *   Prefixes are per plugin: when two plugins ask for one prefix (two pruners), the first in
 *   the Trainer's `plugins` list keeps it and the one at position i (from 0) gets
 *   `<prefix>#<i>`: `pruner.layers.0.weight`, `pruner#1.layers.1.weight`,
 *   `pruner#1.#round` (sdk/training-hooks.ts). Loss names are made unique the same way;
 * - plugin parameters (`hooks.addParam`) as `param/<name>`, with their optimizer state as
 *   `optimizer/<name>/<key>` like the model's (sdk/trainer-params.ts); only parameters that
 *   have state (that have been trainable) have `optimizer/` entries;
 * - snapshots, when `save(path, { snapshots: true })` asks, as `snapshot/<snap>/<param>`;
 * - metadata `liaison.trainer`: JSON of {@link TrainerCheckpoint} (epochs and steps done,
 *   the optimizer's and the plugins' ids and configs, whether the plugins had attached,
 *   the trainer config). A file saved before the first fit has no plugin state
 *   (`attached: false`); resuming it leaves the plugins to attach when training starts.
 */
import { LiaisonError } from '../bridge/index.js';
import type { PluginInstance } from './plugin.js';

/** The metadata key of a Trainer checkpoint. */
export const META_TRAINER = 'liaison.trainer';
/** Bumped when the layout changes incompatibly. */
export const CHECKPOINT_FORMAT = 1;

/** The parameters part of a checkpoint (sdk/trainer-params.ts writes and reads it). */
export interface ParamsRecord {
  /** Parameters (model or plugin) that are frozen. */
  frozen: string[];
  /** Parameters that have optimizer state (in the file as `optimizer/<name>/<key>`). */
  stateful: string[];
  /** Steps done when a parameter's state was made, where not 0. */
  started: Record<string, number>;
  /** The plugin parameters (in the file as `param/<name>`). */
  plugin: string[];
}

/** A plugin as a checkpoint records it. */
export interface PluginRecord {
  /** `family/name@version`, or the class name of a plugin not made by definePlugin. */
  id: string;
  config?: unknown;
}

export interface TrainerCheckpoint {
  format: number;
  /** Epochs done. */
  epoch: number;
  /** Optimizer steps done. */
  step: number;
  optimizer: PluginRecord;
  plugins: PluginRecord[];
  /**
   * Whether the plugins had attached when it was saved (false for a save before the first
   * fit: the file then holds no plugin state, and the plugins attach when training
   * starts). Absent in older files: true.
   */
  attached?: boolean;
  /** The trainer config the run had. */
  config: Record<string, unknown>;
  /** Frozen parameters, which have optimizer state, own step counts, plugin parameters. Absent in older files: all model parameters trainable, with state. */
  params?: ParamsRecord;
  /** Snapshots in the file: name → the step it was taken at. */
  snapshots?: Record<string, number>;
}

/** The checkpoint name of one optimizer state tensor. */
export function optimizerKey(param: string, key: string): string {
  return `optimizer/${param}/${key}`;
}

/** How a checkpoint names a plugin (or optimizer) object. */
export function pluginRecord(p: object): PluginRecord {
  const inst = p as Partial<PluginInstance>;
  if (inst.meta && typeof inst.meta.name === 'string') {
    return { id: `${inst.meta.family}/${inst.meta.name}@${inst.meta.version}`, config: inst.config };
  }
  return { id: p.constructor?.name ?? 'anonymous' };
}

/** The `liaison.trainer` metadata string. */
export function encodeCheckpoint(c: Omit<TrainerCheckpoint, 'format'>): Record<string, string> {
  return { [META_TRAINER]: JSON.stringify({ format: CHECKPOINT_FORMAT, ...c }) };
}

/** Parse and check a file's `liaison.trainer` metadata (E_ARG naming the file when it is not a Trainer checkpoint). */
export function decodeCheckpoint(metadata: Record<string, string>, path: string): TrainerCheckpoint {
  const text = metadata[META_TRAINER];
  if (!text) throw new LiaisonError('E_ARG', `resume: ${path} is not a Trainer checkpoint (no '${META_TRAINER}' metadata); a model-only file loads with model.load()`, { param: 'path' });
  let c: TrainerCheckpoint;
  try {
    c = JSON.parse(text) as TrainerCheckpoint;
  } catch (e) {
    throw new LiaisonError('E_ARG', `resume: the '${META_TRAINER}' metadata of ${path} is not JSON`, { param: 'path', cause: e });
  }
  // JSON that parses can still be null, a number or a list: refused before any field is read
  if (c === null || typeof c !== 'object' || Array.isArray(c)) {
    throw new LiaisonError('E_ARG', `resume: the '${META_TRAINER}' metadata of ${path} is ${JSON.stringify(c)}, not an object {format, epoch, step, optimizer, plugins}`, { param: 'path' });
  }
  if (c.format !== CHECKPOINT_FORMAT) throw new LiaisonError('E_ARG', `resume: ${path} has checkpoint format ${JSON.stringify(c.format)}; this SDK reads format ${CHECKPOINT_FORMAT}`, { param: 'path' });
  for (const k of ['epoch', 'step'] as const) {
    if (!Number.isSafeInteger(c[k]) || c[k] < 0) throw new LiaisonError('E_ARG', `resume: the '${META_TRAINER}' metadata of ${path} has '${k}' ${JSON.stringify(c[k])}; expected an integer >= 0`, { param: 'path' });
  }
  if (!isRecord(c.optimizer) || typeof c.optimizer.id !== 'string' || !Array.isArray(c.plugins) || !c.plugins.every((p) => isRecord(p) && typeof p.id === 'string')) {
    throw new LiaisonError('E_ARG', `resume: the '${META_TRAINER}' metadata of ${path} lacks 'optimizer' or 'plugins' ({id, config} records)`, { param: 'path' });
  }
  const names = (v: unknown) => Array.isArray(v) && v.every((n) => typeof n === 'string');
  const p = c.params as unknown as Record<string, unknown> | undefined;
  if (p !== undefined && (!isRecord(p) || !names(p.frozen) || !names(p.stateful) || !names(p.plugin) || !isRecord(p.started) || !Object.values(p.started).every((n) => Number.isSafeInteger(n) && (n as number) >= 0))) {
    throw new LiaisonError('E_ARG', `resume: the '${META_TRAINER}' metadata of ${path} has 'params' ${JSON.stringify(p)}, not {frozen, stateful, plugin: names; started: {name: step}}`, { param: 'path' });
  }
  if (c.snapshots !== undefined && (!isRecord(c.snapshots) || !Object.values(c.snapshots).every((n) => Number.isSafeInteger(n) && (n as number) >= 0))) {
    throw new LiaisonError('E_ARG', `resume: the '${META_TRAINER}' metadata of ${path} has 'snapshots' ${JSON.stringify(c.snapshots)}, not {name: step}`, { param: 'path' });
  }
  if (c.attached !== undefined && typeof c.attached !== 'boolean') throw new LiaisonError('E_ARG', `resume: the '${META_TRAINER}' metadata of ${path} has 'attached' ${JSON.stringify(c.attached)}, not a boolean`, { param: 'path' });
  return c;
}

/** Check that a checkpoint was written by the same optimizer and plugins (E_ARG naming the difference). */
export function checkSameSetup(c: TrainerCheckpoint, optimizer: PluginRecord, plugins: PluginRecord[], path: string): void {
  if (c.optimizer.id !== optimizer.id) {
    throw new LiaisonError('E_ARG', `resume: ${path} was written with optimizer ${c.optimizer.id}, this Trainer has ${optimizer.id}`, { param: 'optimizer' });
  }
  const had = c.plugins.map((p) => p.id).join(', ') || 'none';
  const has = plugins.map((p) => p.id).join(', ') || 'none';
  if (had !== has) throw new LiaisonError('E_ARG', `resume: ${path} was written with plugins [${had}], this Trainer has [${has}]`, { param: 'plugins' });
}

/**
 * Check a checkpoint's tensor names against what a Trainer restores: every name of
 * `targets` (optimizer and plugin state) must be in the file, and the file may hold nothing
 * beyond those and the model's `modelNames` (E_ARG naming the missing and unexpected ones).
 */
export function checkStateNames(fileNames: readonly string[], modelNames: readonly string[], targets: readonly string[], path: string): void {
  const inFile = new Set(fileNames);
  const known = new Set([...modelNames, ...targets]);
  const missing = targets.filter((k) => !inFile.has(k));
  const extra = fileNames.filter((k) => !known.has(k));
  if (missing.length || extra.length) {
    throw new LiaisonError('E_ARG', `resume: ${path} does not match this Trainer's optimizer and plugin state: missing ${missing.join(', ') || 'none'}; unexpected ${extra.join(', ') || 'none'}`, { param: 'path' });
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** What a checkpoint entry is copied into on resume: a model state entry or a state tensor of the Trainer. */
export interface EntrySpec {
  name: string;
  dtype: string;
  shape: readonly number[];
}

const LISTED = 8;

/**
 * Check every entry a resume writes against the file, before anything is written: the
 * same dtype and the very same shape (a copy would broadcast a [1] into an [8], or fail
 * half-way through). E_SHAPE (or E_DTYPE when only dtypes differ) naming each entry,
 * what this Trainer has and what the file holds.
 */
export function checkEntries(file: Record<string, { dtype: string; shape: readonly number[] }>, targets: readonly EntrySpec[], path: string): void {
  const bad: string[] = [];
  let shapes = false;
  for (const t of targets) {
    const f = file[t.name];
    if (!f) continue; // missing names are checkStateNames' (and checkParsed's) to report
    const sameShape = f.shape.length === t.shape.length && f.shape.every((d, i) => d === t.shape[i]);
    if (sameShape && f.dtype === t.dtype) continue;
    shapes ||= !sameShape;
    bad.push(`'${t.name}' is ${t.dtype} [${t.shape.join(', ')}] here, ${f.dtype} [${f.shape.join(', ')}] in the file`);
  }
  if (!bad.length) return;
  const more = bad.length > LISTED ? `; … (${bad.length} in all)` : '';
  throw new LiaisonError(shapes ? 'E_SHAPE' : 'E_DTYPE', `resume: ${path} does not fit this Trainer, nothing was loaded: ${bad.slice(0, LISTED).join('; ')}${more}`, { param: 'path' });
}
