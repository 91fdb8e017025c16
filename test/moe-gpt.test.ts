// examples/moe-gpt.ts runs as a user runs it (tiny settings): the dense GPT and the five MoE
// GPTs at equal active feed-forward weights, the router metrics from the Trainer's epoch
// events, the table, the JSON and the plot.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runExample } from './helpers.js';

// a folder of its own, so that a test run leaves the user's examples/out as it was
const OUT = mkdtempSync(join(tmpdir(), 'liaison-moe-gpt-'));
afterAll(() => rmSync(OUT, { recursive: true, force: true }));

interface Result { name: string; params: number; active: number; perplexity: number; tokensPerSecond: number; imbalance?: number; dropped?: number; entropy?: number; curve: unknown[] }

describe('examples/moe-gpt.ts', () => {
  it('trains the dense GPT and one MoE GPT per router at equal active weights, tabulates load, drops and entropy, and plots', async () => {
    const env = { LIAISON_MOE_GPT_SEEDS: '1', LIAISON_MOE_GPT_BATCH: '2', LIAISON_MOE_GPT_STEPS: '2', LIAISON_MOE_GPT_EPOCHS: '1', LIAISON_MOE_GPT_EVAL_WINDOWS: '2' };
    const { code, out, err } = await runExample(['examples/moe-gpt.ts', '--out', OUT], env);
    expect(code, `${out}\n${err}`).toBe(0);
    const { results } = JSON.parse(readFileSync(join(OUT, 'moe-gpt.json'), 'utf8')) as { results: Result[] };
    // N = 2 windows × 64 tokens per MoE layer: Soft MoE gets N / E = 32 slots per expert
    expect(results.map((r) => r.name)).toEqual(['dense GPT (reference)', 'soft', 'topk k=1', 'topk k=2, capacity 1.25', 'expert-choice c=2', 'soft-moe S=32']);
    const by = (n: string) => results.find((r) => r.name.startsWith(n))!;
    // 2 blocks × 2·64·256 feed-forward weights per token, whichever the router
    for (const r of results) expect(r.active, r.name).toBe(65_536);
    // experts: 4 × (64·h + h + h·64 + 64) per block in place of the dense 64·256 + 256 + 256·64 + 64, plus the router
    const dense = by('dense').params;
    const experts = (h: number) => 2 * (4 * (129 * h + 64) - (129 * 256 + 64));
    expect(by('soft').params).toBe(dense + experts(64) + 2 * 64 * 4);
    expect(by('topk k=1').params).toBe(dense + experts(256) + 2 * 64 * 4);
    expect(by('topk k=2').params).toBe(dense + experts(128) + 2 * 64 * 4);
    expect(by('expert-choice').params).toBe(dense + experts(128) + 2 * 64 * 4);
    expect(by('soft-moe').params).toBe(dense + experts(256) + 2 * (64 * 4 * 32 + 1));
    for (const r of results) {
      expect(r.perplexity, r.name).toBeGreaterThan(1);
      expect(r.perplexity, r.name).toBeLessThan(200); // two steps from uniform over 128 bytes
      expect(r.tokensPerSecond, r.name).toBeGreaterThan(0);
    }
    // the router metrics: none for the dense GPT; load max·E between 1 (balanced) and E = 4
    expect(by('dense').imbalance).toBeUndefined();
    for (const r of results.slice(1)) {
      expect(r.imbalance, r.name).toBeGreaterThanOrEqual(1 - 1e-6);
      expect(r.imbalance, r.name).toBeLessThanOrEqual(4 + 1e-6);
      expect(r.entropy, r.name).toBeGreaterThanOrEqual(0);
      expect(r.entropy, r.name).toBeLessThanOrEqual(Math.log(4) + 1e-6);
    }
    // every expert of expert choice takes exactly ⌈2N/4⌉ tokens: balanced by construction
    expect(by('expert-choice').imbalance).toBeCloseTo(1, 5);
    // soft routing and Soft MoE never drop a token; top-1 has no capacity
    for (const n of ['soft', 'topk k=1', 'soft-moe']) expect(by(n).dropped, n).toBe(0);
    expect(out).toMatch(/model +experts per token +parameters/);
    for (const f of ['moe-gpt.md', 'moe-gpt.png']) expect(existsSync(join(OUT, f)), f).toBe(true);
    expect(readFileSync(join(OUT, 'moe-gpt.md'), 'utf8')).toMatch(/\| soft-moe S=32 \| N\/E slots per expert \| [\d,]+ \| 65,536 \|/);
  }, 300_000);
});
