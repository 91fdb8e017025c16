// The router plugins' arithmetic against references written out here (topk's capacity and
// its priority order, expert choice's top tokens per expert, Soft MoE's two softmaxes), their
// configs, and each one through the family's suite in the configurations the registry's
// defaults leave out.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { expertChoice, softMoe, topk } from '../plugins/index.js';
import { formatReport, runConformance } from '../sdk/conformance/index.js';
import type { Router, RouterDims } from '../sdk/families/routers/types.js';
import { define } from '../sdk/program.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

type Mat = number[][];

/** route() traced on its own (x (N, D) and the params as given) and run once; every field read back. */
async function route(r: Router, dims: RouterDims, x: Mat, params: Record<string, Mat | number[]>): Promise<Record<string, number[] & { shape?: number[] }>> {
  const names = Object.keys(r.params(dims));
  const inputs: Record<string, object> = { x: { shape: ['N', dims.dim] } };
  for (const n of names) inputs[n] = {};
  let keys: string[] = [];
  const prog = define(rt, { name: 'route', inputs }, (ins) => {
    const res = r.route(ins.x, Object.fromEntries(names.map((n) => [n, ins[n]])), dims) as unknown as Record<string, Tensor>;
    keys = Object.keys(res).sort();
    return keys.map((k) => res[k]);
  });
  const tensor = (m: Mat | number[]) => (Array.isArray(m[0]) ? rt.tensor((m as Mat).flat(), [m.length, (m as Mat)[0].length]) : rt.tensor(m as number[]));
  const outs = prog.run([tensor(x), ...names.map((n) => tensor(params[n]))]) as Tensor[];
  const got: Record<string, number[] & { shape?: number[] }> = {};
  for (const [i, k] of keys.entries()) {
    const d = await outs[i].data();
    got[k] = Object.assign(Array.from(d.data as ArrayLike<number | bigint>, Number), { shape: [...d.shape] });
  }
  prog.free();
  return got;
}

const softmax = (row: number[]) => { const m = Math.max(...row); const e = row.map((v) => Math.exp(v - m)); const s = e.reduce((a, b) => a + b, 0); return e.map((v) => v / s); };
const matmul = (a: Mat, b: Mat): Mat => a.map((r) => b[0].map((_, j) => r.reduce((s, v, i) => s + v * b[i][j], 0)));
const lse = (row: number[]) => { const m = Math.max(...row); return m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)); };
const rows = (flat: number[], cols: number): Mat => Array.from({ length: flat.length / cols }, (_, i) => flat.slice(i * cols, (i + 1) * cols));
const close = (got: number[], want: number[], tol = 1e-5) => {
  expect(got.length).toBe(want.length);
  got.forEach((g, i) => expect(Math.abs(g - want[i]), `[${i}] ${g} vs ${want[i]}`).toBeLessThan(tol));
};
const randMat = (n: number, m: number, seed: number): Mat => Array.from({ length: n }, (_, i) => Array.from({ length: m }, (_, j) => Math.sin(seed * 7.1 + i * 3.7 + j * 1.3) * 1.5));

describe('topk: capacity, z-loss, probs', () => {
  // gate = 4·I: a token's logits are 4× its row, so x picks each token's preferences
  const dims = { dim: 3, experts: 3 };
  const gate = [[4, 0, 0], [0, 4, 0], [0, 0, 4]];

  it('without a capacity: as before (no drops), plus zloss = mean logsumexp² and probs = softmax', async () => {
    const x = randMat(5, 3, 1);
    const got = await route(topk({ k: 2 }), dims, x, { gate });
    const logits = matmul(x, gate);
    close(got.probs, logits.flatMap(softmax));
    close([got.zloss[0]], [logits.reduce((s, r) => s + lse(r) ** 2, 0) / logits.length], 1e-3);
    rows(got.weights, 3).forEach((r) => expect(r.filter((v) => v > 0)).toHaveLength(2));
  });

  it('k = 1: an expert keeps the first ⌈c·N/E⌉ tokens that chose it, by position; the rest get rows of 0', async () => {
    // tokens 0, 1, 2 prefer expert 0, tokens 3, 4, 5 experts 1, 2, 1; c = 0.5: ⌈0.5·6/3⌉ = 1 token per expert
    const x = [[1, 0, 0], [1, 0.1, 0], [1, 0, 0.2], [0, 1, 0], [0, 0, 1], [0.1, 1, 0]];
    const w = rows((await route(topk({ k: 1, capacity: 0.5 }), dims, x, { gate })).weights, 3);
    const kept = w.map((r) => r.findIndex((v) => v > 0));
    expect(kept).toEqual([0, -1, -1, 1, 2, -1]);
    // the kept weight is the raw probability, as without a capacity
    close([w[0][0]], [softmax(matmul([x[0]], gate)[0])[0]]);
  });

  it("k = 2: every token's first choice before any second choice (GShard), a dropped second choice leaving the first's weight as normalised", async () => {
    // token 0: e0 then e1; token 1: e1 then e0; token 2: e2 then e0. c = 0.5: ⌈0.5·3·2/3⌉ = 1 per expert.
    // Token 0 comes first by position, but token 1's first choice e1 outranks token 0's second choice e1.
    const x = [[1, 0.5, 0], [0.5, 1, 0], [0.4, 0, 1]];
    const got = await route(topk({ k: 2, capacity: 0.5 }), dims, x, { gate });
    const w = rows(got.weights, 3);
    const p = matmul(x, gate).map(softmax);
    close(w[0], [p[0][0] / (p[0][0] + p[0][1]), 0, 0]);
    close(w[1], [0, p[1][1] / (p[1][1] + p[1][0]), 0]);
    close(w[2], [0, 0, p[2][2] / (p[2][2] + p[2][0])]); // its second choice e0 is full
    const loose = rows((await route(topk({ k: 2, capacity: 4 }), dims, x, { gate })).weights, 3);
    loose.forEach((r) => expect(r.filter((v) => v > 0)).toHaveLength(2));
  });

  it('traits follow the capacity; a capacity ≤ 0 is E_ARG naming it', () => {
    expect(topk({ k: 2, capacity: 1.25 }).traits).toEqual({ routing: 'sparse', k: 2, capacity: 1.25, dropsTokens: true });
    expect(topk({ k: 2 }).traits).toEqual({ routing: 'sparse', k: 2, dropsTokens: false });
    const e = (() => { try { topk({ capacity: 0 }); } catch (err) { return err as LiaisonError; } })();
    expect(e).toBeInstanceOf(LiaisonError);
    expect(e!.code).toBe('E_ARG');
    expect(e!.message).toMatch(/capacity/);
  });
});

describe('expert-choice', () => {
  const dims = { dim: 4, experts: 3 };
  const gate = randMat(4, 3, 2);

  it("each expert takes the C = min(N, ⌈c·N/E⌉) tokens of highest probability, gates those probabilities, at any N", async () => {
    for (const [n, c] of [[7, 1], [7, 2], [5, 10], [12, 0.5]] as const) {
      const x = randMat(n, 4, n);
      const got = await route(expertChoice({ capacity: c }), dims, x, { gate });
      const p = matmul(x, gate).map(softmax);
      const C = Math.min(n, Math.ceil((c * n) / 3));
      expect(got.indices.shape).toEqual([3, C]);
      for (let e = 0; e < 3; e++) {
        const order = p.map((r, i) => [r[e], i]).sort((a, b) => b[0] - a[0]).slice(0, C);
        expect(got.indices.slice(e * C, (e + 1) * C)).toEqual(order.map((o) => o[1]));
        close(got.gates.slice(e * C, (e + 1) * C), order.map((o) => o[0]));
      }
      close(got.probs, p.flat());
    }
  });

  it("declares form 'indices' with its capacity; bad config is E_ARG naming the field", () => {
    expect(expertChoice({ capacity: 1.5 }).traits).toEqual({ form: 'indices', routing: 'sparse', capacity: 1.5, dropsTokens: true });
    for (const bad of [{ capacity: 0 }, { std: -1 }, { slots: 2 }]) {
      const e = (() => { try { expertChoice(bad as never); } catch (err) { return err as LiaisonError; } })();
      expect(e?.code, JSON.stringify(bad)).toBe('E_ARG');
      expect(e!.message).toMatch(new RegExp(Object.keys(bad)[0]));
    }
  });
});

describe('soft-moe', () => {
  const dims = { dim: 3, experts: 2 };
  const phi = randMat(3, 4, 3); // (D, E·S), S = 2

  it('dispatch is the softmax over tokens, combine over the E·S slots, of x·Φ (normalised and scaled, or raw)', async () => {
    const x = randMat(5, 3, 4);
    const raw = await route(softMoe({ slots: 2, normalize: false }), dims, x, { phi });
    const z = matmul(x, phi); // (N, E·S)
    const cols = z[0].map((_, j) => softmax(z.map((r) => r[j])));
    expect(raw.dispatch.shape).toEqual([5, 2, 2]);
    close(raw.dispatch, z.flatMap((_, i) => cols.map((c) => c[i])));
    close(raw.combine, z.flatMap(softmax));
    close(raw.probs, z.flatMap((r) => { const s = softmax(r); return [s[0] + s[1], s[2] + s[3]]; }));
    close([raw.zloss[0]], [z.reduce((s, r) => s + lse(r) ** 2, 0) / z.length], 1e-4);
    // normalised: unit tokens and unit columns of Φ, times the scale
    const unit = (v: number[]) => { const n = Math.hypot(...v); return v.map((a) => a / n); };
    const xn = x.map(unit);
    const phiCols = phi[0].map((_, j) => unit(phi.map((r) => r[j])));
    const zn = xn.map((r) => phiCols.map((c) => 3 * r.reduce((s, v, i) => s + v * c[i], 0)));
    const norm = await route(softMoe({ slots: 2 }), dims, x, { phi, scale: [3] });
    close(norm.combine, zn.flatMap(softmax), 1e-4);
  });

  it("declares form 'slots' with S, never dropping; parameters phi (D, E·S) and scale; bad config is E_ARG naming the field", () => {
    expect(softMoe({ slots: 3 }).traits).toEqual({ form: 'slots', routing: 'dense', slots: 3, dropsTokens: false });
    expect(softMoe({ slots: 3 }).params({ dim: 8, experts: 4 })).toEqual({ phi: { shape: [8, 12], init: 'normal', std: 0.02 }, scale: { shape: [1], init: 'ones' } });
    expect(Object.keys(softMoe({ normalize: false }).params({ dim: 8, experts: 4 }))).toEqual(['phi']);
    const e = (() => { try { softMoe({ slots: 0 }); } catch (err) { return err as LiaisonError; } })();
    expect(e?.code).toBe('E_ARG');
    expect(e!.message).toMatch(/slots/);
  });
});

describe('the family suite, in configurations the registered defaults leave out', () => {
  for (const [name, r] of [['topk k=2 with capacity 1.25', topk({ k: 2, capacity: 1.25, zWeight: 0.01 })], ['soft-moe, 3 slots, not normalised', softMoe({ slots: 3, normalize: false })], ['expert-choice, capacity 0.5', expertChoice({ capacity: 0.5 })]] as const) {
    it(`${name} passes`, async () => {
      const report = await runConformance(r as Router, { rt });
      expect(report.ok, formatReport(report)).toBe(true);
    }, 60_000);
  }
});
