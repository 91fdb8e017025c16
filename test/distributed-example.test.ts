// examples/distributed.ts runs as a user runs it on a local group of 2 ranks (its fast
// variant): the data-parallel losses equal one runtime's, Parallel Deflation on the ranks
// gives one runtime's errors, the bytes are reported, the plot is written.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runExample } from './helpers.js';

const out = mkdtempSync(join(tmpdir(), 'liaison-dist-example-'));
afterAll(() => { rmSync(out, { recursive: true, force: true }); });

describe('examples/distributed.ts', () => {
  it('trains data-parallel and deflates on 2 ranks, as one runtime does', async () => {
    const { code, out: text, err } = await runExample(['examples/distributed.ts', '--out', out], { LIAISON_GROUP: '2', LIAISON_DIST_EPOCHS: '2', LIAISON_DIST_K: '3' });
    expect(code, `${text}\n${err}`).toBe(0);
    expect(text).toMatch(/^group: 2 ranks \(gloo/);
    const epochs = [...text.matchAll(/^\| (\d) \| ([\d.]+) \| ([\d.]+) \| [^|]+ \| [\d.]+% \| [\d.]+ \| [\d.]+ \| ([\d.]+) KiB \|$/gm)];
    expect(epochs.map((m) => m[1])).toEqual(['1', '2']);
    for (const m of epochs) {
      expect(Math.abs(Number(m[2]) - Number(m[3]))).toBeLessThan(1e-4);
      // the gradients of the 9,610 parameters, f32, summed over 2 ranks at each of the 23 steps
      expect(Number(m[4]) * 1024).toBeGreaterThanOrEqual(23 * 9610 * 4 * 2);
    }
    expect(Number(epochs[1][2])).toBeLessThan(Number(epochs[0][2]));
    const rounds = [...text.matchAll(/^\| (\d+) \| ([\d.e+-]+) \| ([\d.e+-]+) \| ([\d.]+) KiB \|$/gm)];
    expect(rounds.map((m) => m[1])).toEqual(['1', '2', '3', '4', '5', '6']);
    for (const m of rounds) expect(m[2]).toBe(m[3]); // the same errors, to the digits printed
    expect(Number(rounds[5][2])).toBeLessThan(0.5);
    expect(existsSync(join(out, 'distributed.png'))).toBe(true);
    expect(text).toMatch(/group and runtime stopped/);
  }, 240_000);
});
