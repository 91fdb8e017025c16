// Shared by the end-to-end suites: a real runtime process per test file.
import { spawn, type ChildProcess } from 'node:child_process';
import { Runtime, type StartOptions } from '../bridge/index.js';
import { resolvePython, runtimeEnv } from '../bridge/launcher.js';

export async function startRuntime(opts: StartOptions = {}): Promise<Runtime> {
  return Runtime.start({ device: 'cpu', ...opts });
}

/** A runtime on tcp:// started by hand, as on a GPU box. Resolves once it listens. */
export async function startTcpRuntime(key: string | null, extraArgs: string[] = [], host = '127.0.0.1'): Promise<{ child: ChildProcess; endpoint: string; output: () => string }> {
  const args = ['-m', 'liaison_runtime', '--endpoint', `tcp://${host}:0`, '--device', 'cpu', '--parent-pid', String(process.pid), ...extraArgs];
  const env = runtimeEnv(key === null ? {} : { LIAISON_KEY: key });
  if (key === null) delete env.LIAISON_KEY;
  const child = spawn(resolvePython(), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const endpoint = await new Promise<string>((res, rej) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /^LIAISON_READY (.*)$/m.exec(buf);
      if (m) res(JSON.parse(m[1]).endpoint as string);
    });
    child.on('exit', (code) => rej(new Error(`runtime exited with ${code}: ${out}`)));
  });
  return { child, endpoint, output: () => out };
}

export function exitOf(child: ChildProcess): Promise<number | null> {
  return new Promise((res) => {
    if (child.exitCode !== null || child.signalCode !== null) res(child.exitCode);
    else child.on('exit', (c) => res(c));
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
