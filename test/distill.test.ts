// examples/distill.ts runs as a user runs it, in its fast variant: a teacher trained by the
// Trainer, a pruned student trained on its soft targets by an own loop on the public loop
// parts (sdk/loop.ts), beside one trained on the labels by fit(); tables, a PNG, and its
// checkpoint resumed into a fresh loop scoring the same.
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runExample } from './helpers.js';

const out = mkdtempSync(join(tmpdir(), 'liaison-distill-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

describe('examples/distill.ts', () => {
  it('distils a CNN teacher into a pruned MLP student with an own loop', async () => {
    const env = { LIAISON_DISTILL_SEEDS: '1', LIAISON_DISTILL_EPOCHS: '2', LIAISON_DISTILL_TEACHER_EPOCHS: '2' };
    const { code, out: text, err } = await runExample(['examples/distill.ts', '--out', out], env);
    expect(code, `${text}\n${err}`).toBe(0);
    const teacher = Number(/teacher: CNN, [\d,]+ parameters, 2 epochs: held-out accuracy ([\d.]+)%/.exec(text)?.[1]);
    expect(teacher, text).toBeGreaterThan(50); // two epochs already learn the digits well past chance (10%)
    const seed = /seed 0: labels only ([\d.]+)%, distilled ([\d.]+)%; student weights ([\d.]+)% zero/.exec(text);
    expect(seed, text).not.toBeNull();
    expect(Number(seed![2])).toBeGreaterThan(20); // the distilled student learned
    // two of the pruner's three rounds ran at the own loop's two epoch ends: 1 − 0.1^(2/3) of the weights zero
    expect(Number(seed![3])).toBeCloseTo(100 * (1 - 0.1 ** (2 / 3)), 0);
    expect(text).toMatch(/\| student MLP 64-32-10, distilled \(own loop, T 4, α 0\.7\) \| 2,410 \(279\) \| [\d.]+% \|/);
    const resumed = /resumed into a fresh loop: held-out accuracy ([\d.]+)% \(saved ([\d.]+)%\), loss ([\d.]+) \(saved ([\d.]+)\)/.exec(text);
    expect(resumed, text).not.toBeNull();
    expect(resumed![3]).toBe(resumed![4]);
    for (const f of ['distill.png', 'distill.md', 'distill.json', 'distill-student.safetensors']) expect(existsSync(join(out, f)), f).toBe(true);
    expect(statSync(join(out, 'distill.png')).size).toBeGreaterThan(10_000);
  }, 300_000);
});
