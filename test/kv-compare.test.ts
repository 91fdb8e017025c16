// examples/kv-compare.ts runs as a user runs it, on a tiny code GPT (examples/code-gpt.ts's
// knobs: 40 steps, context 128) and a few windows: every policy at every budget, the
// quantized rows, the persistence table and the figures. The numbers of so small a model
// say nothing about the policies; what is checked is what holds for any model: budgets
// kept, bytes shrinking with the budget and the bits, the reference against itself.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { bootstrap, repeatSpans, spreadWindows } from '../examples/kv-lib.js';
import { runExample } from './helpers.js';

const TINY_GPT = {
  LIAISON_CODE_GPT_STEPS: '40', LIAISON_CODE_GPT_DIM: '64', LIAISON_CODE_GPT_LAYERS: '2', LIAISON_CODE_GPT_CONTEXT: '128',
  LIAISON_CODE_GPT_VOCAB: '512', LIAISON_CODE_GPT_BYTES: '400000', LIAISON_CODE_GPT_EVAL_WINDOWS: '4',
  LIAISON_CODE_GPT_SHORT_STEPS: '8', LIAISON_CODE_GPT_SHORT_WINDOW: '32', LIAISON_CODE_GPT_SHORT_BATCH: '4',
};
const dir = mkdtempSync(join(tmpdir(), 'liaison-kv-compare-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** KiB or MiB as the example prints them, in bytes. */
const bytes = (s: string) => Number(s.split(' ')[0]) * (s.endsWith('MiB') ? 1024 * 1024 : 1024);

describe('examples/kv-compare.ts', () => {
  it('compares every policy at four budgets, quantized storage and the persistence of importance', async () => {
    const { code, out, err } = await runExample(['examples/kv-compare.ts', '--out', dir, '--model', join(dir, 'code-gpt')], {
      ...TINY_GPT, LIAISON_KV_WINDOWS: '4', LIAISON_KV_SPANS: '4', LIAISON_KV_BATCH: '4', LIAISON_KV_PERSIST: '1',
    }, 300_000);
    expect(code, `${out}\n${err}`).toBe(0);
    // the markdown rows: policy | budget | kept | bytes | perplexity | rel. [lo, hi] | span loss | Δ span loss [lo, hi] | tokens/s
    const rows = new Map<string, string[]>();
    for (const line of out.split('\n')) {
      const cells = line.split('|').slice(1, -1).map((c) => c.trim());
      if (cells.length === 9 && /^\d|—/.test(cells[1]) && !rows.has(`${cells[0]} ${cells[1]}`)) rows.set(`${cells[0]} ${cells[1]}`, cells);
    }
    const full = rows.get('full —')!;
    expect(full, out).toBeDefined();
    expect(full[2]).toBe('127'); // a 128-token window: every token but the last fed
    expect(full[5]).toBe('1.000 [1.000, 1.000]');
    expect(full[7]).toBe('0.000 [0.000, 0.000]');
    for (const policy of ['sliding-window', 'streaming-llm', 'h2o', 'scissorhands']) {
      for (const budget of [64, 42, 25, 12]) {
        const r = rows.get(`${policy} ${budget}`);
        expect(r, `${policy} ${budget} in:\n${out}`).toBeDefined();
        const kept = Number(r![2]);
        expect(kept).toBeLessThanOrEqual(budget);
        expect(kept).toBeGreaterThan(budget / 2);
        // the slots held scale with the budget (plus the policy's state per slot)
        const share = bytes(r![3]) / bytes(full[3]);
        expect(share).toBeGreaterThan((0.8 * budget) / 128);
        expect(share).toBeLessThan((1.5 * budget) / 128);
        const [rel, lo, hi] = r![5].match(/[\d.]+/g)!.map(Number);
        expect(lo).toBeLessThanOrEqual(rel);
        expect(hi).toBeGreaterThanOrEqual(rel);
      }
    }
    expect(out).toMatch(/Copy check \(full cache\): the span's first occurrence [\d.]+ \[[\d.]+, [\d.]+\] nats\/token, its second [\d.]+/);

    // quantized rows: policy | budget | bits | bytes | vs full | rel. | Δ span | tokens/s
    const quant = out.slice(out.indexOf('### Quantized storage')).split('\n').map((l) => l.split('|').slice(1, -1).map((c) => c.trim())).filter((c) => c.length === 8 && /^\d+$/.test(c[2]));
    const q = (policy: string, bits: number) => bytes(quant.find((c) => c[0] === policy && c[2] === String(bits))![3]);
    for (const policy of ['full', 'scissorhands']) {
      expect(q(policy, 8)).toBeLessThan(q(policy, 32) / 2.5); // 1 byte a number and an f16 scale and minimum per group of 32, against 4
      expect(q(policy, 4)).toBeLessThan(q(policy, 8) * 0.75);
    }

    // persistence: | lag | layer 0 | layer 1 | mean | base rate, layer 0 | base rate, layer 1 |, fractions
    const pers = out.slice(out.indexOf('### Persistence')).split('\n').filter((l) => /^\| \d+ \|/.test(l)).map((l) => l.split('|').slice(1, -1).map((c) => Number(c.trim())));
    expect(pers.map((r) => r[0])).toEqual([1, 2, 4, 8, 16, 32, 64]);
    for (const r of pers) for (const x of r.slice(1)) expect(x).toBeGreaterThanOrEqual(0), expect(x).toBeLessThanOrEqual(1);

    for (const f of ['kv-compare.png', 'kv-bytes.png', 'kv-persistence.png', 'kv-compare.json']) {
      expect(existsSync(join(dir, f)), f).toBe(true);
      expect(statSync(join(dir, f)).size).toBeGreaterThan(1000);
    }
    const json = JSON.parse(readFileSync(join(dir, 'kv-compare.json'), 'utf8')) as { settings: unknown[] };
    expect(json.settings).toHaveLength(1 + 16 + 4);
  }, 300_000);
});

describe('examples/kv-lib.ts', () => {
  it('a percentile bootstrap interval holds the mean and narrows with more data', () => {
    const noisy = (n: number) => Array.from({ length: n }, (_, i) => 0.1 + Math.sin(i * 12.9898) * 0.05);
    const small = bootstrap(noisy(10));
    const large = bootstrap(noisy(400));
    expect(small.lo).toBeLessThan(small.mean);
    expect(small.hi).toBeGreaterThan(small.mean);
    expect(large.hi - large.lo).toBeLessThan((small.hi - small.lo) / 3);
    expect(bootstrap([2, 2, 2])).toEqual({ mean: 2, lo: 2, hi: 2 });
    expect(bootstrap(noisy(30), { seed: 5 })).toEqual(bootstrap(noisy(30), { seed: 5 })); // reproducible
  });

  it('windows spread over the stream, and a span written again at its distance', () => {
    const stream = Array.from({ length: 1000 }, (_, i) => i);
    expect(spreadWindows(stream, 100, 4).map((w) => w[0])).toEqual([0, 300, 600, 900]);
    const rows = repeatSpans(stream, { length: 60, span: 10, first: 5, second: 40 }, 3);
    for (const r of rows) {
      expect(r).toHaveLength(60);
      expect(r.slice(40, 50)).toEqual(r.slice(5, 15));
      expect(r[39]).toBe(r[0] + 39); // untouched around it
      expect(r[50]).toBe(r[0] + 50);
    }
    expect(() => repeatSpans(stream, { length: 60, span: 10, first: 5, second: 10 }, 3)).toThrow(/overlap/);
  });
});
