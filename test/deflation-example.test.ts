// examples/deflation-spectra.ts runs as a user runs it (a small d, K and budget): four
// deflators on the two synthetic spectra at one matvec budget, a table, two plots and the
// numbers as JSON.
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runExample } from './helpers.js';

// a folder of its own, so that a test run leaves the user's examples/out as it was
const OUT = mkdtempSync(join(tmpdir(), 'liaison-deflation-'));
afterAll(() => rmSync(OUT, { recursive: true, force: true }));
const ENV = { LIAISON_DEFLATION_D: '120', LIAISON_DEFLATION_K: '6', LIAISON_DEFLATION_BUDGET: '600', LIAISON_DEFLATION_T: '5' };

interface Row { spectrum: string; method: string; max: number; errors: number[]; matvecs: number; rounds: number; history: { round: number; matvecs: number; max: number }[] }

describe('examples/deflation-spectra.ts', () => {
  it('runs exact, hotelling, parallel-deflation and eigengame-mu at one budget, tabulates, plots and saves the curves', async () => {
    const started = Date.now();
    const { code, out, err } = await runExample(['examples/deflation-spectra.ts', '--out', OUT], ENV);
    expect(code, `${out}\n${err}`).toBe(0);
    expect(out).toMatch(/d = 120, K = 6, budget 600 matrix-vector products per method/);
    for (const spectrum of ['k\\^-0\\.5', '1\\.1\\^-k']) {
      for (const method of ['exact \\(eigh\\)', 'hotelling \\(t=98\\)', 'parallel-deflation \\(T=5, L=22\\)', 'eigengame-mu \\(99 steps\\)']) {
        expect(out).toMatch(new RegExp(`λ_k = ${spectrum} +${method} +[\\d.e+-]+ +[\\d.e+-]+ +[\\d,]+ +\\d+ +[\\d.]+`));
      }
    }
    const { rows } = JSON.parse(readFileSync(`${OUT}/deflation-spectra.json`, 'utf8')) as { rows: Row[] };
    expect(statSync(`${OUT}/deflation-spectra.json`).mtimeMs).toBeGreaterThanOrEqual(started - 1000);
    expect(rows).toHaveLength(8);
    for (const r of rows) {
      expect(r.errors).toHaveLength(6);
      if (r.method.startsWith('exact')) {
        expect(r.max, r.method).toBeLessThan(1e-5);
        continue;
      }
      // the budget holds, every round was tracked, and the method got somewhere within it
      expect(r.matvecs, r.method).toBeLessThanOrEqual(600);
      expect(r.history).toHaveLength(r.rounds);
      r.history.forEach((h, i) => expect(i === 0 || h.matvecs > r.history[i - 1].matvecs).toBe(true));
      expect(r.history[0].max, r.method).toBeGreaterThan(0.1); // the first round: random starts for most components
      expect(r.max, `${r.spectrum} ${r.method}`).toBeLessThan(0.05);
    }
    for (const png of ['deflation-spectra.png', 'deflation-spectra-components.png']) {
      expect(out).toContain(`plot: ${relative(process.cwd(), join(OUT, png))}`);
      expect(existsSync(`${OUT}/${png}`)).toBe(true);
    }
  }, 300_000);
});
