// The Router suite fails routers that break a promise of their form (sdk/conformance/routers.ts):
// each broken router below keeps every promise but one, and the case for that one names it.
import { Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { expertTopTokens } from '../plugins/routers/expert-choice.js';
import { conformanceCases, runConformance } from '../sdk/conformance/index.js';
import { RouterBase, RouterFields } from '../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec, RouterTraits } from '../sdk/families/routers/types.js';
import type { PluginMeta } from '../sdk/plugin.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const meta = (name: string): PluginMeta => Object.freeze({ name, version: '0.0.1', family: 'router', schema: Type.Object({ ...RouterFields }), description: 'a deliberately broken router' });
type Cfg = { auxWeight: number; zWeight: number };
const CFG: Cfg = { auxWeight: 0, zWeight: 0 };
const gate = (d: RouterDims, cols = d.experts): Record<string, RouterParamSpec> => ({ gate: { shape: [d.dim, cols], init: 'normal', std: 0.5 } });

/** Expert choice with a flaw: `flaw` rewrites its indices and gates. */
class EC extends RouterBase<Cfg> {
  constructor(name: string, private readonly flaw: (r: { indices: Tensor; gates: Tensor; probs: Tensor }, d: RouterDims) => RouteResult, private readonly t: Partial<RouterTraits> = {}) { super(CFG, meta(name)); }
  override get traits(): RouterTraits { return { form: 'indices', routing: 'sparse', capacity: 1, dropsTokens: true, ...this.t }; }
  params(d: RouterDims) { return gate(d); }
  route(x: Tensor, { gate: g }: Record<string, Tensor>, d: RouterDims): RouteResult {
    const probs = x.matmul(g).softmax(-1);
    return this.flaw({ ...expertTopTokens(probs, 1, d.experts), probs }, d);
  }
}

/** Soft MoE (S = 2) with a flaw: `flaw` gets the logits (N, E·S) and returns the result. */
class Slots extends RouterBase<Cfg> {
  constructor(name: string, private readonly flaw: (z: Tensor, d: RouterDims) => RouteResult) { super(CFG, meta(name)); }
  override get traits(): RouterTraits { return { form: 'slots', routing: 'dense', slots: 2, dropsTokens: false }; }
  params(d: RouterDims) { return gate(d, d.experts * 2); }
  route(x: Tensor, { gate: g }: Record<string, Tensor>, d: RouterDims): RouteResult { return this.flaw(x.matmul(g), d); }
}
const slots = (z: Tensor, d: RouterDims, dim: number) => z.softmax(dim).reshape([-1, d.experts, 2]);

/** Top-1 weights with a flaw in its z-loss or probs. */
class Weights extends RouterBase<Cfg> {
  constructor(name: string, private readonly extra: (logits: Tensor) => Partial<RouteResult>) { super(CFG, meta(name)); }
  override get traits(): RouterTraits { return { routing: 'sparse', k: 1, dropsTokens: false }; }
  params(d: RouterDims) { return gate(d); }
  route(x: Tensor, { gate: g }: Record<string, Tensor>): RouteResult {
    const logits = x.matmul(g);
    const probs = logits.softmax(-1);
    const [top, idx] = probs.topk(1, -1);
    return { weights: probs.mul(0).scatter(1, idx, top), ...this.extra(logits) };
  }
}

/** Run the cases whose names match; the first must fail; its message. */
async function failure(r: RouterBase<Cfg>, name: RegExp): Promise<string> {
  const only = conformanceCases('router', r).map((c) => c.name).filter((n) => name.test(n));
  expect(only.length).toBeGreaterThan(0);
  const report = await runConformance(r, { rt, only });
  const res = report.results[0];
  expect(res.status, `${res.name}: ${res.error?.message ?? res.reason}`).toBe('failed');
  return res.error!.message;
}

const ROUTE = /^route\(\) traces/;
const CAPACITY = /^a router with a capacity/;
const EXTRAS = /^zloss \(when given\)/;

describe("form 'indices'", () => {
  it('the reference (expert-choice arithmetic, capacity 1) passes every case', async () => {
    const report = await runConformance(new EC('ok', (r) => r), { rt });
    expect(report.results.filter((r) => r.status === 'failed').map((r) => `${r.name}: ${r.error?.message}`)).toEqual([]);
  }, 60_000);

  it('a token index past N', async () => {
    expect(await failure(new EC('past-n', ({ indices, gates }) => ({ indices: indices.add(1), gates })), ROUTE)).toMatch(/indices must be tokens in \[0, 24\) \(got 24\)/);
  });

  it('C fixed at trace time (right at 24 tokens, wrong at 10)', async () => {
    const fixed = new EC('fixed-c', ({ probs }) => {
      const [gates, indices] = probs.transpose(0, 1).topk(6, -1); // ⌈1·24/4⌉ = 6, for every N
      return { indices, gates };
    });
    expect(await failure(fixed, CAPACITY)).toMatch(/each expert has 6 slots for 10 tokens; capacity 1 gives C = min\(10, ⌈1·10\/4⌉\) = 3/);
  });

  it('negative gates; a token twice in one expert; a dropped token under dropsTokens false', async () => {
    expect(await failure(new EC('neg-gates', ({ indices, gates }) => ({ indices, gates: gates.sub(1) })), ROUTE)).toMatch(/gates must be finite and non-negative/);
    const twice = new EC('twice', ({ indices, gates }) => ({ indices: indices.slice(1, 0, 1).expand([-1, 6]), gates }));
    expect(await failure(twice, ROUTE)).toMatch(/expert 0 takes a token in two of its slots/);
    const hidden = new EC('hidden-drops', (r) => r, { dropsTokens: false });
    expect(await failure(hidden, ROUTE)).toMatch(/token \d+ has no expert \(no expert took it with a gate > 0\) though traits.dropsTokens is false/);
  });

  it('traits without a capacity', async () => {
    expect(await failure(new EC('no-cap', (r) => r, { capacity: undefined }), /^traits:/)).toMatch(/form 'indices' needs traits.capacity/);
  });
});

describe("form 'slots'", () => {
  it('the reference (Soft MoE arithmetic) passes the unit cases', async () => {
    const r = new Slots('ok', (z, d) => ({ dispatch: slots(z, d, 0), combine: slots(z, d, -1) }));
    const only = conformanceCases('router', r).map((c) => c.name).filter((n) => !/^installed in a GPT/.test(n));
    const report = await runConformance(r, { rt, only });
    expect(report.results.filter((x) => x.status === 'failed').map((x) => `${x.name}: ${x.error?.message}`)).toEqual([]);
  });

  it('dispatch normalised over the slots, not the tokens; combine over the tokens, not the slots', async () => {
    expect(await failure(new Slots('dispatch-rows', (z, d) => ({ dispatch: slots(z, d, -1), combine: slots(z, d, -1) })), ROUTE)).toMatch(/dispatch must mix the tokens into each slot \(sum 1 over N\): slot 0 \(expert 0\) sums to/);
    expect(await failure(new Slots('combine-cols', (z, d) => ({ dispatch: slots(z, d, 0), combine: slots(z, d, 0) })), ROUTE)).toMatch(/combine must mix the slot outputs for each token \(sum 1 over E·S\): token 0 sums to/);
  });

  it('slots per expert other than traits.slots', async () => {
    const three = new Slots('three', (z, d) => ({ dispatch: z.softmax(0).reshape([-1, d.experts * 2, 1]).slice(1, 0, d.experts), combine: slots(z, d, -1) }));
    expect(await failure(three, ROUTE)).toMatch(/dispatch has shape \[24,4,1\], expected \[24,4,2\] \(N, E, S\), S = traits.slots = 2/);
  });
});

describe('every form: z-loss and probs', () => {
  it('a z-loss that is not finite or negative', async () => {
    expect(await failure(new Weights('nan-z', (z) => ({ zloss: z.sum().div(0).mul(0) })), EXTRAS)).toMatch(/zloss is NaN/);
    expect(await failure(new Weights('neg-z', (z) => ({ zloss: z.logsumexp(-1).mean().neg().sub(1) })), EXTRAS)).toMatch(/zloss is -[\d.]+: the router z-loss, a mean of squares, is finite and ≥ 0/);
  });

  it('probs that are not a distribution per token, or not (N, E)', async () => {
    expect(await failure(new Weights('logit-probs', (z) => ({ probs: z.abs() })), EXTRAS)).toMatch(/probs row 0 sums to [\d.]+: probs is a distribution over the experts per token/);
    expect(await failure(new Weights('flat-probs', (z) => ({ probs: z.softmax(-1).mean(0) })), EXTRAS)).toMatch(/probs has shape \[4\], expected \[24,4\] \(N, E\)/);
  });

  it("a field of another form than the traits declare is refused", async () => {
    const wrong = new Weights('wrong-form', (z) => ({ dispatch: z.softmax(0).reshape([-1, 4, 1]) }));
    expect(await failure(wrong, ROUTE)).toMatch(/'dispatch', a field of form 'slots', but the router's traits declare form 'weights'/);
  });
});
