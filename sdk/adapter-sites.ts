/**
 * Adapter sites and factors (sdk/adapters.ts builds on these): which modules an adapter can
 * sit on and their geometry, the checks a module's low-rank factors must pass, the side-path
 * program traced for its `output` hook, and the update ΔW it merges into the stored weight.
 */
import { type DType, DTYPES, LiaisonError, Tensor } from '../bridge/index.js';
import type { Model, ModuleGeometry } from './model.js';
import { define, noGrad, type Program } from './program.js';

/** A module an adapter can sit on: its weight's geometry (from the model's description). */
export interface AdapterSite {
  /** Its name in the model: 'layers.0', 'convs.1', 'blocks.0.attn.qkv'. */
  module: string;
  kind: 'linear' | 'conv1d' | 'conv2d' | 'conv3d';
  /** In / out features (linear) or channels (conv). */
  in: number;
  out: number;
  /** Per spatial dim; [] for linear. A conv adapter's A is a convolution of the same geometry. */
  kernel: number[];
  stride: number[];
  padding: number[];
  dilation: number[];
}

/** One module's low-rank update ΔW = scale · B · diag(gate) · A, with up to r components (rank-1 terms). */
export interface LowRankFactors {
  /** (r, in) linear | (r, in, …kernel) conv: component k's input direction is A[k]. */
  A: Tensor;
  /** (out, r) linear | (out, r, 1, …) conv (1×1): component k's output direction is B[:, k]. */
  B: Tensor;
  /** (r,) f32: component k's coefficient in the forward (1 in the sum, 0 out of it; AdaLoRA's E times its mask). */
  gate: Tensor;
  /**
   * (r,) f32 0/1, optional: component k gets the gradient it would get in the sum while adding
   * nothing to the forward (AdaPaD's advance learning): side(x) += ghost_k·(t_k − sg(t_k)).
   */
  ghost?: Tensor;
  /** alpha / r (LoRA), alpha / sqrt(r) (rsLoRA): fixed per module, never changes with the gate. */
  scale: number;
}

function siteOf(module: string, g: ModuleGeometry, who: string): AdapterSite {
  const bad = (field: string, msg: string) => new LiaisonError('E_ARG', `${who}: module '${module}' ${msg} (its ${field})`, { param: 'targets' });
  if (g.groups !== 1) throw bad('groups', `is a grouped convolution (groups ${g.groups}); an adapter needs groups 1 — leave it out of targets`);
  if (g.padding_mode !== 'zeros') throw bad('padding_mode', `pads with '${g.padding_mode}'; an adapter's convolution pads with zeros — leave it out of targets`);
  if (g.padding === 'same') throw bad('padding', "has 'same' padding that pads one side more (an even kernel); an adapter needs symmetric padding — leave it out of targets");
  return { module, kind: g.kind, in: g.in, out: g.out, kernel: [...g.kernel], stride: [...g.stride], padding: [...g.padding], dilation: [...g.dilation] };
}

/**
 * The modules `targets` names — a regular expression matched against whole module names (as
 * {@link Model.setWeightHook}), or a list of exact names — as adapter sites. E_ARG listing the
 * model's modules when none match, and naming the module and field of one an adapter cannot
 * sit on (a grouped convolution, non-zero padding modes).
 */
export function adapterSites(model: Model, targets: string | readonly string[], who = 'adapterSites'): AdapterSite[] {
  const chosen = model.selectModules('output', targets, who, {
    param: 'targets', site: `a module an adapter can sit on; the ${model.kind} model's are`, none: `; the ${model.kind} model's nn.Linear / nn.Conv*d modules are`,
  });
  return chosen.map((m) => {
    const g = model.moduleGeometry[m];
    if (!g) throw new LiaisonError('E_ARG', `${who}: the runtime did not describe module '${m}''s geometry (an older runtime?)`, { param: 'targets' });
    return siteOf(m, g, who);
  });
}

/** A static shape's numbers, or undefined when some size is not known on the client. */
function known(t: Tensor): readonly number[] | undefined {
  const s = t.shape;
  return s?.every((d): d is number => typeof d === 'number') ? (s as readonly number[]) : undefined;
}

/** E_SHAPE unless the factors fit the site (checked where the client knows the shapes). */
export function checkFactors(site: AdapterSite, f: LowRankFactors, who: string): void {
  const m = site.module;
  const fail = (field: string, msg: string, code: 'E_ARG' | 'E_SHAPE' = 'E_SHAPE') => new LiaisonError(code, `${who}: module '${m}': ${field} ${msg}`, { param: `factors.${m}.${field}` });
  if (f === null || typeof f !== 'object') throw fail('factors', 'must be {A, B, gate, scale}', 'E_ARG');
  for (const k of ['A', 'B', 'gate'] as const) if (!(f[k] instanceof Tensor)) throw fail(k, 'must be a tensor', 'E_ARG');
  if (f.ghost !== undefined && !(f.ghost instanceof Tensor)) throw fail('ghost', 'must be a tensor or absent', 'E_ARG');
  if (typeof f.scale !== 'number' || !Number.isFinite(f.scale)) throw fail('scale', `must be a finite number, got ${f.scale}`, 'E_ARG');
  const a = known(f.A) as readonly number[] | undefined;
  const r = a?.[0];
  const ones = site.kernel.map(() => 1);
  const want = {
    A: r === undefined ? undefined : [r, site.in, ...site.kernel],
    B: r === undefined ? undefined : [site.out, r, ...ones],
    gate: r === undefined ? undefined : [r],
    ghost: r === undefined ? undefined : [r],
  };
  for (const k of ['A', 'B', 'gate', 'ghost'] as const) {
    const t = f[k];
    const s = t && known(t);
    const w = want[k];
    if (s && w && (s.length !== w.length || s.some((d, i) => d !== w[i]))) {
      throw fail(k, `has shape [${s}]; the ${site.kind} site (in ${site.in}, out ${site.out}${site.kernel.length ? `, kernel [${site.kernel}]` : ''}) with r = ${r} needs [${w}]`);
    }
  }
}

/** The dtype of a module's stored weight (the side path computes in it, as the module does). */
export function weightDtype(model: Model, module: string): DType {
  const name = module ? `${module}.weight` : 'weight';
  const d = model.stateInfo.find((e) => e.name === name)?.dtype;
  return (DTYPES as readonly string[]).includes(d ?? '') ? (d as DType) : 'f32';
}

/**
 * The side path of one module, traced: [x, y] -> [y + scale·B·diag(gate)·A x] (+ the ghost term).
 * On a bf16 / f16 module A, B and the coefficients are cast to its dtype in the program (f32
 * factors and gates then work there; the casts copy r·(in + out) numbers, nothing of x's size).
 * An f32 module takes f32 factors as they are: no cast, so plain LoRA pays nothing for this.
 */
export function sideProgram(model: Model, site: AdapterSite, f: LowRankFactors): Program {
  const { rt } = model;
  const conv = site.kind !== 'linear';
  const geo = { stride: site.stride, padding: site.padding, dilation: site.dilation };
  const dt = weightDtype(model, site.module);
  // (…, r) channels-last for linear, (N, r, …) channels-first for conv
  const cast = (t: Tensor) => (dt === 'f32' ? t : t.to(dt));
  const coef = (g: Tensor) => {
    const s = cast(f.scale === 1 ? g : g.mul(f.scale));
    return conv ? s.reshape([-1, ...site.kernel.map(() => 1)]) : s;
  };
  // a view made without autograd: the same values, cut off from the graph
  const sg = (t: Tensor) => noGrad(rt, () => t.unsqueeze(0).squeeze(0));
  return define(rt, { name: `adapter:${site.module}`, inputs: { x: {}, y: {} } }, ({ x, y }) => {
    const A = cast(f.A), B = cast(f.B);
    const down = (v: Tensor) => (conv ? v.conv(A, geo) : (rt.call('linear', [v, A]) as Tensor));
    const up = (h: Tensor) => (conv ? h.conv(B) : (rt.call('linear', [h, B]) as Tensor));
    const out = y.add(up(down(x).mul(coef(f.gate))));
    if (!f.ghost) return out;
    // the ghost components' t − sg(t): exactly 0 in the forward, their own gradient to A and B.
    // From a detached x, so that nothing upstream gets a gradient the forward never had
    const t = up(down(sg(x)).mul(coef(f.ghost)));
    return out.add(t.sub(sg(t)));
  });
}

/** ΔW = scale · B · diag(gate) · A in the stored weight's shape (out, in[, k…]) and dtype, computed in f32. */
export function deltaOf(site: AdapterSite, f: LowRankFactors, dt: DType = 'f32'): Tensor {
  const f32 = (t: Tensor) => (dt === 'f32' ? t : t.to('f32'));
  const g = f32(f.gate);
  const b = f32(f.B).reshape([site.out, -1]).mul(f.scale === 1 ? g : g.mul(f.scale)); // (out, r)·(r,)
  const d = b.matmul(f32(f.A).flatten(1)).reshape([site.out, site.in, ...site.kernel]); // (r, in·∏k)
  return dt === 'f32' ? d : d.to(dt);
}
