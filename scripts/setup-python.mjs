#!/usr/bin/env node
// `npm install` runs this: it prepares the Python side of Liaison.
//  - LIAISON_PYTHON set: check that interpreter has what the runtime needs, change nothing.
//  - otherwise: create .venv (once), install the pinned torch, then the runtime package.
// It is idempotent: a venv that already imports everything is left as it is.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { RUNTIME_DIR, TORCH_SPEC, VENV, venvPython } from './pyenv.mjs';

const NEEDED = ['torch', 'zmq', 'msgpack', 'numpy'];
// datasets, checkpoints, plots: the project's venv has them; a given interpreter may go without
const EXTRAS = ['sklearn', 'safetensors'];
const DEV = ['pytest', 'ruff', 'matplotlib'];

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (r.error) throw r.error;
  return r.status === 0;
}

function imports(py, mods) {
  const code = mods.map((m) => `import ${m}`).join('; ');
  return spawnSync(py, ['-c', code], { stdio: 'ignore' }).status === 0;
}

function fail(msg) {
  console.error(`\nliaison setup: ${msg}\n`);
  process.exit(1);
}

if (process.env.LIAISON_SKIP_PYTHON === '1') {
  console.log('liaison setup: LIAISON_SKIP_PYTHON=1, leaving the Python side alone.');
  process.exit(0);
}

const given = process.env.LIAISON_PYTHON;
if (given) {
  if (!imports(given, NEEDED)) {
    fail(`LIAISON_PYTHON=${given} cannot import all of ${NEEDED.join(', ')}. ` +
      `Install them there (pip install ${TORCH_SPEC} pyzmq msgpack numpy) or unset LIAISON_PYTHON to let Liaison make its own .venv.`);
  }
  console.log(`liaison setup: using LIAISON_PYTHON=${given}`);
  process.exit(0);
}

const py = venvPython();
if (existsSync(py) && imports(py, [...NEEDED, ...EXTRAS, ...DEV, 'liaison_runtime'])) {
  console.log('liaison setup: .venv is ready.');
  process.exit(0);
}

const base = ['python3', 'python'].find((c) => spawnSync(c, ['--version'], { stdio: 'ignore' }).status === 0);
if (!base) fail('no python3 on PATH; install Python 3.10+ or set LIAISON_PYTHON.');

if (!existsSync(py)) {
  console.log(`liaison setup: creating ${VENV}`);
  if (!run(base, ['-m', 'venv', VENV])) fail('python -m venv failed (on Debian: apt-get install python3-venv).');
}
const pip = (args) => run(py, ['-m', 'pip', 'install', '--disable-pip-version-check', ...args]);
if (!imports(py, ['torch'])) {
  console.log(`liaison setup: installing ${TORCH_SPEC} (set LIAISON_TORCH_SPEC to choose another build)`);
  if (!pip([TORCH_SPEC])) fail(`pip install ${TORCH_SPEC} failed.`);
}
console.log('liaison setup: installing the runtime package (python-runtime) and its test tools');
if (!pip(['-e', `${RUNTIME_DIR}[dev,plot]`])) fail('pip install -e python-runtime[dev,plot] failed.');
if (!imports(py, [...NEEDED, ...EXTRAS, ...DEV, 'liaison_runtime'])) fail('the venv still cannot import the runtime.');
console.log('liaison setup: .venv is ready.');
