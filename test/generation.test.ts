// Decoding with a GPT: an MoE layer whose router is a plugin traced into the forward pass,
// KV-cache policies at the attention layers, generation, and perplexity on held-out
// pydoc text after a short training run. The router and the policies are defined here
// (the reference plugins live under plugins/, which the SDK's tests do not import).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Static, Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { KVPolicyBase, KVPolicyFields } from '../sdk/families/kv-policies/base.js';
import type { KVInputs, KVPolicy, KVScore } from '../sdk/families/kv-policies/types.js';
import { RouterBase, RouterFields } from '../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec } from '../sdk/families/routers/types.js';
import { Model } from '../sdk/model.js';
import { decodeText, encodeText } from '../sdk/text.js';
import { definePlugin } from '../sdk/plugin.js';
import { trace } from '../sdk/program.js';
import { startRuntime } from './helpers.js';

// ---- a top-1 softmax router ----
const Top1Config = Type.Object({ ...RouterFields }, { additionalProperties: false });
class Top1 extends RouterBase<Static<typeof Top1Config>> {
  params(d: RouterDims): Record<string, RouterParamSpec> {
    return { w: { shape: [d.dim, d.experts], init: 'normal', std: 0.5 } };
  }
  route(x: Tensor, p: Record<string, Tensor>, d: RouterDims): RouteResult {
    const probs = x.matmul(p.w).softmax(-1); // (N, E)
    const [top, idx] = probs.topk(1, -1); // (N, 1)
    const weights = probs.mul(0).scatter(1, idx, top); // (N, E): the best expert's probability, 0 elsewhere
    const load = weights.gt(0).to('f32').mean(0); // (E,) share of the tokens per expert
    return { weights, aux: load.mul(probs.mean(0)).sum().mul(d.experts) }; // Switch's balancing loss
  }
}
const top1 = definePlugin({ name: 'test-top1', version: '1.0.0', family: 'router', schema: Top1Config, description: 'top-1 softmax gating (test)', create: (c, meta) => new Top1(c, meta) });

/** The same routing with a bias parameter too: a router the MoE models below were not built for. */
class Top1Bias extends Top1 {
  override params(d: RouterDims): Record<string, RouterParamSpec> {
    return { ...super.params(d), b: { shape: [d.experts], init: 'zeros' } };
  }
}

// ---- KV policies ----
const WindowConfig = Type.Object({ ...KVPolicyFields, evict: Type.Optional(Type.Integer({ minimum: 1, description: 'tokens dropped at once' })) }, { additionalProperties: false });
class Window extends KVPolicyBase<Static<typeof WindowConfig>> {
  score({ pos }: KVInputs): Tensor {
    return pos.to('f32'); // the most recent tokens score highest
  }
}
const window = definePlugin({ name: 'test-window', version: '1.0.0', family: 'kv-policy', schema: WindowConfig, description: 'sliding window (test)', create: (c, meta) => new Window(c, meta) });

/** Accumulated attention (H2O's score), to exercise per-token state. */
class Heavy extends KVPolicyBase<Static<typeof WindowConfig>> {
  override state(): Record<string, number> {
    return { acc: 0 };
  }
  score({ attn, state }: KVInputs): KVScore {
    const acc = state.acc.add(attn.sum(2)); // (B, H, C): every query row's weights
    return { scores: acc, state: { acc } };
  }
}
const heavy = definePlugin({ name: 'test-heavy', version: '1.0.0', family: 'kv-policy', schema: WindowConfig, description: 'accumulated attention (test)', create: (c, meta) => new Heavy(c, meta) });

let rt: Runtime;
// one intra-op thread: these models are tiny, and two test files share two cores
// (more threads than cores make torch's workers spin against each other)
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

describe('mixture of experts with a traced router', () => {
  const spec = { kind: 'gpt', vocab: 32, context: 16, dim: 16, layers: 2, heads: 2, moe: { experts: 3, hidden: 24, router: top1({ auxWeight: 0.01 }) } } as const;

  it('routes each token to its top expert, with gradients into the router', async () => {
    const m = await Model.build(rt, spec, { seed: 0 });
    expect(m.hookPoints).toEqual({ kv: 2, router: 2 });
    expect(m.params.filter((p) => p.name.includes('router')).map((p) => [p.name, p.shape])).toEqual([['blocks.0.moe.router.w', [16, 3]], ['blocks.1.moe.router.w', [16, 3]]]);
    m.capture(['blocks.0.ln2', 'blocks.0.moe']);
    const tokens = rt.randint(0, 32, [2, 12], { seed: 1 });
    const logits = m.forward(tokens);
    expect((await logits.info()).shape).toEqual([2, 12, 32]);

    // the layer's output, recomputed here from its input and parameters
    const h = m.activation('blocks.0.ln2').reshape([24, 16]); // (N, D)
    const probs = h.matmul(m.param('blocks.0.moe.router.w')).softmax(-1); // (N, E)
    const [top, idx] = probs.topk(1, -1);
    const parts = [0, 1, 2].map((e) => {
      const p = (n: string) => m.param(`blocks.0.moe.experts.${e}.${n}`);
      const out = (rt.call('linear', [(rt.call('linear', [h, p('fc.weight'), p('fc.bias')]) as Tensor).gelu(), p('proj.weight'), p('proj.bias')]) as Tensor); // (N, D)
      return out.mul(idx.eq(e).to('f32').mul(top)); // only the chosen expert counts
    });
    const want = await parts[0].add(parts[1]).add(parts[2]).toArray() as Float32Array;
    const got = await m.activation('blocks.0.moe').reshape([24, 16]).toArray() as Float32Array;
    got.forEach((v, i) => expect(v).toBeCloseTo(want[i], 5));
    const usage = await idx.reshape([24]).tolist() as number[];
    expect(new Set(usage).size).toBeGreaterThan(1); // the router spreads the tokens

    const aux = await m.auxLoss().item(); // two layers, each in [1, E] for top-1
    expect(aux).toBeGreaterThanOrEqual(2);
    expect(aux).toBeLessThanOrEqual(6);
    const loss = rt.call('cross_entropy', [logits.reshape([24, 32]), tokens.reshape([24])]) as Tensor;
    rt.call('backward', [loss.add(m.auxLoss().mul(0.01))], undefined, 0);
    const g = await m.grad('blocks.0.moe.router.w').toArray() as Float32Array;
    expect(g.some((v) => v !== 0)).toBe(true);
    // and it decodes through the cache with the router in place
    expect((await m.generate(tokens.slice(1, 0, 4), { steps: 6 }).info()).shape).toEqual([2, 10]);
  });

  it('rebuilds an MoE model, router included, from its checkpoint', async () => {
    const m = await Model.build(rt, spec, { seed: 3 });
    const dir = mkdtempSync(join(tmpdir(), 'liaison-moe-'));
    try {
      const path = join(dir, 'moe.safetensors');
      await m.save(path);
      const { model } = await Model.fromCheckpoint(rt, path);
      expect(model.hookPoints).toEqual({ kv: 2, router: 2 });
      const tokens = rt.randint(0, 32, [1, 8], { seed: 4 });
      expect(await model.forward(tokens, { train: false }).tolist()).toEqual(await m.forward(tokens, { train: false }).tolist());
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a router whose parameters the model was not built with', async () => {
    const m = await Model.build(rt, spec, { seed: 0 });
    const other = new Top1Bias(top1.resolve({}), top1);
    expect(() => m.setRouter(other)).toThrow(/declares parameters w \[16,3\], b \[3\], but the model's MoE layers were built with w \[16,3\]/);
    expect(() => m.setRouter(top1(), { layers: [2] })).toThrow(/layers must be MoE layer indices in \[0, 2\)/);
  });
});

describe('decoding a small GPT trained on pydoc text', () => {
  const V = 128, T = 64, B = 16;
  let m: Model;
  let heldout: Tensor; // (4, T) i64 from the last tenth of the corpus, never trained on
  let untrained: number;

  beforeAll(async () => {
    m = await Model.build(rt, { kind: 'gpt', vocab: V, context: T, dim: 32, layers: 2, heads: 2 }, { seed: 0 });
    const corpus = rt.call('text_corpus', ['pydoc']) as Tensor; // (N,) u8 ASCII
    const n = (await corpus.info()).shape[0];
    const split = Math.floor(n * 0.9);
    const windows = (rows: number, lo: number, hi: number, seed: number) => {
      const start = rt.randint(lo, hi - T - 1, [rows, 1], { seed }); // (rows, 1)
      const idx = start.add(rt.arange(0, T + 1, 1, 'i64').reshape([1, T + 1])); // (rows, T + 1)
      return corpus.indexSelect(0, idx.flatten()).reshape([rows, T + 1]).to('i64');
    };
    heldout = windows(4, split, n, 1234).slice(1, 0, T);
    untrained = (await m.perplexity(heldout)).perplexity;
    // plain SGD, the whole step traced into one program: forward, loss, backward, update
    const step = await trace(rt, { name: 'sgd-step', inputs: { batch: { dtype: 'i64', shape: [B, T + 1] } } }, ({ batch }) => {
      const logits = m.forward(batch.slice(1, 0, T)); // (B, T, V)
      const loss = rt.call('cross_entropy', [logits.reshape([B * T, V]), batch.slice(1, 1, T + 1).reshape([B * T])]) as Tensor;
      rt.call('backward', [loss], undefined, 0);
      for (const p of m.params) m.param(p.name).sub_(m.grad(p.name).mul(0.2));
      rt.call('zero_grad', [m.handle], undefined, 0);
      return loss;
    });
    for (let i = 0; i < 60; i++) step.run({ batch: windows(B, 0, split, i) });
    await rt.flush();
  });

  it('lowers the held-out perplexity by training', async () => {
    const r = await m.perplexity(heldout);
    expect(untrained).toBeGreaterThan(100); // about the vocabulary size: a uniform guess
    expect(Number.isFinite(r.perplexity)).toBe(true);
    expect(r.perplexity).toBeLessThan(untrained / 2);
    expect(r.tokens).toBe(4 * (T - 1));
    expect(r.nll).toBeCloseTo(Math.log(r.perplexity), 12);
    expect(r.tokensPerSecond).toBeGreaterThan(0);
  });

  it('decodes through the full cache exactly as the training forward sees the text', async () => {
    m.setKVPolicy(null);
    const cached = await m.perplexity(heldout, { prefill: 1 });
    const logits = m.forward(heldout, { train: false }).slice(1, 0, T - 1).reshape([4 * (T - 1), V]);
    const ce = await (rt.call('cross_entropy', [logits, heldout.slice(1, 1, T).reshape([4 * (T - 1)])]) as Tensor).item();
    expect(cached.nll).toBeCloseTo(ce, 4);
    expect((await m.kvCacheSize()).tokens).toEqual([T - 1, T - 1]); // every token but the last was fed
  });

  it('keeps the cache at the policy budget, and equals the full cache when the budget covers it', async () => {
    m.setKVPolicy(null);
    const full = await m.perplexity(heldout, { prefill: 8 });
    m.setKVPolicy(window({ budget: T }));
    const roomy = await m.perplexity(heldout, { prefill: 8 });
    expect(roomy.perplexity).toBe(full.perplexity);
    m.setKVPolicy(window({ budget: 16 }));
    const tight = await m.perplexity(heldout, { prefill: 8 });
    expect((await m.kvCacheSize()).tokens).toEqual([16, 16]);
    expect(Number.isFinite(tight.perplexity)).toBe(true);
    expect(tight.perplexity).not.toBe(full.perplexity);
    // per token: the same until the cache first outgrows the budget, then not
    const perToken = async () => (await (rt.call('kv_eval', [m.handle, heldout, 8]) as Tensor).tolist() as number[][])[0];
    const windowed = await perToken();
    m.setKVPolicy(null);
    const whole = await perToken();
    expect(windowed.slice(0, 16 - 8 + 1)).toEqual(whole.slice(0, 16 - 8 + 1)); // tokens 8..16 see at most 16 cached
    expect(windowed.slice(16 - 8 + 1)).not.toEqual(whole.slice(16 - 8 + 1));
    // one layer only; then a policy with per-token state
    m.setKVPolicy(null);
    m.setKVPolicy(window({ budget: 16 }), { layers: [0] });
    await m.perplexity(heldout);
    expect((await m.kvCacheSize()).tokens).toEqual([16, T - 1]);
    m.setKVPolicy(heavy({ budget: 24 }));
    expect(Number.isFinite((await m.perplexity(heldout)).perplexity)).toBe(true);
    expect((await m.kvCacheSize()).tokens).toEqual([24, 24]);
    // a policy that only meets the contract, without the shared base
    const plain: KVPolicy = { meta: window, config: { budget: 8 }, budget: 8, cache: () => ({ evict: 1, history: null, positions: 'original', bits: 32, group: null }), state: () => ({}), score: ({ pos }) => pos.to('f32') };
    m.setKVPolicy(plain);
    await m.perplexity(heldout);
    expect((await m.kvCacheSize()).tokens).toEqual([8, 8]);
    m.setKVPolicy(null);
  });

  it('generates from a text prompt, greedily and by sampling', async () => {
    m.setKVPolicy(window({ budget: 20 }));
    const text = 'The ';
    const prompt = rt.tensor(encodeText(text), [1, text.length]); // (1, 4) i64
    const batch = rt.cat([prompt, prompt], 0); // (2, 4)
    const a = m.generate(batch, { steps: 30 });
    const info = await a.info();
    expect(info).toMatchObject({ dtype: 'i64', shape: [2, 34] });
    expect((await m.kvCacheSize()).tokens).toEqual([20, 20]);
    const [rowA, rowB] = await a.tolist() as number[][];
    expect(rowB).toEqual(rowA); // greedy: the same prompt, the same text
    expect(await m.generate(batch, { steps: 30 }).tolist()).toEqual([rowA, rowA]);
    const out = decodeText(rowA);
    expect(out.startsWith(text)).toBe(true);
    expect(out).toMatch(/^[\x00-\x7f]{34}$/);
    const s1 = await m.generate(prompt, { steps: 30, temperature: 1, seed: 7 }).tolist();
    expect(await m.generate(prompt, { steps: 30, temperature: 1, seed: 7 }).tolist()).toEqual(s1);
    expect(await m.generate(prompt, { steps: 30, temperature: 1, seed: 8 }).tolist()).not.toEqual(s1);
    const tooLong = await m.generate(prompt, { steps: T }).tolist().catch((e: LiaisonError) => e);
    expect((tooLong as LiaisonError).message).toMatch(/past the model's context of 64.*positions: 'rotary'/);
    expect(() => encodeText('naïve')).toThrow(/"ï" \(byte 195 at byte offset 2\) is outside a vocabulary of 128/);
    m.setKVPolicy(null);
  });

  it('generates ragged prompts (left-padded) as each row alone', async () => {
    m.setKVPolicy(window({ budget: 12, evict: 3 }));
    const texts = ['The quick ', 'It ', 'A list '];
    const width = Math.max(...texts.map((t) => t.length));
    const padded = texts.map((t) => [...Array(width - t.length).fill(32), ...Array.from(encodeText(t), Number)]);
    const prompt = rt.tensor(BigInt64Array.from(padded.flat(), (v) => BigInt(v)), [3, width], 'i64');
    const out = await m.generate(prompt, { steps: 20, lengths: texts.map((t) => t.length) }).tolist() as number[][];
    for (const [b, t] of texts.entries()) {
      const alone = await m.generate(rt.tensor(encodeText(t), [1, t.length]), { steps: 20 }).tolist() as number[][];
      expect(out[b].slice(width)).toEqual(alone[0].slice(t.length));
      expect(out[b].slice(0, width)).toEqual(padded[b]); // the padding comes back as given
    }
    expect(() => m.generate(prompt, { steps: 2, lengths: [1, 0, 2] })).toThrow(/lengths must be integers >= 1/);
    m.setKVPolicy(null);
  });

  it('reports the bytes each cache held, and every layer\'s attention', async () => {
    m.setKVPolicy(window({ budget: 16, bits: 8 }), { layers: [1] });
    await m.perplexity(heldout, { prefill: 8 });
    const size = await m.kvCacheSize();
    // layer 0: the full cache, T slots of f32 keys and values (4 rows, 2 heads, head dim 16) + i64 positions;
    // layer 1: 16 slots of 8-bit codes with an f16 scale and minimum per group of 16
    const full = 4 * 2 * T * (2 * 16 * 4 + 8);
    const q8 = 4 * 2 * 16 * (2 * (16 + 2 + 2) + 8);
    // and beside layer 1's cache, min(evict 1, 64) = 1 attention row of its 16 slots for the policy's next run, f16 beside quantized entries
    const waiting = 4 * 2 * 1 * 16 * 2;
    expect(size).toEqual({ tokens: [T - 1, 16], bytes: [full, q8], totalBytes: full + q8, rowBytes: [0, waiting], totalRowBytes: waiting });
    m.setKVPolicy(null);
    const att = m.attentionWeights(heldout.slice(1, 0, 10));
    expect((await att.info()).shape).toEqual([2, 4, 2, 10, 10]);
    const rows = await att.sum(-1).tolist() as number[][][][];
    for (const v of rows.flat(3)) expect(v).toBeCloseTo(1, 5);
  });
});
