// examples/serve-callbacks.ts as a user runs it, short: the Lightning and the Hugging Face
// digits scripts, each started by the service with nesterov and magnitude installed, reach
// the held-out accuracy of the SDK's Trainer with the same plugins within seed noise, step
// with the plugin (not their own SGD), and keep the pruner's sparsity.
//
// One process per library (their imports take most of the time). The example runs in its own
// process group: a timeout or a failure kills it and the scripts it started, nothing is left.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { resolvePython } from '../bridge/index.js';
import { EXAMPLE_ENV } from './helpers.js';

const EPOCHS = 4;
/**
 * The largest |script − Trainer| held-out accuracy allowed after 4 epochs, in points. Measured
 * over seeds 0–2 (docs/any-loop.md): each loop's accuracy spreads over ~1.1 points (sd ~0.6),
 * Lightning's mean is 1.1 above the Trainer's and HF's 0.1, the largest gap at one seed 2.0
 * points; a script shuffles its own way, which differs from the Trainer's order as a seed does.
 * A script stepping with its own SGD, or without the pruner's masks, fails the other checks.
 */
const SEED_NOISE_PTS = 4;

// find_spec does not import: the check costs no Lightning import
const has = (mod: string) => spawnSync(resolvePython(), ['-c', `import importlib.util, sys; sys.exit(importlib.util.find_spec('${mod}') is None)`]).status === 0;
const libs = has('lightning') && has('transformers');
const SKIPPED = libs ? '' : ' (skipped: lightning or transformers is not installed; npm install puts them in .venv as python-runtime[dev])';

let child: ChildProcess | null = null;
const dir = mkdtempSync(join(tmpdir(), 'liaison-callbacks-'));
afterAll(() => {
  if (child?.pid && child.exitCode === null) process.kill(-child.pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

function run(timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn('npx', ['tsx', 'examples/serve-callbacks.ts', '--out', dir], {
      detached: true, // its own process group: the scripts it starts die with it below
      env: { ...process.env, ...EXAMPLE_ENV, LIAISON_CALLBACKS_EPOCHS: String(EPOCHS), LIAISON_CALLBACKS_SEEDS: '1' },
    });
    child = c;
    let out = '';
    c.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    c.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    const timer = setTimeout(() => {
      process.kill(-c.pid!, 'SIGKILL');
      reject(new Error(`timed out after ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    c.on('exit', (code) => { clearTimeout(timer); resolve({ code, out }); });
  });
}

describe('examples/serve-callbacks.ts', () => {
  it.skipIf(!libs)(`Lightning and HF scripts with nesterov + magnitude reach the Trainer's accuracy within seed noise${SKIPPED}`, async () => {
    const { code, out } = await run(540_000);
    expect(code, out).toBe(0);
    const row = (loop: string) => {
      const m = new RegExp(`^\\| ${loop} \\| 0 \\| ([\\d.]+)% \\| ([\\d.]+)% \\|`, 'm').exec(out);
      expect(m, `${loop}'s row in:\n${out}`).not.toBeNull();
      return { accuracy: Number(m![1]), sparsity: Number(m![2]) };
    };
    const trainer = row('trainer');
    expect(trainer.accuracy).toBeGreaterThan(80); // it learned: chance is 10%
    for (const loop of ['lightning', 'hf']) {
      const r = row(loop);
      expect(Math.abs(r.accuracy - trainer.accuracy), `${loop} ${r.accuracy}% vs the Trainer's ${trainer.accuracy}%\n${out}`).toBeLessThanOrEqual(SEED_NOISE_PTS);
      expect(r.sparsity).toBeCloseTo(80, 1); // read from the script at its last evaluation: the masks held
      expect(out).toMatch(new RegExp(`${loop} \\| stepped by \\S*/nesterov@`)); // the plugin stepped, not the script's SGD
    }
  }, 600_000);
});
