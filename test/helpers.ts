// Shared by the end-to-end suites: a real runtime process per test file.
import { spawn, type ChildProcess } from 'node:child_process';
import { Runtime, type StartOptions } from '../bridge/index.js';
import { resolvePython, runtimeEnv } from '../bridge/launcher.js';

export async function startRuntime(opts: StartOptions = {}): Promise<Runtime> {
  // one torch thread each: vitest runs two files at once on this 2-core machine, and pytest
  // may run beside them; runtimes fighting for cores made training tests 15-30x slower
  return Runtime.start({ device: 'cpu', threads: 1, ...opts });
}

/** A runtime on tcp:// started by hand, as on a GPU box. Resolves once it listens. */
export async function startTcpRuntime(key: string | null, extraArgs: string[] = [], host = '127.0.0.1'): Promise<{ child: ChildProcess; endpoint: string; output: () => string }> {
  const args = ['-m', 'liaison_runtime', '--endpoint', `tcp://${host}:0`, '--device', 'cpu', '--parent-pid', String(process.pid), '--threads', '1', ...extraArgs];
  const env = runtimeEnv(key === null ? {} : { LIAISON_KEY: key });
  if (key === null) delete env.LIAISON_KEY;
  const child = spawn(resolvePython(), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  let buf = '';
  const endpoint = await new Promise<string>((res, rej) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rej(new Error(`runtime did not start in 30 s; stdout: ${buf}; stderr: ${out}`));
    }, 30_000);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /^LIAISON_READY (.*)$/m.exec(buf);
      if (m) {
        clearTimeout(timer);
        res(JSON.parse(m[1]).endpoint as string);
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      rej(new Error(`runtime exited with ${code}: ${out}`));
    });
  });
  return { child, endpoint, output: () => out };
}

export function exitOf(child: ChildProcess, killAfterMs = 10_000): Promise<number | null> {
  return new Promise((res, rej) => {
    if (child.exitCode !== null || child.signalCode !== null) return res(child.exitCode);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      rej(new Error(`process ${child.pid} did not exit within ${killAfterMs} ms of being asked`));
    }, killAfterMs);
    child.on('exit', (c) => {
      clearTimeout(timer);
      res(c);
    });
  });
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Examples under test start their runtimes with one torch thread, as startRuntime does: vitest
 * runs files side by side and pytest may run beside them, and runtimes each sized to every core
 * fight over them (CI once saw a 12 s example take over 60 s).
 */
export const EXAMPLE_ENV = { LIAISON_THREADS: '1' };

/** Run `npx tsx <args>` as a user runs an example; resolves with its exit code and output. */
export function runExample(args: string[], env: Record<string, string> = {}, timeoutMs = 240_000): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('npx', ['tsx', ...args], { env: { ...process.env, ...EXAMPLE_ENV, ...env } });
    let out = '', err = '';
    child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`timed out; stdout: ${out}; stderr: ${err}`)); }, timeoutMs);
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, out, err }); });
  });
}

/**
 * The runtime's object count once garbage that earlier tests dropped has been collected and
 * its frees sent (vitest runs with --expose-gc). Count-based leak tests start from this:
 * otherwise a collection landing inside the test frees those objects there, and the count
 * moves for reasons the test is not about.
 */
export async function settledObjects(rt: Runtime): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  let last = -1;
  for (let i = 0; i < 20; i++) {
    gc?.();
    await new Promise((r) => setTimeout(r, 10));
    await rt.flush();
    const n = (await rt.stats()).objects;
    if (n === last) return n;
    last = n;
  }
  return last;
}
