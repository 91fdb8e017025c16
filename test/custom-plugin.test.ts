// examples/custom-plugin.ts runs as a user runs it: a third-party optimizer passes its
// family's conformance suite and trains an MLP on the digits through the Trainer.
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';

function run(env: Record<string, string>): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('npx', ['tsx', 'examples/custom-plugin.ts'], { env: { ...process.env, ...env } });
    let out = '', err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`timed out; stdout: ${out}; stderr: ${err}`)); }, 90_000);
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, out, err }); });
  });
}

describe('examples/custom-plugin.ts', () => {
  it('passes the conformance suite and trains an MLP on the digits', async () => {
    const { code, out, err } = await run({ LIAISON_EXAMPLE_EPOCHS: '3' });
    expect(code, err).toBe(0);
    expect(out).toMatch(/momentum-optimizer\/sign-sgd@0\.1\.0: 7 passed, 0 failed, 0 skipped/);
    const acc = /held-out accuracy ([\d.]+)%/.exec(out);
    expect(acc, out).not.toBeNull();
    // ten classes: chance is 10%; three epochs of sign-SGD reach well above 80%
    expect(Number(acc![1])).toBeGreaterThan(80);
  }, 100_000);
});
