// examples/adapters-digits.ts and examples/adapters-gpt.ts run as a user runs them (tiny
// settings): pretraining cached in the out folder, the three adapter plugins at one budget,
// the tables, the JSON, the plots.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Run } from '../examples/adapters-lib.js';
import { runExample } from './helpers.js';

// folders of their own, so that a test run leaves the user's examples/out as it was
const OUT = mkdtempSync(join(tmpdir(), 'liaison-adapters-'));
afterAll(() => rmSync(OUT, { recursive: true, force: true }));

const sum = (p: Record<string, number>) => Object.values(p).reduce((a, b) => a + b, 0);
const byMethod = (runs: Run[], m: string) => runs.find((r) => r.method === m)!;

describe('examples/adapters-digits.ts', () => {
  it('pretrains the CNN on 0-4 (cached), adapts it to 5-9 with lora, adalora, adapad, adapad at curvature 1 and adapad at curvature auto at one budget, tabulates and plots', async () => {
    const dir = join(OUT, 'digits');
    const env = { LIAISON_ADAPTERS_SEEDS: '1', LIAISON_ADAPTERS_EPOCHS: '1', LIAISON_ADAPTERS_RANKS: '2', LIAISON_ADAPTERS_PRETRAIN_EPOCHS: '2' };
    const { code, out, err } = await runExample(['examples/adapters-digits.ts', '--out', dir], env);
    expect(code, `${out}\n${err}`).toBe(0);
    expect(out).toMatch(/pretrained model: 2 epochs of Adam on 0–4 in [\d.]+ s, saved to /);
    expect(out).toMatch(/none \(base\) +— +0 +0 +0% +[\d.]+%/);
    const { runs, steps } = JSON.parse(readFileSync(join(dir, 'adapters-digits.json'), 'utf8')) as { runs: Run[]; steps: number };
    expect(runs.map((r) => r.method)).toEqual(['lora', 'adalora', 'adapad', 'adapad-c1', 'adapad-auto']);
    expect(steps).toBe(23); // one epoch of 722 digits 5-9 in batches of 32
    // the head is left out: 2 components on convs.0 (9 + 32), convs.1 (288 + 64) and fc (256 + 128)
    const lora = byMethod(runs, 'lora');
    expect(lora.pattern).toEqual({ 'convs.0': 2, 'convs.1': 2, fc: 2 });
    expect(lora.params).toBe(2 * (41 + 352 + 384));
    expect(lora.allocated).toBe(lora.params);
    // the adaptive ones end with the same number of components, placed as they chose
    for (const m of ['adalora', 'adapad', 'adapad-c1', 'adapad-auto']) expect(sum(byMethod(runs, m).pattern), m).toBe(6);
    const adapad = byMethod(runs, 'adapad');
    for (const r of Object.values(adapad.pattern)) expect(r).toBeGreaterThanOrEqual(1); // components never leave
    expect(adapad.history!.at(-1)!.ranks).toEqual(adapad.pattern);
    for (const r of runs) expect(r.quality).toBeGreaterThanOrEqual(0);
    for (const f of ['adapters-digits.md', 'adapters-digits.png', 'adapters-digits-ranks.png']) expect(existsSync(join(dir, f)), f).toBe(true);

    // a second run reuses the pretrained CNN
    // (and runs the methods LIAISON_ADAPTERS_METHODS names, in METHODS' order)
    const again = await runExample(['examples/adapters-digits.ts', '--out', dir], { ...env, LIAISON_ADAPTERS_RANKS: '1', LIAISON_ADAPTERS_METHODS: 'adapad-auto,lora,adapad' });
    expect(again.code, `${again.out}\n${again.err}`).toBe(0);
    expect(again.out).toMatch(/pretrained model: .*adapters-digits-base\.safetensors reused/);
    const second = (JSON.parse(readFileSync(join(dir, 'adapters-digits.json'), 'utf8')) as { runs: Run[] }).runs;
    expect(second.map((r) => r.method)).toEqual(['lora', 'adapad', 'adapad-auto']);
    // one component per module and nothing to grow: adapad's deflation term is zero, so it trains what lora trains
    expect(byMethod(second, 'adapad').quality).toBeCloseTo(byMethod(second, 'lora').quality, 6);
    expect(byMethod(second, 'adapad-auto').quality).toBeCloseTo(byMethod(second, 'lora').quality, 6);
    expect(byMethod(second, 'adapad').params).toBe(41 + 352 + 384);
  }, 240_000);
});

describe('examples/adapters-gpt.ts', () => {
  it('pretrains the byte GPT on pydoc (cached), adapts it to Python sources with each adapter plugin, tabulates and plots', async () => {
    const dir = join(OUT, 'gpt');
    const env = { LIAISON_ADAPTERS_SEEDS: '1', LIAISON_ADAPTERS_GPT_STEPS: '8', LIAISON_ADAPTERS_PRETRAIN_STEPS: '8', LIAISON_ADAPTERS_RANKS: '1', LIAISON_ADAPTERS_GPT_EVAL_WINDOWS: '2' };
    const { code, out, err } = await runExample(['examples/adapters-gpt.ts', '--out', dir], env);
    expect(code, `${out}\n${err}`).toBe(0);
    expect(out).toMatch(/pretrained model: 8 steps of Adam on pydoc in [\d.]+ s, saved to /);
    const { runs, base, full, modules } = JSON.parse(readFileSync(join(dir, 'adapters-gpt.json'), 'utf8')) as { runs: Run[]; base: number; full: number[]; modules: number };
    expect(modules).toBe(8); // qkv, proj, fc, proj of two blocks; the head left out
    expect(runs.map((r) => r.method)).toEqual(['lora', 'adalora', 'adapad', 'adapad-c1', 'adapad-auto']);
    // one component on each: qkv 64 + 192, proj 64 + 64, fc 64 + 256, proj 256 + 64, twice
    expect(byMethod(runs, 'lora').params).toBe(2 * (256 + 128 + 320 + 320));
    for (const m of ['adapad', 'adapad-auto']) expect(byMethod(runs, m).quality, m).toBeCloseTo(byMethod(runs, 'lora').quality, 6);
    expect(sum(byMethod(runs, 'adalora').pattern)).toBe(8);
    // eight steps are too few for the full fine-tune to beat the base reliably (it did, and did not,
    // across runs): only that both were measured
    expect(Number.isFinite(full[0]) && Number.isFinite(base)).toBe(true);
    for (const r of runs) expect(Number.isFinite(r.quality), r.method).toBe(true);
    for (const f of ['adapters-gpt.md', 'adapters-gpt.png']) expect(existsSync(join(dir, f)), f).toBe(true);
  }, 240_000);
});
