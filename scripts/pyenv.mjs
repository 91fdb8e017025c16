// Where the Python side lives: one answer shared by the installer (setup-python.mjs), the
// script runner (python.mjs) and the SDK's launcher (bridge/launcher.ts imports this file,
// tsup bundles it into dist), so that all of them always agree on the interpreter.
//
// Two kinds of install, told apart by where the package lies (isDependencyInstall):
//  - a development checkout (this repository, cloned): <root>/.venv, the project's own, with
//    the runtime installed editable, the test tools and matplotlib;
//  - a dependency (npm unpacked the package inside some project's node_modules): one shared
//    venv per Liaison version, Python version and torch build, holding the runtime's
//    dependencies only, at <home>/venv-<version>-py<X.Y>-<torch> (home: LIAISON_HOME, else
//    $XDG_CACHE_HOME/liaison or ~/.cache/liaison). Every project on the machine that uses the
//    same version shares it; the installer records its path in <root>/.liaison-venv, which is
//    what the launcher reads (the Python version is known only to the installer).
// The functions below take the package root and the environment as arguments: bundled into
// dist, import.meta.url would not say where the package is.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The file in a dependency install's root that names its shared venv. */
export const POINTER_FILE = '.liaison-venv';

/** The pinned torch a venv gets; a CPU wheel of it is what CI machines carry. */
export function torchSpec(env = process.env) {
  return env.LIAISON_TORCH_SPEC || 'torch==2.13.0';
}

/**
 * True when the package was installed as a dependency: its real path (symlinks resolved, so
 * an `npm link`ed checkout stays a checkout) has a `node_modules` folder in it. npm, pnpm
 * and yarn all unpack dependencies under one; a clone of the repository never lies there.
 */
// The rule is the path alone, not npm's variables (INIT_CWD, npm_config_local_prefix): the
// launcher must reach the same answer at run time, when no npm is around.
export function isDependencyInstall(root) {
  let real = root;
  try { real = realpathSync(root); } catch { /* not there (yet): judge the path as given */ }
  return resolve(real).split(sep).includes('node_modules');
}

/** The folder that holds the shared venvs: LIAISON_HOME, else the user's cache folder. */
export function liaisonHome(env = process.env) {
  if (env.LIAISON_HOME) return resolve(env.LIAISON_HOME);
  if (process.platform === 'win32') return join(env.LOCALAPPDATA || join(homedir(), 'AppData', 'Local'), 'liaison');
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'liaison');
}

/** A folder-name-safe tag of a torch spec: `torch==2.13.0` -> `torch2.13.0`, others hashed. */
export function torchTag(spec) {
  const m = /^torch==([0-9A-Za-z.+_-]+)$/.exec(spec.trim());
  if (m) return `torch${m[1].replace(/\+/g, '_')}`;
  return `torch-${createHash('sha256').update(spec).digest('hex').slice(0, 10)}`;
}

/** The shared venv for one Liaison version, Python `X.Y` and torch spec. */
export function sharedVenvDir({ home, version, pyVersion, torch }) {
  if (!/^\d+\.\d+$/.test(pyVersion)) throw new Error(`liaison: Python version must be X.Y, got ${JSON.stringify(pyVersion)}`);
  return join(home, `venv-${version}-py${pyVersion}-${torchTag(torch)}`);
}

/** The interpreter inside a venv folder. */
export function venvPython(venv) {
  return process.platform === 'win32' ? join(venv, 'Scripts', 'python.exe') : join(venv, 'bin', 'python');
}

/** The package's version, from its package.json. */
export function packageVersion(root) {
  return JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).version;
}

/** The venv a dependency install's installer recorded, or null when there is none. */
export function recordedVenv(root) {
  const p = join(root, POINTER_FILE);
  if (!existsSync(p)) return null;
  const dir = readFileSync(p, 'utf8').trim();
  return dir || null;
}

/**
 * Where this install's interpreter is: `{ python, found, fix }`. LIAISON_PYTHON wins; a
 * checkout uses <root>/.venv; a dependency the shared venv its installer recorded. `found`
 * says whether the interpreter exists; when not, `fix` is the sentence that says how to
 * make it (for the launcher's and python.mjs's errors).
 */
export function locatePython(root, env = process.env) {
  if (env.LIAISON_PYTHON) return { python: env.LIAISON_PYTHON, found: true, fix: '' };
  if (!isDependencyInstall(root)) {
    const python = venvPython(join(root, '.venv'));
    return {
      python, found: existsSync(python),
      fix: `Run \`npm install\` in ${root} (it creates .venv), or set LIAISON_PYTHON to an interpreter with torch, pyzmq, msgpack and numpy.`,
    };
  }
  const venv = recordedVenv(root);
  const python = venv ? venvPython(venv) : null;
  const where = venv ? `${venv} (recorded in ${join(root, POINTER_FILE)})` : `a shared venv under ${liaisonHome(env)}`;
  return {
    python: python ?? join(root, POINTER_FILE), found: python !== null && existsSync(python),
    fix: `expected ${where}. Run \`npm rebuild liaison\` in your project to create it ` +
      '(if npm skipped install scripts, first `npm install-scripts approve liaison`), ' +
      'or set LIAISON_PYTHON to an interpreter with torch, pyzmq, msgpack and numpy.',
  };
}

// The scripts' own view: the package this file is in (scripts/.. is the package root).
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const RUNTIME_DIR = join(ROOT, 'python-runtime');

/** LIAISON_PYTHON, else this install's venv once it exists (null before). */
export function pythonPath(env = process.env) {
  const { python, found } = locatePython(ROOT, env);
  return found ? python : null;
}
