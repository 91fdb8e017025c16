#!/usr/bin/env node
// Runs the project's Python (LIAISON_PYTHON or .venv) with the runtime on its path.
import { spawnSync } from 'node:child_process';
import { delimiter } from 'node:path';
import { pythonPath, RUNTIME_DIR } from './pyenv.mjs';

const py = pythonPath();
if (!py) {
  console.error('liaison: no Python environment yet. Run `npm install` (it creates .venv) or set LIAISON_PYTHON.');
  process.exit(1);
}
const env = { ...process.env, PYTHONPATH: [RUNTIME_DIR, process.env.PYTHONPATH].filter(Boolean).join(delimiter) };
const r = spawnSync(py, process.argv.slice(2), { stdio: 'inherit', env });
process.exit(r.status ?? 1);
