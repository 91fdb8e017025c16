#!/usr/bin/env node
// `npm test`: every suite, TypeScript and Python, in one command. Stops at the first
// failing step and says which one failed.
import { spawnSync } from 'node:child_process';

const steps = [
  ['typecheck (tsc --noEmit)', 'npx', ['tsc', '--noEmit']],
  ['build (tsup)', 'npx', ['tsup', '--silent']],
  ['python lint (ruff)', 'node', ['scripts/python.mjs', '-m', 'ruff', 'check', 'python-runtime', 'bench']],
  ['python tests (pytest)', 'node', ['scripts/python.mjs', '-m', 'pytest', 'python-runtime/tests', '-q']],
  ['typescript tests (vitest)', 'npx', ['vitest', 'run']],
];
const t0 = Date.now();
for (const [name, cmd, args] of steps) {
  console.log(`\n=== ${name}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`\nnpm test: step "${name}" failed (exit ${r.status ?? r.signal}).`);
    process.exit(r.status || 1);
  }
}
console.log(`\nnpm test: all steps passed in ${((Date.now() - t0) / 1000).toFixed(0)} s.`);
