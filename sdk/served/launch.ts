/**
 * Start a PyTorch script that calls `liaison_runtime.serve(...)` and wait until it serves
 * (Service.launch in sdk/served.ts). Its endpoint is chosen here — an ipc socket in a
 * private (0700) temp folder, given to the script as LIAISON_SERVE_ENDPOINT — and its
 * `LIAISON_SERVING {json}` line on stderr says it is bound. The script's own output passes
 * through (`onOutput`), and it is killed when this process ends.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LiaisonError, resolvePython, type RuntimeProcess, runtimeEnv } from '../../bridge/index.js';
import { atProcessEnd } from '../../bridge/cleanup.js';

export interface LaunchOptions {
  /** Arguments after the script's path. */
  args?: readonly string[];
  /** The interpreter (default: the package's Python environment, as the runtime's launcher finds it). */
  python?: string;
  cwd?: string;
  /** Extra environment variables for the script. */
  env?: Record<string, string>;
  /**
   * Seconds the script's `serve()` waits for this side's `ready()` (LIAISON_SERVE_WAIT; default
   * 300): install the plugins, then call `svc.ready()`. 0: the script does not wait.
   */
  waitForClientS?: number;
  /** How long to wait for the script to serve (default 120 s: importing torch on a loaded machine). */
  startTimeoutMs?: number;
  /** Each line the script prints (stdout and stderr); default: dropped, the last lines kept for errors. */
  onOutput?: (line: string, stream: 'stdout' | 'stderr') => void;
}

/** The launched script, as the bridge's runtime sees a process it started. */
export interface LaunchedScript extends RuntimeProcess {
  /** What the script's serve() reported: endpoint, models, pid, device. */
  serving: { endpoint: string; models: string[]; pid: number; device: string };
}

const MARK = 'LIAISON_SERVING ';

export async function launchScript(script: string, opts: LaunchOptions = {}): Promise<LaunchedScript> {
  const dir = mkdtempSync(join(tmpdir(), 'liaison-served-')); // mode 0700: only this user can connect
  const endpoint = `ipc://${join(dir, 'serve.sock')}`;
  const child: ChildProcess = spawn(resolvePython(opts.python), [script, ...(opts.args ?? [])], {
    cwd: opts.cwd,
    env: runtimeEnv({ LIAISON_SERVE_ENDPOINT: endpoint, ...(opts.waitForClientS === 0 ? {} : { LIAISON_SERVE_WAIT: String(opts.waitForClientS ?? 300) }), ...(opts.env ?? {}) }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const tail: string[] = [];
  const gone = () => child.exitCode !== null || child.signalCode !== null;
  atProcessEnd(() => {
    if (!gone()) child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });
  const exited = new Promise<string>((res) => {
    child.once('exit', (code, signal) => {
      rmSync(dir, { recursive: true, force: true });
      res(signal ? `was killed by ${signal}` : `exited with code ${code}`);
    });
  });
  let serving: LaunchedScript['serving'] | null = null;
  let onServing: (() => void) | null = null;
  const lines = (stream: 'stdout' | 'stderr') => {
    let buf = '';
    return (chunk: Buffer) => {
      buf += chunk.toString('utf8');
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (stream === 'stderr' && line.startsWith(MARK) && !serving) {
          serving = JSON.parse(line.slice(MARK.length));
          onServing?.();
          continue;
        }
        tail.push(line);
        if (tail.length > 40) tail.shift();
        opts.onOutput?.(line, stream);
      }
    };
  };
  child.stdout!.on('data', lines('stdout'));
  child.stderr!.on('data', lines('stderr'));
  const kill = async () => {
    if (!gone()) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
  };
  const wait = opts.startTimeoutMs ?? 120_000;
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new LiaisonError('E_TIMEOUT', `${script} did not serve within ${wait} ms (no LIAISON_SERVING line from liaison_runtime.serve)${tail.length ? `\nLast output:\n${tail.join('\n')}` : ''}`)), wait);
      onServing = () => { clearTimeout(timer); resolve(); };
      void exited.then((how) => {
        clearTimeout(timer);
        reject(new LiaisonError('E_SPAWN', `${script} ${how} before it served${tail.length ? `\nLast output:\n${tail.join('\n')}` : ''}`));
      });
      child.once('error', (e) => { clearTimeout(timer); reject(new LiaisonError('E_SPAWN', `cannot start ${script}: ${e.message}`, { cause: e })); });
    });
  } catch (e) {
    await kill();
    throw e;
  }
  const s = serving as unknown as LaunchedScript['serving'];
  return { endpoint: s.endpoint, child, dir, ready: s, serving: s, stderrTail: () => tail.join('\n'), exited, kill };
}
