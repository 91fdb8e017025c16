/**
 * Structured units of a model: the hidden neurons of its Linear layers and the filters of its
 * convs, each a group of parameter slices that live and die together (a weight row, a bias
 * entry, and the input columns of the layer that reads the unit). With them a pruner or a
 * sub-model trainer (LoFT) can slice a model to some of its units, build the smaller model,
 * and write what it learned back in place.
 *
 * ```ts
 * const groups = await unitsOf(model);                      // [{ name: 'layers.0', size: 300, … }, …]
 * const keep = { 'layers.0': rt.tensor(BigInt64Array.from([0n, 5n, 9n]), [3]) };
 * const small = await shrink(model, keep);                   // an mlp with sizes [64, 3, 100, 10]
 * // … train `small` …
 * scatterParams(model, groups, keep, small.state());         // its weights, back at units 0, 5, 9
 * ```
 *
 * The groups come from the runtime's description of the model (python-runtime/
 * liaison_runtime/models/units.py): built mlp and cnn models have them; gpt, additive and
 * adopted modules have none, and the functions here refuse them naming the kind. The kept
 * units' indices are checked in the runtime (`model_unit_index`: in the group, ascending,
 * distinct), so a bad index fails at the next read with E_ARG naming the group and its size.
 */
import { LiaisonError, type Tensor } from '../bridge/index.js';
import { Model } from './model.js';
import type { ModelSpec } from './model-spec.js';

/** One parameter slice of a unit group: unit j owns entries j·block … j·block+block−1 of `dim`. */
export interface UnitMember { param: string; dim: number; block: number }

/** Units that are removed together: a layer's neurons or a conv's filters. */
export interface UnitGroup {
  /** The module whose outputs the units are (`layers.0`, `convs.1`, `fc`). */
  name: string;
  kind: 'neuron' | 'filter';
  /** How many units the group has now. */
  size: number;
  /** The spec field that sets the size (`sizes.1`, `channels.0`, `hidden`). */
  field: string;
  members: UnitMember[];
}

interface UnitInfo { units: UnitGroup[]; flops: number | null }

const cache = new WeakMap<Model, Promise<UnitInfo>>();

function info(model: Model): Promise<UnitInfo> {
  let p = cache.get(model);
  if (!p) {
    p = model.handle.info().then((d) => {
      const o = d as unknown as { units?: UnitGroup[]; flops?: number | null };
      return { units: Array.isArray(o.units) ? o.units : [], flops: typeof o.flops === 'number' ? o.flops : null };
    });
    cache.set(model, p);
    p.catch(() => cache.delete(model));  // a failed read is not remembered
  }
  return p;
}

/** The model's unit groups (from the runtime's description; cached per model). */
export async function unitsOf(model: Model): Promise<UnitGroup[]> {
  return (await info(model)).units;
}

/** Multiply–adds of one sample's forward through every Linear and conv; null when the runtime cannot tell. */
export async function flopsOf(model: Model): Promise<number | null> {
  return (await info(model)).flops;
}

function checkGroups(who: string, model: Model, groups: readonly UnitGroup[]): Map<string, UnitGroup> {
  if (!Array.isArray(groups)) throw new LiaisonError('E_ARG', `${who}: groups must be the list unitsOf(model) returns`, { param: 'groups' });
  if (groups.length === 0) throw new LiaisonError('E_ARG', `${who}: the ${model.kind} model has no unit groups (built mlp and cnn models have them)`, { param: 'model' });
  return new Map(groups.map((g) => [g.name, g]));
}

function checkKeep(who: string, byName: Map<string, UnitGroup>, keep: Record<string, Tensor>): void {
  if (keep === null || typeof keep !== 'object') throw new LiaisonError('E_ARG', `${who}: keep must map group names to (k,) index tensors`, { param: 'keep' });
  for (const [name, t] of Object.entries(keep)) {
    if (!byName.has(name)) throw new LiaisonError('E_ARG', `${who}: keep names '${name}', which is no unit group; the groups are ${[...byName.keys()].join(', ')}`, { param: 'keep' });
    if (typeof (t as Tensor)?.indexSelect !== 'function') throw new LiaisonError('E_ARG', `${who}: keep['${name}'] must be a (k,) integer tensor of unit indices`, { param: 'keep' });
  }
}

/** Per parameter, the (dim, entries) it is cut along, one per kept group touching it. */
type Cuts = Map<string, { dim: number; index: Tensor }[]>;

/** The entries each member keeps (blocks expanded in the runtime, which checks the indices); free them with freeCuts. */
function cutsOf(model: Model, byName: Map<string, UnitGroup>, keep: Record<string, Tensor>): Cuts {
  const cuts: Cuts = new Map();
  for (const [name, index] of Object.entries(keep)) {
    const expanded = new Map<number, Tensor>();
    for (const m of byName.get(name)!.members) {
      let e = expanded.get(m.block);
      if (!e) {
        e = model.rt.call('model_unit_index', [model.handle, name, index], { block: m.block }) as Tensor;
        expanded.set(m.block, e);
      }
      const list = cuts.get(m.param) ?? [];
      list.push({ dim: m.dim, index: e });
      cuts.set(m.param, list);
    }
  }
  return cuts;
}

function freeCuts(cuts: Cuts): void {
  for (const list of cuts.values()) for (const c of list) c.index.free();  // free() twice is a no-op
}

/**
 * keep: per group name a (k,) integer tensor of unit indices (ascending); groups not named keep all.
 * Queued: every parameter of the model by name, sliced to the kept units (a parameter no group
 * touches is the parameter itself, `model.param(name)`, not a copy). A parameter cut by two groups
 * (a conv's weight: dim 0 by its own filters, dim 1 by the previous conv's) is cut along both.
 */
export function sliceParams(model: Model, groups: UnitGroup[], keep: Record<string, Tensor>): Record<string, Tensor> {
  const byName = checkGroups('sliceParams', model, groups);
  checkKeep('sliceParams', byName, keep);
  const cuts = cutsOf(model, byName, keep);
  const out: Record<string, Tensor> = {};
  for (const p of model.params) {
    let t = model.param(p.name);
    for (const c of cuts.get(p.name) ?? []) {
      const next = t.indexSelect(c.dim, c.index);
      t.free();
      t = next;
    }
    out[p.name] = t;
  }
  freeCuts(cuts);
  return out;
}

/** target[cuts] = part, in place, for any number of cuts: through copies of the outer slices. */
function writeInto(target: Tensor, cuts: readonly { dim: number; index: Tensor }[], part: Tensor): void {
  const [c, ...rest] = cuts;
  const copy = (src: Tensor) => (target.rt.call('index_copy_', [target, c.dim, c.index, src]) as Tensor).free();
  if (rest.length === 0) return copy(part);
  const outer = target.indexSelect(c.dim, c.index);
  writeInto(outer, rest, part);
  copy(outer);
  outer.free();
}

/**
 * The inverse of {@link sliceParams}, in place: write `parts` (shaped as sliceParams returns them,
 * e.g. a sub-model's `state()`) into the model's parameters at the kept units' places; entries of
 * dropped units stay as they are. Parameters absent from `parts` are left alone; one no group
 * touches is copied whole.
 */
export function scatterParams(model: Model, groups: UnitGroup[], keep: Record<string, Tensor>, parts: Record<string, Tensor>): void {
  const byName = checkGroups('scatterParams', model, groups);
  checkKeep('scatterParams', byName, keep);
  const names = new Set(model.params.map((p) => p.name));
  for (const [n, t] of Object.entries(parts)) {
    if (!names.has(n)) throw new LiaisonError('E_ARG', `scatterParams: parts names '${n}', which is no parameter of the ${model.kind} model`, { param: 'parts' });
    if (typeof (t as Tensor)?.indexSelect !== 'function') throw new LiaisonError('E_ARG', `scatterParams: parts['${n}'] is not a tensor`, { param: 'parts' });
  }
  const cuts = cutsOf(model, byName, keep);
  for (const [n, part] of Object.entries(parts)) {
    const target = model.param(n);
    const list = cuts.get(n) ?? [];
    if (list.length) writeInto(target, list, part);
    else target.copy_(part).free();
    target.free();
  }
  freeCuts(cuts);
}

/** The spec with the value at a dotted path (`channels.0`, `hidden`) replaced; the original is untouched. */
function setField(spec: unknown, path: string[], value: number): unknown {
  const [head, ...rest] = path;
  const node = Array.isArray(spec) ? [...spec] : { ...(spec as Record<string, unknown>) } as Record<string, unknown>;
  const key = Array.isArray(node) ? Number(head) : head;
  (node as Record<string | number, unknown>)[key] = rest.length ? setField((node as Record<string | number, unknown>)[key], rest, value) : value;
  return node;
}

/** The model's spec with group sizes changed (`{ 'convs.0': 4 }`): each group's spec field set. */
export function subSpec(model: Model, groups: UnitGroup[], sizes: Record<string, number>): ModelSpec {
  const byName = checkGroups('subSpec', model, groups);
  if (!model.spec) throw new LiaisonError('E_ARG', `subSpec: the ${model.kind} model was not built from a spec`, { param: 'model' });
  let spec: unknown = model.spec;
  for (const [name, size] of Object.entries(sizes)) {
    const g = byName.get(name);
    if (!g) throw new LiaisonError('E_ARG', `subSpec: sizes names '${name}', which is no unit group; the groups are ${[...byName.keys()].join(', ')}`, { param: 'sizes' });
    if (!Number.isInteger(size) || size < 1) throw new LiaisonError('E_ARG', `subSpec: sizes['${name}'] must be a positive integer, got ${size}`, { param: 'sizes' });
    spec = setField(spec, g.field.split('.'), size);
  }
  return spec as ModelSpec;
}

/** How many units a keep tensor holds: its static shape, else the runtime's. */
async function lengthOf(name: string, t: Tensor): Promise<number> {
  const n = t.shape?.length === 1 && typeof t.shape[0] === 'number' ? t.shape[0] : undefined;
  if (n !== undefined) return n;
  const shape = (await t.info()).shape as number[] | undefined;
  if (!Array.isArray(shape) || shape.length !== 1) throw new LiaisonError('E_ARG', `shrink: keep['${name}'] must be a (k,) tensor of unit indices, got shape ${JSON.stringify(shape)}`, { param: 'keep' });
  return shape[0];
}

/**
 * A new, smaller model of the same kind holding only the kept units' weights (its spec from
 * {@link subSpec}, its weights from {@link sliceParams}). Keeping no unit of a group is refused:
 * the spec needs at least one.
 */
export async function shrink(model: Model, keep: Record<string, Tensor>): Promise<Model> {
  const groups = await unitsOf(model);
  const byName = checkGroups('shrink', model, groups);
  checkKeep('shrink', byName, keep);
  const sizes: Record<string, number> = {};
  for (const [name, t] of Object.entries(keep)) {
    sizes[name] = await lengthOf(name, t);
    if (sizes[name] < 1) throw new LiaisonError('E_ARG', `shrink: keep['${name}'] keeps no unit; a group needs at least one`, { param: 'keep' });
  }
  const spec = subSpec(model, groups, sizes);
  const small = await Model.build(model.rt, spec);
  const parts = sliceParams(model, groups, keep);
  try {
    small.loadState(parts);
    await model.rt.flush();  // an index the runtime refuses fails here, not at some later read
  } catch (e) {
    small.free();
    throw e;
  } finally {
    for (const t of Object.values(parts)) t.free();
  }
  return small;
}
