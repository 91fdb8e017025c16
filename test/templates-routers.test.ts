// Router traits (sdk/families/routers/types.ts): a router declares sparse or dense, its
// capacity and whether it drops tokens, and the conformance suite checks the weights against
// that — not against a guess from `config.k`.
import { type Static, Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { topk } from '../plugins/index.js';
import { formatReport, runConformance } from '../sdk/conformance/index.js';
import { RouterBase, RouterFields } from '../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec, RouterTraits } from '../sdk/families/routers/types.js';
import type { PluginMeta } from '../sdk/plugin.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const meta = (name: string, schema: PluginMeta['schema'] = Type.Object({ ...RouterFields })): PluginMeta => Object.freeze({ name, version: '1.0.0', family: 'router', schema, description: `${name} (test)` });
const gate = (d: RouterDims): Record<string, RouterParamSpec> => ({ gate: { shape: [d.dim, d.experts], init: 'normal', std: 0.5 } });

/** Soft routing over every expert; its config's integer `k` is the top-k of its auxiliary loss, not experts per token. */
const SoftConfig = Type.Object({ ...RouterFields, k: Type.Integer({ minimum: 1, default: 1, description: 'top-k of the auxiliary loss (not experts per token)' }) });
class Soft extends RouterBase<Static<typeof SoftConfig>> {
  override get traits(): RouterTraits { return { routing: 'dense', dropsTokens: false }; }
  params(d: RouterDims) { return gate(d); }
  route(x: Tensor, { gate: g }: Record<string, Tensor>): RouteResult {
    const probs = x.matmul(g).softmax(-1); // (N, E), every entry > 0
    const [top] = probs.topk(this.config.k, -1);
    return { weights: probs, aux: top.sum(-1).mean() };
  }
}

/**
 * Top-1 with a capacity factor: an expert takes the first ⌈c·N/E⌉ tokens that chose it and
 * drops the rest. `enforce: false` declares the capacity but lets every token through;
 * `declared` overrides the traits it claims.
 */
class Capped extends RouterBase<{ auxWeight: number }> {
  constructor(private readonly opts: { capacity: number; enforce: boolean; declared?: Partial<RouterTraits> }, m: PluginMeta) { super({ auxWeight: 0 }, m); }
  override get traits(): RouterTraits { return { routing: 'sparse', k: 1, capacity: this.opts.capacity, dropsTokens: true, ...this.opts.declared }; }
  params(d: RouterDims) { return gate(d); }
  route(x: Tensor, { gate: g }: Record<string, Tensor>, d: RouterDims): RouteResult {
    const probs = x.matmul(g).softmax(-1); // (N, E)
    const [top, idx] = probs.topk(1, -1);
    const chosen = probs.mul(0).scatter(1, idx, top); // (N, E)
    if (!this.opts.enforce) return { weights: chosen };
    const onehot = chosen.gt(0).to('f32');
    const place = onehot.cumsum(0).mul(onehot); // (N, E): 1-based arrival order at the chosen expert
    const limit = x.rt.call('ceil', [onehot.sum().mul(this.opts.capacity / d.experts)]) as Tensor; // () ⌈c·N/E⌉, N = tokens (one expert each)
    return { weights: chosen.mul(place.le(limit).to('f32')) };
  }
}

const failures = (report: Awaited<ReturnType<typeof runConformance>>) => report.results.filter((r) => r.status === 'failed').map((r) => `${r.name}: ${r.error?.message}`);

describe('router traits', () => {
  it('topk declares sparse, k from its config, no capacity, no dropped tokens', () => {
    expect(topk({ k: 2 }).traits).toEqual({ routing: 'sparse', k: 2, dropsTokens: false });
  });

  it('a dense router whose config has an integer k passes: the suite reads its traits, not config.k', async () => {
    const report = await runConformance(new Soft({ auxWeight: 0.01, zWeight: 0, k: 1 }, meta('soft', SoftConfig)), { rt });
    expect(failures(report)).toEqual([]);
    expect(report.results.find((r) => r.name.includes('at most k'))?.status).toBe('skipped');
  }, 60_000);

  it('a router with a capacity that drops tokens passes; one that declares a capacity it does not keep, or no drops while dropping, fails by name', async () => {
    const ok = await runConformance(new Capped({ capacity: 1, enforce: true }, meta('capped')), { rt });
    expect(failures(ok), formatReport(ok)).toEqual([]);
    const loose = await runConformance(new Capped({ capacity: 0.5, enforce: false }, meta('loose-cap')), { rt, only: [ok.results.find((r) => r.name.includes('capacity'))!.name] });
    expect(failures(loose).join('\n')).toMatch(/expert \d takes \d+ of 24 tokens; capacity 0.5 allows .* = 3/);
    const hidden = await runConformance(new Capped({ capacity: 1, enforce: true, declared: { dropsTokens: false, capacity: 1 } }, meta('hidden-drops')), { rt, only: [ok.results.find((r) => r.name.startsWith('route() traces'))!.name] });
    expect(failures(hidden).join('\n')).toMatch(/has no expert \(all its weights are 0\) though traits.dropsTokens is false/);
  }, 60_000);

  it("a router that leaves its traits to RouterBase's fallback fails the traits case, naming the fix", async () => {
    class Legacy extends RouterBase<{ auxWeight: number; k: number }> {
      params(d: RouterDims) { return gate(d); }
      route(x: Tensor, { gate: g }: Record<string, Tensor>): RouteResult { return { weights: x.matmul(g).softmax(-1) }; }
    }
    const r = new Legacy({ auxWeight: 0, k: 4 }, meta('legacy'));
    expect(r.traits).toEqual({ routing: 'sparse', k: 4, dropsTokens: false }); // the fallback, for routers written before traits
    const report = await runConformance(r, { rt, only: ["traits: declared by the router (not left to RouterBase's fallback from config.k) and well-formed"] });
    expect(failures(report).join('\n')).toMatch(/RouterBase's fallback, inferred from config.k: declare them/);
  });
});
