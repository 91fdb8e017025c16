// Where the Python side lives: one answer shared by the installer, the test runner and
// the SDK's launcher, so that all three always agree on the interpreter.
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const VENV = join(ROOT, '.venv');
export const RUNTIME_DIR = join(ROOT, 'python-runtime');

/** The pinned torch the venv gets; a CPU wheel of it is what CI machines carry. */
export const TORCH_SPEC = process.env.LIAISON_TORCH_SPEC ?? 'torch==2.13.0';

export function venvPython() {
  return process.platform === 'win32' ? join(VENV, 'Scripts', 'python.exe') : join(VENV, 'bin', 'python');
}

/** LIAISON_PYTHON wins; otherwise the project's own venv once it exists. */
export function pythonPath() {
  if (process.env.LIAISON_PYTHON) return process.env.LIAISON_PYTHON;
  const p = venvPython();
  return existsSync(p) ? p : null;
}
