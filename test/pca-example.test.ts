// examples/pca-digits.ts runs as a user runs it: the SDK's PCA of the digits against
// scikit-learn's own PCA of the same arrays (run by examples/sklearn_pca.py in the
// project's Python), components equal up to sign and explained-variance ratios to 1e-4.
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runExample } from './helpers.js';

const out = mkdtempSync(join(tmpdir(), 'liaison-pca-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));

function figure(text: string, re: RegExp): number {
  const m = re.exec(text);
  expect(m, `${re} in:\n${text}`).not.toBeNull();
  return Number(m![1]);
}

// concurrent: most of each run is starting processes (tsx, the runtime, Python with scikit-learn)
describe.concurrent('examples/pca-digits.ts', () => {
  it('agrees with scikit-learn on the digits (exact deflator): components up to sign, ratios, signs, a PNG', async () => {
    const { code, out: text, err } = await runExample(['examples/pca-digits.ts', '--components', '8', '--out', out]);
    expect(code, `${text}\n${err}`).toBe(0);
    expect(text).toMatch(/scikit-learn [\d.]+ PCA \(solver '\w+'\) on the same arrays/);
    expect(figure(text, /max \|component difference\| up to sign: ([\d.e+-]+)/)).toBeLessThan(1e-4);
    expect(figure(text, /max \|explained variance ratio difference\|: ([\d.e+-]+)/)).toBeLessThan(1e-4);
    expect(figure(text, /signs as scikit-learn's: (\d+) of 8/)).toBe(8);
    // the digits' first 8 components explain about two thirds of the variance
    const cum = figure(text, /cumulative explained variance of 8 components: ([\d.]+)/);
    expect(cum).toBeGreaterThan(0.6);
    expect(cum).toBeLessThan(0.7);
    const png = join(out, 'pca-digits-exact.png');
    expect(existsSync(png) && statSync(png).size > 10_000).toBe(true);
  }, 300_000);

  it('agrees with scikit-learn with parallel-deflation underneath', async () => {
    const { code, out: text, err } = await runExample(['examples/pca-digits.ts', '--components', '5', '--deflator', 'parallel-deflation', '--out', out]);
    expect(code, `${text}\n${err}`).toBe(0);
    expect(text).toMatch(/liaison PCA with 'parallel-deflation' \{"localSteps":10,"rounds":40,"mode":"power"\}: 5 components in \d+ ms \(40 rounds/);
    expect(figure(text, /max \|component difference\| up to sign: ([\d.e+-]+)/)).toBeLessThan(1e-4);
    expect(figure(text, /max \|explained variance ratio difference\|: ([\d.e+-]+)/)).toBeLessThan(1e-4);
    expect(existsSync(join(out, 'pca-digits-parallel-deflation.png'))).toBe(true);
  }, 300_000);

  it('exits 1 when the agreement targets are missed', async () => {
    // two power steps per component cannot separate the digits' close eigenvalues
    const { code, out: text, err } = await runExample(['examples/pca-digits.ts', '--components', '3', '--deflator', 'hotelling', '--config', '{"steps": 2}', '--out', out]);
    expect(code, `${text}\n${err}`).toBe(1);
    expect(text).toMatch(/max \|component difference\| up to sign: [\d.e+-]+ \(target <= 0.0001\) MISSED/);
  }, 300_000);
});
