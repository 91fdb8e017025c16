#!/usr/bin/env node
// Runs the project's Python (LIAISON_PYTHON, else the install's venv: pyenv.mjs) with the
// runtime on its path.
import { spawnSync } from 'node:child_process';
import { delimiter } from 'node:path';
import { locatePython, ROOT, RUNTIME_DIR } from './pyenv.mjs';

const { python, found, fix } = locatePython(ROOT);
if (!found) {
  console.error(`liaison: no Python environment (${python} is missing). ${fix}`);
  process.exit(1);
}
const env = { ...process.env, PYTHONPATH: [RUNTIME_DIR, process.env.PYTHONPATH].filter(Boolean).join(delimiter) };
const r = spawnSync(python, process.argv.slice(2), { stdio: 'inherit', env });
process.exit(r.status ?? 1);
