/**
 * Conformance suite of the Router family (sdk/families/routers/types.ts).
 *
 * The unit cases trace `route()` in the very program a model's MoE layer replays
 * (`routerProgram`) and run it at two batch sizes; the end-to-end case builds a one-block
 * GPT whose feed-forward is an MoE layer routed by the plugin and trains it for a few steps.
 * What a result is checked against is what the router declares in its `traits` — the
 * dispatch form ('weights', 'indices' or 'slots'), sparse with k experts per token or dense,
 * a capacity, slots per expert, whether it drops tokens: nothing is inferred from its config.
 *
 * Promises by form: 'weights' (N, E) finite, ≥ 0, at most k nonzero per row when sparse,
 * no expert past ⌈c·N·k/E⌉ tokens; 'indices' (E, C) i64 tokens in [0, N), no token twice in
 * one expert's used slots, C = min(N, ⌈c·N/E⌉), gates (E, C) finite and ≥ 0; 'slots'
 * dispatch and combine (N, E, S) finite and ≥ 0, each slot's dispatch summing to 1 over the
 * tokens, each token's combine to 1 over the E·S slots. Every form: a token is served
 * unless traits.dropsTokens, aux and zloss finite scalars (zloss ≥ 0), probs (when given)
 * (N, E) rows on the simplex.
 */
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { RouterBase, routerProgram } from '../families/routers/base.js';
import type { RouteForm, Router, RouterDims, RouterParamSpec, RouterTraits } from '../families/routers/types.js';
import { Model } from '../model.js';
import type { Program } from '../program.js';
import { type CaseDef, check, ConformanceFailure, registrationCases } from './suite.js';

type R = Router;

const DIMS: RouterDims = { dim: 8, experts: 4 };
/** Batch sizes the unit cases route: the first is the one messages name; the second catches sizes fixed at trace time. */
const TOKENS = 24;
const OTHER = 10;
const INITS = ['normal', 'zeros', 'ones', 'uniform'];
const FORMS: RouteForm[] = ['weights', 'indices', 'slots'];
const TOL = 1e-4;

/** The router's declared traits, or why they cannot be used (undefined, malformed). */
function traitsOf(r: R): RouterTraits | string {
  const t = (r as Partial<R>).traits as Partial<RouterTraits> | undefined;
  if (t === null || typeof t !== 'object') return `it declares no traits (got ${String(t)}): add \`get traits(): RouterTraits\` (sdk/families/routers/types.ts)`;
  if (t.form !== undefined && !FORMS.includes(t.form)) return `traits.form is ${JSON.stringify(t.form)}, not one of ${FORMS.map((f) => `'${f}'`).join(', ')} (or absent: 'weights')`;
  const form = t.form ?? 'weights';
  if (t.routing !== 'sparse' && t.routing !== 'dense') return `traits.routing is ${JSON.stringify(t.routing)}, not 'sparse' or 'dense'`;
  if (form === 'weights' && t.routing === 'sparse' && !(Number.isInteger(t.k) && t.k! >= 1)) return `a sparse router's traits.k must be an integer ≥ 1 (experts per token), got ${JSON.stringify(t.k)}`;
  if (t.capacity !== undefined && !(Number.isFinite(t.capacity) && t.capacity > 0)) return `traits.capacity must be a finite factor > 0 or undefined (no limit), got ${JSON.stringify(t.capacity)}`;
  if (form === 'indices' && t.capacity === undefined) return "form 'indices' needs traits.capacity: each expert takes C = ⌈c·N/E⌉ tokens";
  if (form === 'slots' && !(Number.isInteger(t.slots) && t.slots! >= 1)) return `form 'slots' needs traits.slots, an integer ≥ 1 (slots per expert), got ${JSON.stringify(t.slots)}`;
  if (typeof t.dropsTokens !== 'boolean') return `traits.dropsTokens must be true or false, got ${JSON.stringify(t.dropsTokens)}`;
  return t as RouterTraits;
}

/** The declared traits, or a failure naming what is wrong with them. */
function traits(r: R): RouterTraits {
  const t = traitsOf(r);
  if (typeof t === 'string') throw new ConformanceFailure(t);
  return t;
}

/** The declared traits when they are well-formed (the traits case reports them otherwise). */
function declared(r: R): RouterTraits | undefined {
  const t = traitsOf(r);
  return typeof t === 'string' ? undefined : t;
}

const formOf = (r: R): RouteForm | undefined => { const t = declared(r); return t && (t.form ?? 'weights'); };
const onlyForm = (f: RouteForm) => (r: R) => (declared(r) && formOf(r) !== f ? `form '${formOf(r)}' by its traits: this case checks form '${f}'` : undefined);

/** A parameter as the runtime initialises it (models/moe.py init_param). */
function initParam(rt: Runtime, spec: RouterParamSpec, seed: number): Tensor {
  switch (spec.init) {
    case 'zeros': return rt.zeros(spec.shape);
    case 'ones': return rt.ones(spec.shape);
    case 'uniform': {
      const bound = spec.std ?? 1 / Math.sqrt(spec.shape[0] || 1);
      return rt.rand(spec.shape, { seed }).mul(2 * bound).sub(bound);
    }
    default: return rt.randn(spec.shape, { seed }).mul(spec.std ?? 0.02);
  }
}

/** One routing of N tokens, read back: the form's tensors (flat values and shapes), aux, zloss, probs. */
interface Routed {
  n: number;
  form: RouteForm;
  /** By field name ('weights', 'indices', 'gates', 'dispatch', 'combine', 'probs'): shape and values. */
  out: Record<string, { shape: number[]; v: number[] }>;
  aux: number;
  zloss: number;
}

const FIELDS: Record<RouteForm, string[]> = { weights: ['weights'], indices: ['indices', 'gates'], slots: ['dispatch', 'combine'] };

/** route() in the very program a model's MoE layer replays, run on `n` seeded tokens, read back. */
async function routeOnce(rt: Runtime, r: R, seed: number, n = TOKENS): Promise<Routed> {
  const form = traits(r).form ?? 'weights';
  const specs = r.params(DIMS);
  let prog: Program;
  try {
    prog = routerProgram(rt, r, DIMS);
    await rt.flush();
  } catch (e) {
    if (e instanceof LiaisonError && e.code === 'E_TRACE') throw new ConformanceFailure(`route() cannot be traced (tensor ops only, no reads or awaits): ${e.message}`);
    throw e;
  }
  return rt.scope(async () => {
    const x = rt.randn([n, DIMS.dim], { seed });
    const params = Object.values(specs).map((spec, i) => initParam(rt, spec, seed + 1 + i));
    const outs = prog.run([x, ...params]) as Tensor[];
    prog.free(); // after the run it was queued with: the runtime holds the outputs
    const names = [...FIELDS[form], 'aux', 'zloss', 'probs'];
    check(outs.length === names.length, `the routing program of form '${form}' gives ${outs.length} outputs, expected ${names.length} (${names.join(', ')})`);
    const out: Routed['out'] = {};
    for (const [i, name] of names.entries()) {
      const d = await outs[i].data();
      out[name] = { shape: [...d.shape], v: Array.from(d.data as ArrayLike<number | bigint>, Number) };
    }
    for (const s of ['aux', 'zloss']) check(out[s].shape.length === 0, `${s} has shape [${out[s].shape}], expected a scalar ()`);
    return { n, form, out, aux: out.aux.v[0], zloss: out.zloss.v[0] };
  });
}

/** Fails unless `got` is `want` (a shape), naming the field and what the dims mean. */
function shapeIs(field: string, got: number[], want: number[], dims: string): void {
  check(got.join() === want.join(), `${field} has shape [${got}], expected [${want}] ${dims}`);
}

const finiteNonNeg = (field: string, v: number[]) => check(v.every((x) => Number.isFinite(x) && x >= 0), `${field} must be finite and non-negative (got ${v.find((x) => !(Number.isFinite(x) && x >= 0))})`);

/** Sums of `v` (rows × cols, row-major) per row, or per column. */
const rowSums = (v: number[], rows: number, cols: number) => Array.from({ length: rows }, (_, i) => v.slice(i * cols, (i + 1) * cols).reduce((a, b) => a + b, 0));
const colSums = (v: number[], rows: number, cols: number) => Array.from({ length: cols }, (_, j) => Array.from({ length: rows }, (_, i) => v[i * cols + j]).reduce((a, b) => a + b, 0));

/** Per token, how much of it reaches some expert: weights' row sums, gates per token, combine's row sums. */
function served(r: Routed): number[] {
  const { n, out } = r;
  const e = DIMS.experts;
  if (r.form === 'weights') return rowSums(out.weights.v, n, e);
  if (r.form === 'slots') return rowSums(out.combine.v, n, out.combine.v.length / n);
  const got = new Array<number>(n).fill(0);
  out.indices.v.forEach((tok, i) => { if (tok >= 0 && tok < n) got[tok] += out.gates.v[i]; });
  return got;
}

/** The form's promises (shapes, values) on one routing. */
function checkForm(t: RouterTraits, got: Routed): void {
  const { n, out } = got;
  const e = DIMS.experts;
  if (got.form === 'weights') {
    shapeIs('weights', out.weights.shape, [n, e], '(N, E)');
    finiteNonNeg('weights', out.weights.v);
  } else if (got.form === 'indices') {
    const c = Math.min(n, Math.ceil((t.capacity! * n) / e));
    shapeIs('indices', out.indices.shape, [e, c], `(E, C), C = min(N, ⌈c·N/E⌉) = min(${n}, ⌈${t.capacity}·${n}/${e}⌉)`);
    shapeIs('gates', out.gates.shape, [e, c], '(E, C), as indices');
    check(out.indices.v.every((i) => Number.isInteger(i) && i >= 0 && i < n), `indices must be tokens in [0, ${n}) (got ${out.indices.v.find((i) => !(i >= 0 && i < n))})`);
    finiteNonNeg('gates', out.gates.v);
    for (let x = 0; x < e; x++) {
      const used = out.indices.v.slice(x * c, (x + 1) * c).filter((_, s) => out.gates.v[x * c + s] > 0);
      check(new Set(used).size === used.length, `expert ${x} takes a token in two of its slots (${used.join(', ')}): its output would count twice`);
    }
  } else {
    const s = t.slots!;
    for (const f of ['dispatch', 'combine']) {
      shapeIs(f, out[f].shape, [n, e, s], `(N, E, S), S = traits.slots = ${s}`);
      finiteNonNeg(f, out[f].v);
    }
    const cols = colSums(out.dispatch.v, n, e * s);
    const bad = cols.findIndex((v) => Math.abs(v - 1) > TOL);
    check(bad < 0, `dispatch must mix the tokens into each slot (sum 1 over N): slot ${bad} (expert ${Math.floor(bad / s)}) sums to ${cols[bad]}`);
    const rows = rowSums(out.combine.v, n, e * s);
    const off = rows.findIndex((v) => Math.abs(v - 1) > TOL);
    check(off < 0, `combine must mix the slot outputs for each token (sum 1 over E·S): token ${off} sums to ${rows[off]}`);
  }
  const amount = served(got);
  const what = got.form === 'weights' ? 'all its weights are 0' : got.form === 'indices' ? 'no expert took it with a gate > 0' : 'its combine weights are all 0';
  if (!t.dropsTokens) check(amount.every((a) => a > 0), `token ${amount.findIndex((a) => !(a > 0))} has no expert (${what}) though traits.dropsTokens is false`);
}

/** The getter `name` resolves to on `obj` (own property first, then its prototype chain). */
function findGetter(obj: object, name: string): (() => unknown) | undefined {
  for (let p: object | null = obj; p; p = Object.getPrototypeOf(p)) {
    const d = Object.getOwnPropertyDescriptor(p, name);
    if (d) return d.get;
  }
  return undefined;
}

/** The Router cases. */
export function routerCases(): CaseDef<R>[] {
  return [
    ...registrationCases<R>(),
    {
      name: 'params(): identifier names, shapes of non-negative integers, known inits',
      async run({ plugin }) {
        const specs = plugin().params(DIMS);
        for (const [n, s] of Object.entries(specs)) {
          check(/^[A-Za-z_][A-Za-z0-9_]*$/.test(n), `parameter name '${n}' is not an identifier (the model names it …moe.router.${n})`);
          check(Array.isArray(s.shape) && s.shape.every((d) => Number.isInteger(d) && d >= 0), `parameter '${n}' has shape ${JSON.stringify(s.shape)}`);
          check(INITS.includes(s.init), `parameter '${n}' has init '${s.init}', not one of ${INITS.join(', ')}`);
          check(s.std === undefined || (Number.isFinite(s.std) && s.std >= 0), `parameter '${n}' has std ${s.std}`);
        }
      },
    },
    {
      name: "traits: declared by the router (not left to RouterBase's fallback from config.k) and well-formed",
      async run({ plugin }) {
        const r = plugin();
        const own = r instanceof RouterBase && Object.getOwnPropertyDescriptor(RouterBase.prototype, 'traits')?.get === findGetter(r, 'traits');
        check(!own, "traits are RouterBase's fallback, inferred from config.k: declare them (`override get traits(): RouterTraits { return { routing: 'sparse', k: this.config.k, dropsTokens: false }; }`)");
        traits(r);
      },
    },
    {
      name: "route() traces; its form's result keeps the form's promises at two batch sizes, every token served unless traits.dropsTokens; aux a finite scalar",
      async run({ rt, plugin, seed }) {
        const r = plugin();
        const t = traits(r);
        for (const n of [TOKENS, OTHER]) {
          const got = await routeOnce(rt, r, seed, n);
          checkForm(t, got);
          check(Number.isFinite(got.aux), 'aux is not finite');
        }
      },
    },
    {
      name: 'zloss (when given) a finite scalar ≥ 0; probs (when given) (N, E) with rows on the simplex',
      async run({ rt, plugin, seed }) {
        const { n, out, zloss } = await routeOnce(rt, plugin(), seed);
        check(Number.isFinite(zloss) && zloss >= 0, `zloss is ${zloss}: the router z-loss, a mean of squares, is finite and ≥ 0`);
        const p = out.probs;
        if (p.shape.length === 1 && p.shape[0] === 0) return; // not given: the runtime's metrics use the dispatch mass
        shapeIs('probs', p.shape, [n, DIMS.experts], '(N, E)');
        finiteNonNeg('probs', p.v);
        const rows = rowSums(p.v, n, DIMS.experts);
        const bad = rows.findIndex((s) => Math.abs(s - 1) > TOL);
        check(bad < 0, `probs row ${bad} sums to ${rows[bad]}: probs is a distribution over the experts per token (rows sum to 1)`);
      },
    },
    {
      name: 'a sparse router (traits k) weighs at most k experts per token',
      skipFor: (r) => onlyForm('weights')(r) ?? (declared(r)?.routing === 'dense' ? 'dense (soft) router by its traits: every expert may get weight' : undefined),
      async run({ rt, plugin, seed }) {
        const r = plugin();
        const t = traits(r);
        const k = t.k!;
        const w = (await routeOnce(rt, r, seed)).out.weights.v;
        for (let i = 0; i < TOKENS; i++) {
          const used = w.slice(i * DIMS.experts, (i + 1) * DIMS.experts).filter((v) => v !== 0).length;
          check(used <= k && (used >= 1 || t.dropsTokens), `token ${i} has ${used} experts with nonzero weight; k = ${k}`);
        }
      },
    },
    {
      name: 'a router with a capacity (traits.capacity c) gives no expert more than ⌈c·N·k/E⌉ tokens (form weights) or exactly C = min(N, ⌈c·N/E⌉) slots (form indices)',
      skipFor: (r) => {
        const t = declared(r);
        if (t?.capacity === undefined) return t ? 'no capacity in its traits: an expert may take any number of tokens' : undefined;
        return t.form === 'slots' ? "form 'slots': an expert's S slots are its capacity" : undefined;
      },
      async run({ rt, plugin, seed }) {
        const r = plugin();
        const t = traits(r);
        for (const n of [TOKENS, OTHER]) {
          const got = await routeOnce(rt, r, seed, n);
          if (got.form === 'indices') {
            const c = Math.min(n, Math.ceil((t.capacity! * n) / DIMS.experts));
            check(got.out.indices.shape[1] === c, `each expert has ${got.out.indices.shape[1]} slots for ${n} tokens; capacity ${t.capacity} gives C = min(${n}, ⌈${t.capacity}·${n}/${DIMS.experts}⌉) = ${c}`);
            continue;
          }
          const k = t.routing === 'sparse' ? t.k! : DIMS.experts;
          const limit = Math.ceil((t.capacity! * n * k) / DIMS.experts);
          const loads = colSums(got.out.weights.v.map((v) => (v !== 0 ? 1 : 0)), n, DIMS.experts);
          loads.forEach((load, e) => check(load <= limit, `expert ${e} takes ${load} of ${n} tokens; capacity ${t.capacity} allows ⌈${t.capacity}·${n}·${k}/${DIMS.experts}⌉ = ${limit}`));
        }
      },
    },
    {
      name: 'installed in a GPT with an MoE layer, it trains: the loss falls over a few steps and the router parameters get gradients',
      async run({ rt, plugin, seed }) {
        const router = plugin();
        const vocab = 16;
        const model = await Model.build(rt, { kind: 'gpt', vocab, context: 16, dim: 16, layers: 1, heads: 2, mlpRatio: 2, moe: { experts: 4, hidden: 16, router } }, { seed });
        try {
          const routerParams = model.params.filter((p) => p.name.includes('.moe.router.'));
          // a sequence a tiny model learns in a few steps: each row counts up by a row-specific stride
          const rows = 4, len = 13;
          const seq = Array.from({ length: rows * len }, (_, i) => (Math.floor(i / len) * 3 + (i % len) * (1 + Math.floor(i / len))) % vocab);
          const tokens = rt.tensor(new BigInt64Array(seq.map(BigInt)), [rows, len]);
          const x = tokens.slice(1, 0, len - 1), y = tokens.slice(1, 1, len);
          const losses: number[] = [];
          let gradNorms: number[] = [];
          for (let step = 0; step < 8; step++) {
            const logits = model.forward(x); // (B, T, V)
            const ce = rt.call('cross_entropy', [logits.reshape([-1, vocab]), y.reshape([-1])]) as Tensor;
            // the losses a Trainer adds (RouterBase.attach): aux × auxWeight, zloss × zWeight
            let loss = router.auxWeight > 0 ? ce.add(model.auxLoss().mul(router.auxWeight)) : ce;
            if ((router.zWeight ?? 0) > 0) loss = loss.add(model.auxLoss('zloss').mul(router.zWeight!));
            rt.call('backward', [loss], undefined, 0);
            if (step === 0) gradNorms = await Promise.all(routerParams.map((p) => model.grad(p.name).abs().sum().item()));
            for (const p of model.params) model.param(p.name).sub_(model.grad(p.name).mul(0.5));
            rt.call('zero_grad', [model.handle], undefined, 0);
            losses.push(await ce.item());
          }
          check(routerParams.length > 0 || Object.keys(router.params(DIMS)).length === 0, 'the model has no router parameters');
          routerParams.forEach((p, i) => check(gradNorms[i] > 0, `router parameter '${p.name}' got a zero gradient: route() must keep autograd from its params to the ${formOf(router) === 'indices' ? 'gates' : formOf(router) === 'slots' ? 'dispatch and combine weights' : 'weights'}`));
          check(losses.every(Number.isFinite), `the loss is not finite: ${losses}`);
          check(losses[losses.length - 1] < losses[0], `the loss did not fall over ${losses.length} steps: ${losses.map((l) => l.toFixed(3)).join(' → ')}`);
        } finally {
          model.free();
        }
      },
    },
  ];
}
