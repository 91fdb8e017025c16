// Where the Python side of an install lives, and what the installer does about it, without
// installing anything: the rules scripts/pyenv.mjs and scripts/pyenv-setup.mjs apply (the
// installer and the launcher both go through them), on folders made to look like installs.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { homedir, hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import {
  POINTER_FILE, ROOT, isDependencyInstall, liaisonHome, locatePython, sharedVenvDir, torchTag, venvPython,
} from '../scripts/pyenv.mjs';
import { acquireLock, parseExtras, planSetup, runtimeRequirements } from '../scripts/pyenv-setup.mjs';

const tmp = mkdtempSync(join(tmpdir(), 'liaison-pyenv-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A folder that looks like the package unpacked at `root` (package.json, python-runtime/). */
function fakePackage(root: string): string {
  mkdirSync(join(root, 'python-runtime'), { recursive: true });
  writeFileSync(join(root, 'package.json'), JSON.stringify({ name: 'liaison', version: '0.1.0' }));
  return root;
}

describe('which kind of install', () => {
  it('a package under node_modules (npm, pnpm) is a dependency; a checkout, linked or not, is not', () => {
    const dep = fakePackage(join(tmp, 'app', 'node_modules', 'liaison'));
    const pnpm = fakePackage(join(tmp, 'app2', 'node_modules', '.pnpm', 'liaison@0.1.0', 'node_modules', 'liaison'));
    expect(isDependencyInstall(dep)).toBe(true);
    expect(isDependencyInstall(pnpm)).toBe(true);
    expect(isDependencyInstall(ROOT)).toBe(false);
    // `npm link`: the dependency is a symlink to a checkout, whose real path decides
    const linked = join(tmp, 'app3', 'node_modules', 'liaison');
    mkdirSync(join(tmp, 'app3', 'node_modules'), { recursive: true });
    symlinkSync(ROOT, linked);
    expect(isDependencyInstall(linked)).toBe(false);
  });

  it('the shared venv is per Liaison version, Python X.Y and torch build, under LIAISON_HOME or the cache folder', () => {
    expect(liaisonHome({ LIAISON_HOME: '/opt/lh' })).toBe('/opt/lh');
    expect(liaisonHome({ XDG_CACHE_HOME: '/c' })).toBe(join('/c', 'liaison'));
    expect(liaisonHome({})).toBe(join(homedir(), '.cache', 'liaison'));
    const dir = sharedVenvDir({ home: '/h', version: '0.1.0', pyVersion: '3.11', torch: 'torch==2.13.0' });
    expect(dir).toBe(join('/h', 'venv-0.1.0-py3.11-torch2.13.0'));
    const cuda = torchTag('torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128');
    expect(cuda).toMatch(/^torch-[0-9a-f]{10}$/);
    expect(cuda).not.toBe(torchTag('torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126'));
    expect(() => sharedVenvDir({ home: '/h', version: '0.1.0', pyVersion: '3', torch: 'torch' })).toThrow(/X\.Y, got "3"/);
  });
});

describe('the interpreter the installer and the launcher agree on (locatePython)', () => {
  it('a checkout uses its own .venv; LIAISON_PYTHON wins over everything', () => {
    expect(locatePython(ROOT, {}).python).toBe(venvPython(join(ROOT, '.venv')));
    expect(locatePython(ROOT, {}).fix).toMatch(/npm install/);
    const dep = fakePackage(join(tmp, 'p1', 'node_modules', 'liaison'));
    expect(locatePython(dep, { LIAISON_PYTHON: '/usr/bin/python3' })).toEqual({ python: '/usr/bin/python3', found: true, fix: '' });
  });

  it('a dependency uses the venv its installer recorded, and says `npm rebuild liaison` when there is none', () => {
    const dep = fakePackage(join(tmp, 'p2', 'node_modules', 'liaison'));
    const env = { LIAISON_HOME: join(tmp, 'home') };
    const none = locatePython(dep, env);
    expect(none.found).toBe(false);
    expect(none.fix).toContain('`npm rebuild liaison`');
    expect(none.fix).not.toMatch(/`npm install`/);
    expect(none.fix).toContain(join(tmp, 'home'));

    const venv = sharedVenvDir({ home: env.LIAISON_HOME, version: '0.1.0', pyVersion: '3.11', torch: 'torch==2.13.0' });
    writeFileSync(join(dep, POINTER_FILE), `${venv}\n`);
    const gone = locatePython(dep, env); // recorded, but deleted since (a cleaned cache)
    expect(gone).toMatchObject({ python: venvPython(venv), found: false });
    expect(gone.fix).toContain(venv);
    expect(gone.fix).toContain('`npm rebuild liaison`');

    mkdirSync(join(venvPython(venv), '..'), { recursive: true });
    writeFileSync(venvPython(venv), '');
    expect(locatePython(dep, env)).toMatchObject({ python: venvPython(venv), found: true });
  });
});

describe('what the installer does (planSetup)', () => {
  const dep = fakePackage(join(tmp, 'p3', 'node_modules', 'liaison'));
  it('a dependency: the shared venv, with the extras asked for; a checkout: its own .venv', () => {
    expect(planSetup(dep, {})).toEqual({ kind: 'shared', extras: [] });
    expect(planSetup(dep, { LIAISON_EXTRAS: 'plot' })).toEqual({ kind: 'shared', extras: ['plot'] });
    expect(planSetup(ROOT, {})).toEqual({ kind: 'dev', venv: join(ROOT, '.venv') });
  });

  it('nothing while npm prepares a git dependency, nor with LIAISON_SKIP_PYTHON; LIAISON_PYTHON is only checked', () => {
    // pacote sets _PACOTE_NO_PREPARE_ (possibly empty) for the `npm install` in its temporary clone
    expect(planSetup(ROOT, { _PACOTE_NO_PREPARE_: '' }).kind).toBe('skip');
    expect(planSetup(dep, { LIAISON_SKIP_PYTHON: '1' }).kind).toBe('skip');
    expect(planSetup(dep, { LIAISON_PYTHON: '/x/python' })).toEqual({ kind: 'given', python: '/x/python' });
  });

  it('an unknown extra is refused with the known ones', () => {
    expect(() => parseExtras('plot, plots')).toThrow(/unknown extra "plots"; the extras are plot/);
  });

  it("a consumer gets the runtime's dependencies, not the development tools (from python-runtime/pyproject.toml)", () => {
    const text = readFileSync(join(ROOT, 'python-runtime', 'pyproject.toml'), 'utf8');
    const base = runtimeRequirements(text).map((r: string) => r.split(/[<>=!~ ]/)[0]);
    expect(base).toEqual(expect.arrayContaining(['pyzmq', 'msgpack', 'numpy', 'safetensors', 'tokenizers']));
    for (const dev of ['torch', 'pytest', 'ruff', 'matplotlib']) expect(base).not.toContain(dev);
    expect(runtimeRequirements(text, ['plot']).some((r: string) => r.startsWith('matplotlib'))).toBe(true);
  });
});

describe('the lock two concurrent installs take on the shared venv', () => {
  it('a second install waits until the first releases it', async () => {
    const path = join(tmp, 'venv-a.lock');
    const releaseA = await acquireLock(path);
    let waits = 0;
    let gotB = false;
    const b = acquireLock(path, {
      pollMs: 5,
      onWait: (owner: { pid: number } | null) => {
        expect(gotB).toBe(false);
        if (owner) expect(owner.pid).toBe(process.pid);
        if (++waits === 3) releaseA();
      },
    }).then((release) => { gotB = true; return release; });
    const releaseB = await b;
    expect(waits).toBe(3);
    expect(existsSync(path)).toBe(true);
    releaseB();
    expect(existsSync(path)).toBe(false);
  });

  it('between processes: the second holds it only after the first let go', async () => {
    // each child takes the lock, logs, waits for its go-file, logs again and lets go
    const path = join(tmp, 'venv-c.lock');
    const log = join(tmp, 'lock.log');
    writeFileSync(log, '');
    const lib = pathToFileURL(join(ROOT, 'scripts', 'pyenv-setup.mjs')).href;
    const child = (name: string) => spawn(process.execPath, ['--input-type=module', '-e', `
      import { appendFileSync, existsSync } from 'node:fs';
      import { acquireLock } from ${JSON.stringify(lib)};
      const say = (w) => appendFileSync(${JSON.stringify(log)}, '${name} ' + w + '\\n');
      let told = false;
      const release = await acquireLock(${JSON.stringify(path)}, { pollMs: 10, onWait: () => { if (!told) say('waits'); told = true; } });
      say('holds');
      while (!existsSync(${JSON.stringify(join(tmp, 'go-'))} + '${name}')) await new Promise((r) => setTimeout(r, 10));
      say('lets go');
      release();
    `], { stdio: 'inherit' });
    const lines = () => readFileSync(log, 'utf8').split('\n').filter(Boolean);
    const until = async (line: string) => { while (!lines().includes(line)) await new Promise((r) => setTimeout(r, 10)); };
    // listened for from the start: a child may exit before the test gets to waiting for it
    const exited = (c: ReturnType<typeof spawn>) => new Promise<number | null>((r) => c.on('exit', r));
    const a = exited(child('A'));
    await until('A holds');
    const b = exited(child('B'));
    await until('B waits');
    writeFileSync(join(tmp, 'go-A'), '');
    await until('B holds');
    writeFileSync(join(tmp, 'go-B'), '');
    expect(await a).toBe(0);
    expect(await b).toBe(0);
    expect(lines()).toEqual(['A holds', 'B waits', 'A lets go', 'B holds', 'B lets go']);
    expect(existsSync(path)).toBe(false);
  }, 60_000);

  it('the lock of an install that died is taken over', async () => {
    const path = join(tmp, 'venv-b.lock');
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    mkdirSync(path);
    writeFileSync(join(path, 'owner.json'), JSON.stringify({ pid: Number(dead.stdout), host: hostname(), since: Date.now() }));
    let waited = false;
    const release = await acquireLock(path, { pollMs: 5, onWait: () => { waited = true; } });
    expect(waited).toBe(false);
    expect(JSON.parse(readFileSync(join(path, 'owner.json'), 'utf8')).pid).toBe(process.pid);
    release();
  });
});
