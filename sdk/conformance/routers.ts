/**
 * Conformance suite of the Router family (sdk/families/routers/types.ts).
 *
 * The unit cases trace `route()` on its own, the way a model's MoE layer replays it; the
 * end-to-end case builds a one-block GPT whose feed-forward is an MoE layer routed by the
 * plugin and trains it for a few steps. What the weights are checked against is what the
 * router declares in its `traits` (sparse with k experts per token or dense, a capacity,
 * whether it drops tokens; sdk/families/routers/types.ts): nothing is inferred from its config.
 */
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { RouterBase, routerProgram } from '../families/routers/base.js';
import type { Router, RouterDims, RouterParamSpec, RouterTraits } from '../families/routers/types.js';
import { Model } from '../model.js';
import type { Program } from '../program.js';
import { type CaseDef, check, ConformanceFailure, registrationCases, values } from './suite.js';

type R = Router;

const DIMS: RouterDims = { dim: 8, experts: 4 };
const TOKENS = 24;
const INITS = ['normal', 'zeros', 'ones', 'uniform'];

/** The router's declared traits, or why they cannot be used (undefined, malformed). */
function traitsOf(r: R): RouterTraits | string {
  const t = (r as Partial<R>).traits as Partial<RouterTraits> | undefined;
  if (t === null || typeof t !== 'object') return `it declares no traits (got ${String(t)}): add \`get traits(): RouterTraits\` (sdk/families/routers/types.ts)`;
  if (t.routing !== 'sparse' && t.routing !== 'dense') return `traits.routing is ${JSON.stringify(t.routing)}, not 'sparse' or 'dense'`;
  if (t.routing === 'sparse' && !(Number.isInteger(t.k) && t.k! >= 1)) return `a sparse router's traits.k must be an integer ≥ 1 (experts per token), got ${JSON.stringify(t.k)}`;
  if (t.capacity !== undefined && !(Number.isFinite(t.capacity) && t.capacity > 0)) return `traits.capacity must be a finite factor > 0 or undefined (no limit), got ${JSON.stringify(t.capacity)}`;
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

/** Per token (row), the experts with a nonzero weight. */
function usedPerToken(w: number[]): number[] {
  return Array.from({ length: TOKENS }, (_, i) => w.slice(i * DIMS.experts, (i + 1) * DIMS.experts).filter((v) => v !== 0).length);
}

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

/** route() in the very program a model's MoE layer replays, run once on seeded tokens. */
async function routeOnce(rt: Runtime, r: R, seed: number): Promise<{ weights: Tensor; aux: Tensor }> {
  const specs = r.params(DIMS);
  let prog: Program;
  try {
    prog = routerProgram(rt, r, DIMS);
    await rt.flush();
  } catch (e) {
    if (e instanceof LiaisonError && e.code === 'E_TRACE') throw new ConformanceFailure(`route() cannot be traced (tensor ops only, no reads or awaits): ${e.message}`);
    throw e;
  }
  const x = rt.randn([TOKENS, DIMS.dim], { seed });
  const params = Object.values(specs).map((spec, i) => initParam(rt, spec, seed + 1 + i));
  const [weights, aux] = prog.run([x, ...params]) as Tensor[];
  prog.free(); // after the run it was queued with: the runtime holds the outputs
  return { weights, aux };
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
      name: 'route() traces; weights (N, E) finite and non-negative, every token weighted unless traits.dropsTokens; aux a finite scalar',
      async run({ rt, plugin, seed }) {
        const r = plugin();
        const t = declared(r);
        const { weights, aux } = await routeOnce(rt, r, seed);
        const [wi, ai] = [await weights.info(), await aux.info()];
        check(wi.shape.join() === `${TOKENS},${DIMS.experts}`, `weights have shape [${wi.shape}], expected [${TOKENS},${DIMS.experts}] (N, E)`);
        check(ai.shape.length === 0, `aux has shape [${ai.shape}], expected a scalar ()`);
        const w = await values(weights);
        check(w.every((v) => Number.isFinite(v) && v >= 0), 'weights must be finite and non-negative');
        const rows = Array.from({ length: TOKENS }, (_, i) => w.slice(i * DIMS.experts, (i + 1) * DIMS.experts).reduce((a, b) => a + b, 0));
        // a router that declares it drops tokens may leave a row empty; undeclared traits count as not dropping
        if (!t?.dropsTokens) check(rows.every((s) => s > 0), `token ${rows.findIndex((s) => !(s > 0))} has no expert (all its weights are 0) though traits.dropsTokens is false`);
        check(Number.isFinite(await aux.item()), 'aux is not finite');
      },
    },
    {
      name: 'a sparse router (traits k) weighs at most k experts per token',
      skipFor: (r) => (declared(r)?.routing === 'dense' ? 'dense (soft) router by its traits: every expert may get weight' : undefined),
      async run({ rt, plugin, seed }) {
        const r = plugin();
        const t = traits(r);
        const k = t.k!;
        const used = usedPerToken(await values((await routeOnce(rt, r, seed)).weights));
        for (const [i, n] of used.entries()) {
          check(n <= k && (n >= 1 || t.dropsTokens), `token ${i} has ${n} experts with nonzero weight; k = ${k}`);
        }
      },
    },
    {
      name: 'a router with a capacity (traits.capacity c) gives no expert more than ⌈c·N·k/E⌉ tokens',
      skipFor: (r) => (declared(r) && declared(r)!.capacity === undefined ? 'no capacity in its traits: an expert may take any number of tokens' : undefined),
      async run({ rt, plugin, seed }) {
        const r = plugin();
        const t = traits(r);
        const k = t.routing === 'sparse' ? t.k! : DIMS.experts;
        const limit = Math.ceil((t.capacity! * TOKENS * k) / DIMS.experts);
        const w = await values((await routeOnce(rt, r, seed)).weights);
        for (let e = 0; e < DIMS.experts; e++) {
          const load = Array.from({ length: TOKENS }, (_, i) => w[i * DIMS.experts + e]).filter((v) => v !== 0).length;
          check(load <= limit, `expert ${e} takes ${load} of ${TOKENS} tokens; capacity ${t.capacity} allows ⌈${t.capacity}·${TOKENS}·${k}/${DIMS.experts}⌉ = ${limit}`);
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
            const loss = router.auxWeight > 0 ? ce.add(model.auxLoss().mul(router.auxWeight)) : ce;
            rt.call('backward', [loss], undefined, 0);
            if (step === 0) gradNorms = await Promise.all(routerParams.map((p) => model.grad(p.name).abs().sum().item()));
            for (const p of model.params) model.param(p.name).sub_(model.grad(p.name).mul(0.5));
            rt.call('zero_grad', [model.handle], undefined, 0);
            losses.push(await ce.item());
          }
          check(routerParams.length > 0 || Object.keys(router.params(DIMS)).length === 0, 'the model has no router parameters');
          routerParams.forEach((p, i) => check(gradNorms[i] > 0, `router parameter '${p.name}' got a zero gradient: route() must keep autograd from its params to the weights`));
          check(losses.every(Number.isFinite), `the loss is not finite: ${losses}`);
          check(losses[losses.length - 1] < losses[0], `the loss did not fall over ${losses.length} steps: ${losses.map((l) => l.toFixed(3)).join(' → ')}`);
        } finally {
          model.free();
        }
      },
    },
  ];
}
