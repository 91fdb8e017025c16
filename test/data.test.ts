// Datasets and text corpora held in the runtime: splits, batches and LM windows.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { Dataset, TextCorpus } from '../sdk/data.js';
import { trace } from '../sdk/program.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const rows = async (t: { tolist(): Promise<unknown> }) => (await t.tolist()) as number[][];
/** Objects the runtime holds for this session's process (handles not yet freed). */
const objects = async () => (await rt.stats()).objects;

describe('Dataset', () => {
  it('loads a bundled dataset with its shapes', async () => {
    const d = await Dataset.builtin(rt, 'digits');
    expect(d.xShape).toEqual([1797, 64]);
    expect(d.yShape).toEqual([1797]);
    expect(d.size).toBe(1797);
    expect(d.classification).toBe(true);
    const reg = await Dataset.builtin(rt, 'diabetes');
    expect(reg.classification).toBe(false);
    expect(reg.yDtype).toBe('f32');
    await expect(Dataset.builtin(rt, 'mnist' as never)).rejects.toThrow(/no dataset 'mnist'; there are digits/);
  });

  it('splits with a seeded permutation: disjoint, complete, reproducible', async () => {
    // row i holds i in both x and y, so each side's rows name themselves
    const n = 50;
    const d = Dataset.fromArrays(rt, Float32Array.from({ length: n }, (_, i) => i), [n, 1], Int32Array.from({ length: n }, (_, i) => i));
    expect(d.yDtype).toBe('i64');
    const [tr, te] = d.split(0.2, 7);
    expect([tr.size, te.size]).toEqual([40, 10]);
    const a = (await tr.y.tolist()) as number[];
    const b = (await te.y.tolist()) as number[];
    expect([...a, ...b].sort((p, q) => p - q)).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(((await tr.x.tolist()) as number[][]).map((r) => r[0])).toEqual(a);
    const [, again] = d.split(0.2, 7);
    expect(await again.y.tolist()).toEqual(b);
    const [, other] = d.split(0.2, 8);
    expect(await other.y.tolist()).not.toEqual(b);
    expect(() => d.split(1.5, 0)).toThrow(/'testFraction' must be a number in \(0, 1\)/);
  });

  it('makes an epoch of batches in the runtime: sizes, order, shuffle and dropLast', async () => {
    const n = 10;
    const d = Dataset.fromArrays(rt, Float32Array.from({ length: n * 2 }, (_, i) => i), [n, 2], Float32Array.from({ length: n }, (_, i) => i));
    const plain = d.batches(4, { shuffle: false });
    expect(plain.map((b) => b.size)).toEqual([4, 4, 2]);
    expect(await rows(plain[2].x)).toEqual([[16, 17], [18, 19]]);
    expect(await plain[1].y.tolist()).toEqual([4, 5, 6, 7]);
    expect(d.batches(4, { shuffle: false, dropLast: true }).map((b) => b.size)).toEqual([4, 4]);
    const shuffled = d.batches(3, { seed: 1 });
    const ys = (await Promise.all(shuffled.map((b) => b.y.tolist()))).flat() as number[];
    expect([...ys].sort((p, q) => p - q)).toEqual(Array.from({ length: n }, (_, i) => i));
    expect(ys).not.toEqual(Array.from({ length: n }, (_, i) => i));
    const xs = (await Promise.all(shuffled.map((b) => rows(b.x)))).flat();
    expect(xs.map((r) => r[0] / 2)).toEqual(ys); // rows stay aligned with their targets
    const again = (await Promise.all(d.batches(3, { seed: 1 }).map((b) => b.y.tolist()))).flat();
    expect(again).toEqual(ys);
    expect(() => d.batches(0)).toThrow(/batchSize must be an integer >= 1/);
  });

  it('sends an epoch of batches as queued ops: no upload, one round trip', async () => {
    const d = await Dataset.builtin(rt, 'iris');
    await rt.flush();
    const before = (await rt.stats()).ops_run;
    const bs = d.batches(32, { seed: 3 });
    const sums = await Promise.all(bs.map((b) => b.x.sum().item()));
    const after = (await rt.stats()).ops_run;
    expect(sums).toHaveLength(5);
    // randperm, 2 index_select, 2 split, 5 sums
    expect(after - before).toBe(10);
  });
});

describe('lifetimes', () => {
  it('datasets, corpora and samplers outlive an enclosing rt.scope()', async () => {
    const d = await rt.scope(() => Dataset.builtin(rt, 'iris'));
    const [tr, te] = await rt.scope(async () => d.split(0.2, 0));
    expect(await tr.x.sum().item()).toBeCloseTo(await d.x.sum().item() - (await te.x.sum().item()), 2);
    expect(tr.batches(64, { seed: 1 })).toHaveLength(2);
    const c = await rt.scope(() => TextCorpus.load(rt, 'pydoc'));
    const s = await rt.scope(async () => c.split(0.5)[0].sampler(2, 4));
    const prog = await trace(rt, { name: 'scoped-draw' }, () => s.draw().x);
    expect((await (prog.run() as Tensor).info()).shape).toEqual([2, 4]);
  });

  it('holds only what it keeps: no stray upload after a dtype conversion, no stray arange or views', async () => {
    const base = await objects();
    // f64 features and i32 labels are converted (to f32 and i64) after the upload
    const d = Dataset.fromArrays(rt, Float64Array.from([1, 2, 3, 4, 5, 6]), [3, 2], Int32Array.from([0, 1, 0]));
    expect(await objects() - base).toBeLessThanOrEqual(2); // x and y
    expect(await d.y.tolist()).toEqual([0, 1, 0]);
    const c = TextCorpus.fromBytes(rt, new TextEncoder().encode('abcdefghij'));
    expect(await objects() - base).toBeLessThanOrEqual(3); // + the tokens
    c.sampler(2, 3);
    expect(await objects() - base).toBeLessThanOrEqual(4); // + the sampler's offsets
    const w = c.windows(3);
    expect(await objects() - base).toBeLessThanOrEqual(6); // + x and y
    for (const t of [w.x, w.y]) t.free();
    d.free();
    c.free();
    expect(await objects() - base).toBeLessThanOrEqual(1); // the sampler's offsets
  });
});

describe('TextCorpus', () => {
  it('loads pydoc as byte tokens and splits it contiguously', async () => {
    const c = await TextCorpus.load(rt, 'pydoc');
    expect(c.size).toBeGreaterThan(100_000);
    const [tr, ho] = c.split(0.1);
    expect(tr.size + ho.size).toBe(c.size);
    const tail = (await tr.tokens.narrow(0, tr.size - 3, 3).tolist()) as number[];
    const whole = (await c.tokens.narrow(0, tr.size - 3, 6).tolist()) as number[];
    const head = (await ho.tokens.narrow(0, 0, 3).tolist()) as number[];
    expect([...tail, ...head]).toEqual(whole);
    expect(Math.max(...whole)).toBeLessThan(128);
  });

  it('draws shifted windows inside a traced program, new ones every run', async () => {
    const text = 'abcdefghijklmnopqrstuvwxyz';
    const c = TextCorpus.fromBytes(rt, new TextEncoder().encode(text));
    const s = c.sampler(4, 5);
    const prog = await trace(rt, { name: 'draw' }, () => { const { x, y } = s.draw(); return [x, y]; });
    const seen = new Set<string>();
    for (let run = 0; run < 3; run++) {
      const [x, y] = prog.run();
      const xs = (await x.tolist()) as number[][];
      const ys = (await y.tolist()) as number[][];
      expect(xs).toHaveLength(4);
      xs.forEach((row, i) => {
        expect(row).toHaveLength(5);
        const str = String.fromCharCode(...row);
        expect(text).toContain(str);
        expect(String.fromCharCode(...ys[i])).toBe(text.slice(text.indexOf(str) + 1, text.indexOf(str) + 6));
        seen.add(str);
      });
    }
    expect(seen.size).toBeGreaterThan(3);
    expect(() => c.sampler(2, 26)).toThrow(LiaisonError);
  });

  it('repeat: a span of the first half written again in the second half, the rest the corpus\'s own windows', async () => {
    // 200 distinct tokens, so a repeated run shows as a jump back in the sequence
    const c = await TextCorpus.fromTokens(rt, rt.arange(0, 200, 1, 'i64'), 200);
    const [context, span] = [40, 6];
    const s = c.sampler(8, context, { repeat: { fraction: 1, span } });
    const prog = await trace(rt, { name: 'draw-repeat' }, () => { const { x, y } = s.draw(); return [x, y]; });
    for (let run = 0; run < 3; run++) {
      const [x, y] = prog.run();
      const xs = (await x.tolist()) as number[][];
      const ys = (await y.tolist()) as number[][];
      xs.forEach((row, i) => {
        const w = [...row, ys[i][context - 1]]; // the window of T + 1 tokens
        expect(ys[i]).toEqual(w.slice(1)); // y is still x shifted by one
        // w is s..s+T except a run of `span` tokens copied from earlier in the window
        const off = w.map((v, j) => v - w[0] - j);
        const moved = off.map((o, j) => (o !== 0 ? j : -1)).filter((j) => j >= 0);
        expect(moved).toHaveLength(span);
        const p2 = moved[0];
        expect(moved).toEqual(Array.from({ length: span }, (_, k) => p2 + k));
        expect(p2).toBeGreaterThanOrEqual((context + 1) >> 1);
        const p1 = w.indexOf(w[p2]);
        expect(p1).toBeLessThan((context + 1) >> 1);
        expect(w.slice(p2, p2 + span)).toEqual(w.slice(p1, p1 + span));
      });
    }
    expect(() => c.sampler(2, context, { repeat: { fraction: 0, span } })).toThrow(/repeat.fraction/);
    expect(() => c.sampler(2, context, { repeat: { fraction: 0.5, span: 10 } })).toThrow(/repeat.span/);
  });

  it('covers a held-out text with consecutive windows', async () => {
    const c = TextCorpus.fromBytes(rt, new TextEncoder().encode('0123456789'));
    const w = c.windows(3);
    expect(w.count).toBe(3);
    expect(await w.x.tolist()).toEqual([[48, 49, 50], [51, 52, 53], [54, 55, 56]]);
    expect(await w.y.tolist()).toEqual([[49, 50, 51], [52, 53, 54], [55, 56, 57]]);
  });
});
