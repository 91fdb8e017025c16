/**
 * What examples/moe-teacher-student.ts builds on: the teacher MoE and its data, the
 * student's init, the alignment of a student with the teacher, and pruning by surgery (a
 * smaller `moe` model built and loaded with the kept neurons and experts).
 *
 * Parameters of a `{ kind: 'moe' }` model (docs/models.md): `moe.experts.<e>.fc.weight`
 * (H, d), the H neurons' input directions; `moe.experts.<e>.proj.weight` (1, H), their
 * output weights; `moe.router.gate` (d, E), the linear router's directions (soft and topk).
 */
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { Dataset, Model, type Router } from '../sdk/index.js';

/** Sizes of one MoE: input width d, experts E, neurons per expert H. */
export interface MoESize { d: number; experts: number; hidden: number }

const fcName = (e: number) => `moe.experts.${e}.fc.weight`;
const projName = (e: number) => `moe.experts.${e}.proj.weight`;
const GATE = 'moe.router.gate';
/** t[e] along the first dim. */
const at = (t: Tensor, e: number): Tensor => t.narrow(0, e, 1).squeeze(0);

/** n random unit vectors in R^d as rows (n, d), seeded. */
export function unitRows(rt: Runtime, n: number, d: number, seed: number): Tensor {
  const g = rt.randn([n, d], { seed });
  return g.div(g.norm(2, 1, true));
}

/** A one-layer MoE `{ kind: 'moe' }` with ReLU experts, one output, no biases, routed by `router`. */
export async function buildMoE(rt: Runtime, size: MoESize, router: Router, seed: number): Promise<Model> {
  const model = await Model.build(rt, { kind: 'moe', inputs: size.d, outputs: 1, experts: size.experts, hidden: size.hidden, router, activation: 'relu' }, { seed });
  if (!model.params.some((p) => p.name === GATE)) {
    model.free();
    throw new LiaisonError('E_ARG', `the ${router.meta.name} router has no linear gate '${GATE}' (d, E): the experiment compares router directions, so it needs a linear router (soft with hidden 0, or topk)`, { param: 'router' });
  }
  return model;
}

/**
 * Write the parameters: expert e's neurons `fc[e]` (H, d) and output weights `proj[e]`
 * (1, H), the router's `gate` (d, E). Copied into the model's own tensors.
 */
export function setWeights(model: Model, experts: number, w: { fc: (e: number) => Tensor; proj: (e: number) => Tensor; gate: Tensor }): void {
  const tensors: Record<string, Tensor> = { [GATE]: w.gate };
  for (let e = 0; e < experts; e++) {
    tensors[fcName(e)] = w.fc(e);
    tensors[projName(e)] = w.proj(e);
  }
  model.loadState(tensors);
}

/**
 * The teacher: E* experts of H* ReLU neurons with random unit-norm input directions and
 * output weights 1, routed by softmax(x · V*), V*'s columns random unit directions scaled
 * by `routerScale` (so that routing depends on x: at scale 0 it would be uniform).
 */
export async function buildTeacher(rt: Runtime, size: MoESize, router: Router, routerScale: number, seed: number): Promise<Model> {
  const model = await buildMoE(rt, size, router, seed);
  await rt.scope(async () => {
    const fc = unitRows(rt, size.experts * size.hidden, size.d, seed + 1).reshape([size.experts, size.hidden, size.d]);
    const gate = unitRows(rt, size.experts, size.d, seed + 2).T.mul(routerScale); // (d, E*)
    setWeights(model, size.experts, { fc: (e) => at(fc, e), proj: () => rt.ones([1, size.hidden]), gate });
    await rt.flush();
  });
  return model;
}

/**
 * The student's small random init (the regime of the feature-learning analysis): neurons
 * N(0, init²/d), output weights N(0, init²/H), router N(0, routerStd²).
 */
export async function initStudent(model: Model, size: MoESize, init: number, routerStd: number, seed: number): Promise<void> {
  const rt = model.rt;
  await rt.scope(async () => {
    const fc = rt.randn([size.experts, size.hidden, size.d], { seed }).mul(init / Math.sqrt(size.d));
    const proj = rt.randn([size.experts, 1, size.hidden], { seed: seed + 1 }).mul(init / Math.sqrt(size.hidden));
    const gate = rt.randn([size.d, size.experts], { seed: seed + 2 }).mul(routerStd);
    setWeights(model, size.experts, { fc: (e) => at(fc, e), proj: (e) => at(proj, e), gate });
    await rt.flush();
  });
}

/** Gaussian inputs x ~ N(0, I_d) (n, d) and the teacher's outputs y (n, 1). */
export async function teacherData(teacher: Model, d: number, n: number, seed: number): Promise<Dataset> {
  const rt = teacher.rt;
  return rt.scope(async () => {
    const x = rt.randn([n, d], { seed });
    const y = teacher.forward(x, { train: false }); // (n, 1)
    return new Dataset(rt, x, y, [n, d], [n, 1], 'f32');
  });
}

/** Every neuron's input direction, unit norm, expert by expert: (E·H, d); a zero neuron (pruning's padding) stays 0. */
function neuronDirections(model: Model, experts: number): Tensor {
  const w = model.rt.cat(Array.from({ length: experts }, (_, e) => model.param(fcName(e))), 0);
  return w.div(w.norm(2, 1, true).clamp(1e-12));
}

/** Cosines (teacher neurons, student neurons), a student's zero neurons at −1 so that no best match is one. */
function neuronCosines(teacher: Model, teacherExperts: number, student: Model, experts: number): Tensor {
  const s = neuronDirections(student, experts); // (S, d)
  const live = s.norm(2, 1).gt(0.5); // (S,) unit rows, not the zero ones
  return neuronDirections(teacher, teacherExperts).matmul(s.T).where(live, -1);
}

/**
 * The router's directions, unit norm: (E, d). softmax(x·V) does not change when one vector
 * is added to every column of V, so only V's columns relative to their mean are identified:
 * those are compared (gradient descent keeps the columns' mean where it started).
 */
function routerDirections(model: Model): Tensor {
  const g = model.param(GATE); // (d, E)
  const c = g.sub(g.mean(1, true)).T; // (E, d)
  return c.div(c.norm(2, 1, true).clamp(1e-12));
}

/** Per teacher neuron and per teacher router direction, the cosine with its best-matching student one. */
export interface Alignment { neuron: number[]; router: number[] }

/** The alignment of `student` (E experts) with `teacher` (E* experts): max over the student of the cosine. */
export async function alignment(teacher: Model, teacherExperts: number, student: Model, experts: number): Promise<Alignment> {
  const rt = student.rt;
  return rt.scope(async () => {
    const neuron = neuronCosines(teacher, teacherExperts, student, experts).amax(1); // (E*·H*,)
    const router = routerDirections(teacher).matmul(routerDirections(student).T).amax(1); // (E*,)
    const [n, r] = await Promise.all([neuron.toArray(), router.toArray()]);
    return { neuron: Array.from(n as Float32Array), router: Array.from(r as Float32Array) };
  });
}

/** The best-matching student neuron (flat index e·H + h) of each teacher neuron. */
export async function bestMatches(teacher: Model, teacherExperts: number, student: Model, experts: number): Promise<number[]> {
  return student.rt.scope(async () => {
    const idx = neuronCosines(teacher, teacherExperts, student, experts).argmax(1);
    return Array.from(await idx.toArray() as BigInt64Array, Number);
  });
}

/**
 * Each student neuron's output scale |a|·‖w‖ (flat, e·H + h): for a ReLU neuron a·relu(w·x)
 * = (a‖w‖)·relu(ŵ·x), the size of what it adds to its expert's output.
 */
export async function neuronScales(model: Model, size: MoESize): Promise<number[]> {
  const rt = model.rt;
  return rt.scope(async () => {
    const s = Array.from({ length: size.experts }, (_, e) => model.param(projName(e)).abs().squeeze(0).mul(model.param(fcName(e)).norm(2, 1)));
    return Array.from(await rt.cat(s, 0).toArray() as Float32Array);
  });
}

/** Neurons kept per expert (indices 0..H−1), for the experts kept (in order). */
export type Keep = Map<number, number[]>;

/** Keep the neurons whose output scale is at least `tau` × the largest; experts left empty go. */
export function keepByScale(scales: readonly number[], hidden: number, tau: number): Keep {
  const top = Math.max(...scales);
  return keepOf(scales.map((s, i) => (s >= tau * top ? i : -1)).filter((i) => i >= 0), hidden);
}

/** Keep exactly the neurons listed (flat indices e·H + h), grouped by expert. */
export function keepOf(flat: readonly number[], hidden: number): Keep {
  const keep: Keep = new Map();
  for (const i of [...new Set(flat)].sort((a, b) => a - b)) {
    const e = Math.floor(i / hidden);
    keep.set(e, [...(keep.get(e) ?? []), i % hidden]);
  }
  return keep;
}

/**
 * Pruning by surgery: a new `moe` model with the kept experts (router columns with them)
 * and H' = the most neurons any kept expert keeps, each expert's kept neurons copied in and
 * the rest of its H' rows zero. A zero ReLU neuron stays zero under gradient descent (its
 * weights get no gradient: relu'(0) = 0 and relu(0) = 0), so the pruned model trains as
 * the smaller one it is. `router` is a fresh instance of the student's router.
 */
export async function prune(student: Model, size: MoESize, keep: Keep, router: Router, seed: number): Promise<{ model: Model; size: MoESize; neurons: number }> {
  const rt = student.rt;
  const experts = [...keep.keys()];
  if (experts.length === 0) throw new LiaisonError('E_ARG', 'prune: nothing kept', { param: 'keep' });
  const hidden = Math.max(...experts.map((e) => keep.get(e)!.length));
  const pruned: MoESize = { d: size.d, experts: experts.length, hidden };
  const model = await buildMoE(rt, pruned, router, seed);
  await rt.scope(async () => {
    const index = (xs: readonly number[]) => rt.tensor(new BigInt64Array(xs.map(BigInt)), [xs.length]);
    const rows = (e: number, t: Tensor, dim: 0 | 1): Tensor => {
      const kept = keep.get(experts[e])!;
      const sel = t.indexSelect(dim, index(kept));
      const pad = hidden - kept.length;
      return pad === 0 ? sel : rt.cat([sel, rt.zeros(dim === 0 ? [pad, size.d] : [1, pad])], dim);
    };
    setWeights(model, experts.length, {
      fc: (e) => rows(e, student.param(fcName(experts[e])), 0),
      proj: (e) => rows(e, student.param(projName(experts[e])), 1),
      gate: student.param(GATE).indexSelect(1, index(experts)),
    });
    await rt.flush();
  });
  return { model, size: pruned, neurons: [...keep.values()].reduce((a, k) => a + k.length, 0) };
}
