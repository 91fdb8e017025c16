/**
 * Starts the local runtime: `python -m liaison_runtime` on an ipc:// socket inside a
 * private temporary directory, owned by this Node process.
 *
 * No orphans: closing stops it (shutdown, then SIGTERM, then SIGKILL); this process
 * exiting kills it; and the runtime itself exits when its parent is gone (--parent-pid),
 * which covers a SIGKILLed Node.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { atProcessEnd } from './cleanup.js';
import { LiaisonError } from './errors.js';
import { locatePython } from '../scripts/pyenv.mjs';

export interface SpawnOptions {
  /** Python interpreter; default LIAISON_PYTHON, else this install's venv (resolvePython). */
  python?: string;
  /** `cpu`, `cuda`, `cuda:1`; default LIAISON_DEVICE, else CUDA when present. */
  device?: string;
  /** How long to wait for the runtime to listen (importing torch takes seconds). */
  startTimeoutMs?: number;
  /** Extra environment for the runtime process. */
  env?: Record<string, string>;
  /**
   * torch's intra-op threads in the runtime (default: LIAISON_THREADS, else one per core this
   * process may use, a cgroup CPU quota included: torch alone counts the host's cores).
   * Several runtimes on one small machine run faster with 1 each than fighting for cores.
   */
  threads?: number;
  /** Forward the runtime's stderr to ours (default: only when LIAISON_LOG is set). */
  inheritStderr?: boolean;
  /**
   * The folder the runtime's file operations (`Model.loadFile` / `saveFile`, TensorBoard logs)
   * are confined to, passed as `--file-root`; a relative one is taken from this process's
   * working directory. Default: LIAISON_FILE_ROOT, else the working directory the runtime
   * starts in (this process's). Paths outside it, `..` or symlinks leading out, are refused.
   */
  fileRoot?: string;
  /**
   * The runtime's limits (docs/bridge.md, "Limits"), passed as flags; each unset one is the
   * runtime's default or its environment variable. The client honours what the runtime
   * reports back: a message over `maxMessageBytes` is refused here with E_LIMIT.
   */
  limits?: RuntimeLimitOptions;
}

export interface RuntimeLimitOptions {
  /** The largest message the runtime accepts, all frames together (`--max-message-bytes`; default 1 GiB). */
  maxMessageBytes?: number;
  /** The most sessions open at once (`--max-sessions`; default 64). */
  maxSessions?: number;
  /** A session unused this long is closed and its tensors freed (`--session-idle-s`; default 900, 0: never). */
  sessionIdleS?: number;
}

export interface RuntimeProcess {
  endpoint: string;
  child: ChildProcess;
  dir: string;
  ready: Record<string, unknown>;
  /** The last lines the runtime wrote to stderr (for error messages). */
  stderrTail(): string;
  /** Resolves with the exit description once the process has exited. */
  exited: Promise<string>;
  kill(): Promise<void>;
}

/** The package root: where package.json and python-runtime/ live (src or dist). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const pj = join(dir, 'package.json');
    if (existsSync(pj) && existsSync(join(dir, 'python-runtime'))) {
      try {
        if (JSON.parse(readFileSync(pj, 'utf8')).name === 'liaison') return dir;
      } catch { /* keep walking */ }
    }
    dir = dirname(dir);
  }
  throw new LiaisonError('E_SPAWN', 'cannot find the liaison package root (package.json next to python-runtime/)');
}

/**
 * The interpreter the runtime runs on: `explicit`, else LIAISON_PYTHON, else this install's
 * venv — a checkout's own .venv, or for the package installed as a dependency the shared venv
 * its installer recorded. scripts/pyenv.mjs decides, for the installer and for this alike.
 */
export function resolvePython(explicit?: string): string {
  if (explicit) return explicit;
  const { python, found, fix } = locatePython(packageRoot());
  if (found) return python;
  throw new LiaisonError('E_SPAWN', `no Python environment (${python} is missing): ${fix}`);
}

/** Environment that lets any interpreter import the runtime from this checkout. */
export function runtimeEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const rt = resolve(packageRoot(), 'python-runtime');
  return { ...process.env, PYTHONPATH: [rt, process.env.PYTHONPATH].filter(Boolean).join(delimiter), PYTHONUNBUFFERED: '1', ...extra };
}

const live = new Map<ChildProcess, string>(); // child -> its private folder
let exitHook = false;

/** A private (0700) temporary folder and the ipc:// endpoint of a runtime socket in it. */
export function privateEndpoint(): { dir: string; endpoint: string } {
  const dir = mkdtempSync(join(tmpdir(), 'liaison-'));
  return { dir, endpoint: `ipc://${join(dir, 'rt.sock')}` };
}

/**
 * Take ownership of a runtime process and its private folder: if this process ends first
 * (exit, or SIGINT/SIGTERM/SIGHUP without a handler of the program's: bridge/cleanup.ts),
 * the child is SIGKILLed and the folder removed (there is no event loop left to see it die,
 * so this is done synchronously). `exited` resolves with how the child ended, once
 * its folder is gone; `stop()` sends SIGTERM, SIGKILL after 3 s, and waits for the end.
 */
export function own(child: ChildProcess, dir: string): { exited: Promise<string>; stop(): Promise<void> } {
  live.set(child, dir);
  if (!exitHook) {
    exitHook = true;
    atProcessEnd(() => {
      for (const [c, d] of live) {
        c.kill('SIGKILL');
        rmSync(d, { recursive: true, force: true });
      }
    });
  }
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  const exited = new Promise<string>((res) => {
    const done = (code: number | null, signal: NodeJS.Signals | null) => {
      live.delete(child);
      rmSync(dir, { recursive: true, force: true });
      res(signal ? `was killed by ${signal}` : `exited with code ${code}`);
    };
    if (gone()) done(child.exitCode, child.signalCode);
    else child.once('exit', done);
  });
  const stop = async (): Promise<void> => {
    if (!gone()) child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 3000);
    await exited;
    clearTimeout(t);
  };
  return { exited, stop };
}

/** `limits` as the runtime's flags; the runtime checks the values and says what is wrong. */
export function limitArgs(limits: RuntimeLimitOptions = {}): string[] {
  const flags: [keyof RuntimeLimitOptions, string][] = [['maxMessageBytes', '--max-message-bytes'], ['maxSessions', '--max-sessions'], ['sessionIdleS', '--session-idle-s']];
  return flags.flatMap(([k, flag]) => (limits[k] === undefined ? [] : [flag, String(limits[k])]));
}

export async function spawnRuntime(opts: SpawnOptions = {}): Promise<RuntimeProcess> {
  const python = resolvePython(opts.python);
  const { dir, endpoint } = privateEndpoint();
  const args = ['-m', 'liaison_runtime', '--endpoint', endpoint, '--parent-pid', String(process.pid)];
  if (opts.device) args.push('--device', opts.device);
  if (opts.threads) args.push('--threads', String(opts.threads));
  if (opts.fileRoot !== undefined) args.push('--file-root', resolve(opts.fileRoot));
  args.push(...limitArgs(opts.limits));
  const child = spawn(python, args, { env: runtimeEnv(opts.env), stdio: ['ignore', 'pipe', 'pipe'] });
  const { exited, stop } = own(child, dir);

  const tail: string[] = [];
  const forward = opts.inheritStderr ?? Boolean(process.env.LIAISON_LOG);
  child.stderr!.setEncoding('utf8').on('data', (s: string) => {
    if (forward) process.stderr.write(s);
    tail.push(s);
    if (tail.length > 50) tail.splice(0, tail.length - 50);
  });
  const stderrTail = () => tail.join('').split('\n').slice(-20).join('\n').trim();

  const ready = await new Promise<Record<string, unknown>>((res, rej) => {
    let buf = '';
    const timeoutMs = opts.startTimeoutMs ?? 120_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rej(new LiaisonError('E_SPAWN', `the runtime did not start within ${timeoutMs} ms.\n${stderrTail()}`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      rej(new LiaisonError('E_SPAWN', `cannot start ${python}: ${e.message}`));
    });
    void exited.then((how) => {
      clearTimeout(timer);
      rej(new LiaisonError('E_SPAWN', `the runtime ${how} before it was ready.\n${stderrTail()}`));
    });
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      buf += s;
      const m = /^LIAISON_READY (.*)$/m.exec(buf);
      if (m) {
        clearTimeout(timer);
        res(JSON.parse(m[1]) as Record<string, unknown>);
      }
    });
  });

  return { endpoint, child, dir, ready, stderrTail, exited, kill: stop };
}
