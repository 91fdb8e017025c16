// examples/nesterov-additive.ts and examples/nesterov-diabetes.ts run as a user runs them, in
// their small variants (2 seeds, 300 iterations): they exit cleanly, write their PNG and
// markdown table, and the tables have the shape the docs describe. Which method wins is
// checked only where the margin is wide: at small coupling Nesterov reaches the target in
// ~50 iterations where gradient descent needs ~300+.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runExample } from './helpers.js';

const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

const SMALL = { LIAISON_MOMENTUM_SEEDS: '2', LIAISON_MOMENTUM_ITERS: '300' };

async function run(example: string, env: Record<string, string> = {}): Promise<{ out: string; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'liaison-momentum-'));
  dirs.push(dir);
  const { code, out, err } = await runExample([`examples/${example}.ts`, '--out', dir], { ...SMALL, ...env });
  expect(code, `${out}\n${err}`).toBe(0);
  return { out, dir };
}

/** A drawn PNG: the signature, and more than an empty canvas. */
function expectPng(path: string): void {
  const png = readFileSync(path);
  expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  expect(png.length).toBeGreaterThan(10_000);
}

/** The rows of the markdown table in `path` (header first), as trimmed cells; the separator row checked and dropped. */
function markdownRows(path: string): string[][] {
  const lines = readFileSync(path, 'utf8').split('\n').filter((l) => l.startsWith('|'));
  const rows = lines.map((l) => l.slice(1, -1).split('|').map((c) => c.trim()));
  expect(rows[1].every((c) => c === '---')).toBe(true);
  for (const r of rows) expect(r).toHaveLength(rows[0].length);
  return [rows[0], ...rows.slice(2)];
}

/** "median (min–max)", or "not reached (> budget)"; medians and bounds may be "> budget". */
const ITERS_CELL = /^((> 300|\d+) \((> 300|\d+)–(> 300|\d+)\)|not reached \(> 300\))$/;

describe('examples/nesterov-additive.ts', () => {
  it('runs gd, heavy ball and Nesterov at three couplings and writes the table and the curves', async () => {
    const { out, dir } = await run('nesterov-additive');
    expect(out).toMatch(/local runtime \(pid \d+\): torch \S+ on (cpu|cuda\S*) \(1 thread\)/);
    expect(out).toMatch(/2 seeds × 3 scales × 3 methods, budget 300 iterations, target 1e-6 × the initial loss/);
    const [header, ...rows] = markdownRows(join(dir, 'nesterov-additive.md'));
    expect(header).toEqual(['scale', '‖A₂‖/‖A₁‖', 'κ', '√κ', 'method', 'iterations to target: median (min–max)', 'reached', 'diverged', 'speed-up over gd']);
    expect(rows.map((r) => `${r[0]}/${r[4]}`)).toEqual(['small', 'medium', 'large'].flatMap((s) => ['gd', 'heavy-ball', 'nesterov'].map((m) => `${s}/${m}`)));
    for (const r of rows) {
      // η and β come from the x-part by default, whose Hessian is built with κ = 100: the eigh measured it
      expect(Number(r[2])).toBe(100);
      expect(r[5]).toMatch(ITERS_CELL);
      expect(r[6]).toMatch(/^[0-2]\/2$/);
      expect(r[7]).toMatch(/^[0-2]\/2$/);
      expect(r[8]).toMatch(r[4] === 'gd' ? /^$/ : /^((> )?\d+\.\d×)?$/);
    }
    // small coupling: Nesterov gets there on every seed, well inside the budget gradient descent runs out of
    const nag = rows[2];
    expect(nag[6]).toBe('2/2');
    expect(Number(/^(\d+) /.exec(nag[5])![1])).toBeLessThan(150);
    expect(nag[8]).toMatch(/^(> )?\d+\.\d×$/);
    expect(Number(/([\d.]+)×/.exec(nag[8])![1])).toBeGreaterThan(2);
    expectPng(join(dir, 'nesterov-additive.png'));
    expect(out).toContain(`loss curves: ${join(dir, 'nesterov-additive.png')}`);
  }, 300_000);
});

describe('examples/nesterov-diabetes.ts', () => {
  it('trains a deep ReLU MLP on diabetes with each method and writes the table and the curves', async () => {
    const { out, dir } = await run('nesterov-diabetes');
    expect(out).toMatch(/354 rows to train on \(full-batch\), 88 held out/);
    // every method lowers the training loss from the seed's start (a robust claim: 300 full-batch steps)
    const lines = out.split('\n').filter((l) => l.startsWith('seed '));
    expect(lines).toHaveLength(2);
    const num = (s: string) => Number(s);
    for (const l of lines) {
      const start = num(/start: train ([\d.e+-]+)/.exec(l)![1]);
      const finals = [...l.matchAll(/(gd|heavy-ball|nesterov) [^;]*?train ([\d.e+-]+), held-out ([\d.e+-]+)/g)];
      expect(finals.map((f) => f[1])).toEqual(['gd', 'heavy-ball', 'nesterov']);
      for (const f of finals) expect(num(f[2])).toBeLessThan(start);
    }
    const [header, ...rows] = markdownRows(join(dir, 'nesterov-diabetes.md'));
    expect(header).toEqual(['method', 'iterations to train loss 0.1: median (min–max)', 'reached', 'speed-up over gd', 'train loss after 300', 'held-out loss after 300', 'best held-out loss']);
    expect(rows.map((r) => r[0])).toEqual(['gd', 'heavy-ball', 'nesterov']);
    const loss = /^[\d.e+-]+ \([\d.e+-]+–[\d.e+-]+\)$/;
    for (const r of rows) {
      expect(r[1]).toMatch(ITERS_CELL);
      expect(r[2]).toMatch(/^[0-2]\/2$/);
      for (const c of r.slice(4)) expect(c).toMatch(loss);
    }
    expectPng(join(dir, 'nesterov-diabetes.png'));
    expect(out).toContain(`table: ${join(dir, 'nesterov-diabetes.md')}`);
  }, 300_000);
});
