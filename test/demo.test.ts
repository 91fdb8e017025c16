// The demo (`npm run demo`) runs as a user runs it: locally, and against a tcp:// runtime.
// It trains a CNN on the digits, prints the held-out accuracy and writes a loss-curve PNG.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { EXAMPLE_ENV, exitOf, startTcpRuntime } from './helpers.js';

const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

function demo(env: Record<string, string> = {}): { out: string; plot: string } {
  const dir = mkdtempSync(join(tmpdir(), 'liaison-demo-'));
  dirs.push(dir);
  const r = spawnSync('npx', ['tsx', 'examples/quickstart.ts', '--out', dir], { env: { ...process.env, ...EXAMPLE_ENV, ...env }, encoding: 'utf8', timeout: 240_000 });
  expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
  return { out: r.stdout, plot: join(dir, 'liaison-demo-loss.png') };
}

/** The held-out accuracy the demo printed, in percent. */
function accuracy(out: string): number {
  const m = /held-out accuracy: ([\d.]+)% \((\d+) of (\d+) digits right/.exec(out);
  expect(m, out).not.toBeNull();
  expect(Math.round((Number(m![2]) / Number(m![3])) * 1000) / 10).toBeCloseTo(Number(m![1]), 1);
  return Number(m![1]);
}

/** The plot exists, is a PNG, and the demo said where it is. */
function expectPlot(out: string, plot: string): void {
  const png = readFileSync(plot);
  expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  expect(png.length).toBeGreaterThan(10_000); // a drawn figure, not an empty canvas
  expect(out).toContain(`loss curve: ${plot}`);
}

describe('npm run demo', () => {
  it('trains a CNN on the digits past 95% held-out accuracy with its own local runtime', () => {
    const { out, plot } = demo();
    expect(out).toMatch(/local runtime \(pid \d+\): torch \S+ on (cpu|cuda\S*) \(1 thread\)/);
    expect(out).toMatch(/1438 to train on, 359 held out/);
    expect(out).toMatch(/13,706 parameters: convs\.0 160, convs\.1 4,640, fc 8,256, head 650/);
    expect(out).toMatch(/before training: held-out accuracy ([\d.]+)%/);
    // not a terminal here: one line per epoch instead of the bar
    expect(out.match(/^epoch +\d+\/15 +train loss [\d.]+ +held-out loss [\d.]+ +accuracy [\d.]+%/gm)).toHaveLength(15);
    expect(accuracy(out)).toBeGreaterThanOrEqual(95);
    expectPlot(out, plot);
    expect(out).toMatch(/runtime stopped/);
  }, 300_000);

  it('drives a remote runtime given an endpoint and a key', async () => {
    const key = 'demo-test-key';
    const server = await startTcpRuntime(key);
    try {
      const { out, plot } = demo({ LIAISON_ENDPOINT: server.endpoint, LIAISON_KEY: key, LIAISON_DEMO_EPOCHS: '4' });
      expect(out).toContain(`remote runtime at ${server.endpoint}: torch`);
      expect(out.match(/^epoch \d\/4 /gm)).toHaveLength(4);
      expect(accuracy(out)).toBeGreaterThan(50); // chance is 10%; four epochs reach about 90%
      expectPlot(out, plot);
      expect(out).toMatch(/the remote runtime keeps running/);
      expect(server.child.exitCode).toBe(null);
    } finally {
      server.child.kill('SIGTERM');
      await exitOf(server.child);
    }
  }, 300_000);
});
