// The demo (`npm run demo`) runs as a user runs it: locally, and against a tcp:// runtime.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { exitOf, startTcpRuntime } from './helpers.js';

function demo(env: Record<string, string> = {}): string {
  const r = spawnSync('npx', ['tsx', 'examples/quickstart.ts'], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 120_000 });
  expect(r.status, r.stderr).toBe(0);
  return r.stdout;
}

describe('npm run demo', () => {
  it('runs against its own local runtime', () => {
    const out = demo();
    expect(out).toMatch(/runtime up in .* on (cpu|cuda)/);
    expect(out).toMatch(/w = \[\s*1, 2, 3, 4,\s*5, 6, 7, 8\s*\]/);
    expect(out).toMatch(/intact: true/);
    expect(out).toMatch(/E_SHAPE in op 'matmul'/);
    expect(out).toMatch(/runtime stopped/);
  });

  it('drives a remote runtime given an endpoint and a key', async () => {
    const key = 'demo-test-key';
    const server = await startTcpRuntime(key);
    try {
      const out = demo({ LIAISON_ENDPOINT: server.endpoint, LIAISON_KEY: key });
      expect(out).toContain(`connected to ${server.endpoint}`);
      expect(out).toMatch(/intact: true/);
      expect(out).toMatch(/the remote runtime keeps running/);
      expect(server.child.exitCode).toBe(null);
    } finally {
      server.child.kill('SIGTERM');
      await exitOf(server.child);
    }
  });
});
