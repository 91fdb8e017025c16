// The installer's decisions and its lock, apart from setup-python.mjs so that tests can
// check them without installing a gigabyte of torch.
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { isDependencyInstall } from './pyenv.mjs';

/** Modules every runtime needs (datasets, checkpoints and the BPE tokenizer included: the README's first program uses the first two). */
export const RUNTIME_MODULES = ['torch', 'zmq', 'msgpack', 'numpy', 'sklearn', 'safetensors', 'tokenizers'];
/** Extras a consumer opts into with LIAISON_EXTRAS (comma-separated), and the module each brings. */
export const EXTRA_MODULES = { plot: 'matplotlib' };

/**
 * What `npm install` should do with the Python side here:
 *  - `skip`: LIAISON_SKIP_PYTHON=1, or npm preparing a git dependency in a temporary clone
 *    (pacote sets _PACOTE_NO_PREPARE_; the package it packs runs this again once installed);
 *  - `given`: LIAISON_PYTHON names the interpreter: check it, change nothing;
 *  - `shared`: a dependency install: the runtime's dependencies in the shared venv;
 *  - `dev`: this repository's checkout: <root>/.venv with the dev tools.
 */
export function planSetup(root, env = process.env) {
  if (env.LIAISON_SKIP_PYTHON === '1') return { kind: 'skip', reason: 'LIAISON_SKIP_PYTHON=1' };
  if (env._PACOTE_NO_PREPARE_ !== undefined) {
    return { kind: 'skip', reason: 'npm is preparing a git dependency in a temporary clone; the Python side is set up where it gets installed' };
  }
  if (env.LIAISON_PYTHON) return { kind: 'given', python: env.LIAISON_PYTHON };
  const extras = parseExtras(env.LIAISON_EXTRAS ?? '');
  if (isDependencyInstall(root)) return { kind: 'shared', extras };
  return { kind: 'dev', venv: join(root, '.venv') };
}

/** LIAISON_EXTRAS=plot,... -> ['plot']; an unknown extra is refused with the known ones. */
export function parseExtras(text) {
  const names = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const n of names) {
    if (!(n in EXTRA_MODULES)) {
      throw new Error(`LIAISON_EXTRAS: unknown extra ${JSON.stringify(n)}; the extras are ${Object.keys(EXTRA_MODULES).join(', ')}`);
    }
  }
  return [...new Set(names)];
}

/**
 * The runtime's pip requirements from python-runtime/pyproject.toml ([project] dependencies,
 * plus the named optional-dependencies), torch left out: the installer pins torch itself.
 */
export function runtimeRequirements(pyprojectText, extras = []) {
  const list = (key) => {
    const m = new RegExp(`^${key}\\s*=\\s*\\[([^\\]]*)\\]`, 'm').exec(pyprojectText);
    if (!m) throw new Error(`python-runtime/pyproject.toml has no ${key} = [...] list`);
    return [...m[1].matchAll(/"([^"]+)"/g)].map((x) => x[1]);
  };
  const reqs = [...list('dependencies'), ...extras.flatMap((e) => list(e))];
  return reqs.filter((r) => !/^torch\b/.test(r));
}

const alive = (pid) => {
  try { process.kill(pid, 0); return true; } catch (e) { return e.code === 'EPERM'; }
};

/**
 * An exclusive lock across processes: the folder `path`, made atomically by mkdir, with its
 * holder in owner.json. A holder that died (same host, pid gone) or that has held it for more
 * than `staleMs` is taken over. `onWait(owner)` is called once per poll while waiting.
 * Resolves with release().
 */
export async function acquireLock(path, { staleMs = 3 * 3600_000, pollMs = 1000, onWait = () => {} } = {}) {
  const me = { pid: process.pid, host: hostname(), since: Date.now() };
  for (;;) {
    try {
      mkdirSync(path);
      writeFileSync(join(path, 'owner.json'), JSON.stringify(me));
      return () => rmSync(path, { recursive: true, force: true });
    } catch (e) {
      if (e.code !== 'EEXIST') throw e;
    }
    let owner = null;
    try { owner = JSON.parse(readFileSync(join(path, 'owner.json'), 'utf8')); } catch { /* being written, or gone */ }
    let age = 0;
    try { age = Date.now() - statSync(path).mtimeMs; } catch { continue; /* released meanwhile */ }
    const dead = owner !== null && owner.host === me.host && !alive(owner.pid);
    // a lock folder whose owner.json never appeared: a holder that died between the two calls
    const orphan = owner === null && age > 60_000;
    if (dead || orphan || age > staleMs) {
      // only the holder judged gone: another waiter may have taken it over meanwhile
      let now = null;
      try { now = readFileSync(join(path, 'owner.json'), 'utf8'); } catch { /* none */ }
      if (now === (owner === null ? null : JSON.stringify(owner))) rmSync(path, { recursive: true, force: true });
      continue;
    }
    onWait(owner);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
