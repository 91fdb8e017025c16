// The package as a dependency: `npm pack` on a copy of this working tree that has no dist/
// (as a fresh clone), checks of what the tarball holds, then `npm install <tarball>` in a new
// project and a program there that imports liaison, liaison/sdk, liaison/plugins and
// liaison/sdk/conformance, starts a runtime and runs the nesterov optimizer's conformance
// suite. The install's Python setup runs for real, as a consumer's: it finds the shared venv
// ready (a LIAISON_HOME whose venv for this version is this checkout's venv, so that no
// gigabyte of torch is installed) and records it, and the launcher in dist/ finds it there.
import { execFile as execFileCb, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { POINTER_FILE, ROOT, locatePython, sharedVenvDir, torchSpec, venvPython } from '../scripts/pyenv.mjs';

const execFile = promisify(execFileCb);
const tmp = mkdtempSync(join(tmpdir(), 'liaison-package-'));
const pkgJson = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string; exports: Record<string, { types: string; import: string }>;
};

/** This environment without npm's per-script variables (a nested npm must not inherit its caller's prefix). */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^npm_/i.test(k) && k !== 'INIT_CWD' && !k.startsWith('LIAISON_')) env[k] = v;
  }
  return { ...env, ...extra };
}

/** Runs a command; its stdout, then its stderr (`stdoutOnly`: stdout alone). */
async function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, stdoutOnly = false): Promise<string> {
  try {
    const { stdout, stderr } = await execFile(cmd, args, { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20, timeout: 240_000 });
    return stdoutOnly ? stdout : stdout + stderr;
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} (in ${cwd}) failed: ${err.message}\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
  }
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

let files: string[] = []; // paths inside the tarball, relative to its package/
let unpacked = ''; // the tarball extracted
let project = ''; // the consumer project
let installLog = '';
let sharedVenv = ''; // where the install should find its Python
const home = join(tmp, 'liaison-home');
// this checkout's interpreter (LIAISON_PYTHON or .venv) and the venv it belongs to
const repoPython = locatePython(ROOT).python;
const repoVenv = spawnSync(repoPython, ['-c', 'import sys; print(sys.prefix)'], { encoding: 'utf8' }).stdout.trim();

beforeAll(async () => {
  // a fresh clone's files: tracked and new ones, nothing git ignores (no dist/, no .venv)
  const src = join(tmp, 'src');
  const listed = spawnSync('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: ROOT, encoding: 'utf8' });
  for (const f of listed.stdout.split('\0').filter(Boolean)) {
    if (!existsSync(join(ROOT, f))) continue; // deleted in the working tree
    mkdirSync(dirname(join(src, f)), { recursive: true });
    cpSync(join(ROOT, f), join(src, f));
  }
  expect(existsSync(join(src, 'dist'))).toBe(false);
  symlinkSync(join(ROOT, 'node_modules'), join(src, 'node_modules')); // tsup for the build

  const packed = await sh('npm', ['pack', '--json', '--pack-destination', tmp], src, cleanEnv(), true);
  const info = JSON.parse(packed.slice(packed.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  files = info[0].files.map((f) => f.path);
  const tarball = join(tmp, info[0].filename);
  unpacked = join(tmp, 'unpacked');
  mkdirSync(unpacked);
  await sh('tar', ['xzf', tarball, '-C', unpacked], tmp, cleanEnv());

  // the consumer's shared venv for this version, Python and torch: this checkout's venv
  expect(existsSync(venvPython(repoVenv)), `${repoPython} is not in a venv (sys.prefix ${repoVenv})`).toBe(true);
  const pyVersion = spawnSync(repoPython, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], { encoding: 'utf8' }).stdout.trim();
  sharedVenv = sharedVenvDir({ home, version: pkgJson.version, pyVersion, torch: torchSpec({}) });
  mkdirSync(home, { recursive: true });
  symlinkSync(repoVenv, sharedVenv);

  project = join(tmp, 'app');
  mkdirSync(project);
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true, type: 'module' }));
  installLog = await sh('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts'], project,
    cleanEnv({ LIAISON_HOME: home, LIAISON_BASE_PYTHON: repoPython }));
}, 600_000);

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('npm pack from a fresh clone', () => {
  it('builds dist/: every export of package.json is in the tarball', () => {
    for (const [name, target] of Object.entries(pkgJson.exports)) {
      for (const file of [target.import, target.types]) {
        expect(files, `export ${name}: ${file}`).toContain(relative('.', file));
      }
    }
  });

  it('ships no tests, examples, benchmarks, sources or development files', () => {
    const bad = files.filter((f) =>
      /^(test|examples|bench|bridge|sdk|plugins|\.ci|\.venv|node_modules)\//.test(f) ||
      /(^|\/)tests?\//.test(f) || /\.test\.ts$/.test(f) || /(^|\/)__pycache__\//.test(f) ||
      /^(tsconfig|vitest\.config|tsup\.config)/.test(f) || f === POINTER_FILE);
    expect(bad).toEqual([]);
    expect(files).toContain('python-runtime/liaison_runtime/__main__.py');
    expect(files).toContain('scripts/setup-python.mjs');
  });

  it('every relative link in the shipped docs resolves inside the package; no DESIGN.md anywhere', () => {
    const root = join(unpacked, 'package');
    const broken: string[] = [];
    const design: string[] = [];
    for (const file of walk(root)) {
      const text = readFileSync(file, 'utf8');
      if (/\.(md|d\.ts|js)$/.test(file) && text.includes('DESIGN.md')) design.push(relative(root, file));
      if (!file.endsWith('.md')) continue;
      for (const m of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        const target = m[1];
        if (/^[a-z]+:/i.test(target) || target.startsWith('#')) continue;
        const path = resolve(dirname(file), decodeURIComponent(target.split('#')[0]));
        if (!existsSync(path)) broken.push(`${relative(root, file)} -> ${target}`);
      }
    }
    expect(broken).toEqual([]);
    expect(design).toEqual([]);
  });

  it("the shipped docs' code imports the package's public paths, not repository folders", () => {
    const root = join(unpacked, 'package');
    const repoImports: string[] = [];
    for (const file of walk(root).filter((f) => f.endsWith('.md'))) {
      for (const m of readFileSync(file, 'utf8').matchAll(/\bfrom '([^']+)'/g)) {
        if (m[1].startsWith('.')) repoImports.push(`${relative(root, file)}: ${m[1]}`);
      }
    }
    expect(repoImports).toEqual([]);
  });
});

/** The ```ts blocks of the sections of a markdown file whose heading starts with one of `numbers`. */
function snippets(md: string, numbers: string[]): string[] {
  const blocks: string[] = [];
  for (const section of md.split(/^## /m).slice(1)) {
    if (!numbers.some((n) => section.startsWith(`${n}.`))) continue;
    for (const m of section.matchAll(/```ts\n([\s\S]*?)```/g)) blocks.push(m[1]);
  }
  return blocks;
}

describe('installed into a new project', () => {
  it("the plugin guide's code compiles against the package's type declarations", async () => {
    // sections 2, 3 and 5 together are a whole plugin file: schema, class, registration
    const guide = readFileSync(join(project, 'node_modules', 'liaison', 'docs', 'writing-a-plugin.md'), 'utf8');
    const code = snippets(guide, ['2', '3', '5']);
    expect(code).toHaveLength(3);
    writeFileSync(join(project, 'recent-first.ts'), `${code.join('\n')}\nexport { policy };\n`);
    writeFileSync(join(project, 'tsconfig.json'), JSON.stringify({
      compilerOptions: {
        target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, noEmit: true,
        typeRoots: [join(ROOT, 'node_modules', '@types')], types: ['node'],
      },
      files: ['recent-first.ts'],
    }));
    const out = await sh(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], project, cleanEnv());
    expect(out.trim()).toBe('');
  }, 120_000);

  it("the install script found the shared venv and recorded it; no venv of the package's own", () => {
    const pkg = join(project, 'node_modules', 'liaison');
    expect(existsSync(join(pkg, POINTER_FILE)), installLog).toBe(true);
    expect(readFileSync(join(pkg, POINTER_FILE), 'utf8').trim()).toBe(sharedVenv);
    expect(existsSync(join(pkg, '.venv'))).toBe(false);
    expect(installLog).toMatch(/using the shared Python environment/);
  });

  it('a program imports the entry points, starts a runtime and runs a plugin through it', async () => {
    writeFileSync(join(project, 'run.mjs'), `
      import { Runtime, resolvePython } from 'liaison';
      import { Type, definePlugin } from 'liaison/sdk';
      import { nesterov } from 'liaison/plugins';
      import { formatReport, runConformance } from 'liaison/sdk/conformance';
      const schema = Type.Object({ lr: Type.Number({ default: 0.1, description: 'step size' }) });
      if (typeof definePlugin !== 'function' || schema.type !== 'object') throw new Error('liaison/sdk: Type or definePlugin missing');
      console.log('python ' + resolvePython());
      const rt = await Runtime.start({ threads: 1 });
      try {
        const report = await runConformance(nesterov, { rt });
        console.log(formatReport(report));
        process.exitCode = report.ok ? 0 : 1;
      } finally {
        await rt.close();
      }
    `);
    const out = await sh(process.execPath, ['run.mjs'], project, cleanEnv({ LIAISON_HOME: home }));
    expect(out).toContain(`python ${venvPython(sharedVenv)}\n`);
    expect(out).toMatch(/momentum-optimizer\/nesterov@[\d.]+: \d+ passed, 0 failed/);
  }, 180_000);

  it('without its environment, starting a runtime says to run `npm rebuild liaison`', async () => {
    const pointer = join(project, 'node_modules', 'liaison', POINTER_FILE);
    const saved = readFileSync(pointer, 'utf8');
    rmSync(pointer);
    try {
      writeFileSync(join(project, 'nopy.mjs'), `
        import { Runtime } from 'liaison';
        try { await Runtime.start(); console.log('started'); } catch (e) { console.log(e.code + ': ' + e.message); }
      `);
      const out = await sh(process.execPath, ['nopy.mjs'], project, cleanEnv({ LIAISON_HOME: home }));
      expect(out).toMatch(/^E_SPAWN: no Python environment/m);
      expect(out).toContain('`npm rebuild liaison`');
    } finally {
      writeFileSync(pointer, saved);
    }
  });
});
