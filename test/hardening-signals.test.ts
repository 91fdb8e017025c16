// Issue 9, item 7: a Node program killed by SIGINT, SIGTERM or SIGHUP leaves no /dev/shm
// folder, no private temp folder and no runtime behind, and still dies of that signal; a
// program with its own handler keeps its runtime and files until it exits.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { alive } from './helpers.js';

const CHILD = fileURLToPath(new URL('./fixtures/signal-child.ts', import.meta.url));
const TMP = mkdtempSync(join(tmpdir(), 'liaison-signals-'));
afterAll(() => rmSync(TMP, { recursive: true, force: true }));

interface Child {
  ready: Promise<{ shm: string; tmp: string; pid: number; total: number }>;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  output: () => string;
  kill: (sig: NodeJS.Signals) => void;
}

function startChild(tmp: string, args: string[] = []): Child {
  // TMPDIR: the launcher's private folder lands where the test can list it
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, ...args], {
    env: { ...process.env, TMPDIR: tmp },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.on('exit', (code, signal) => res({ code, signal }));
  });
  const ready = new Promise<{ shm: string; tmp: string; pid: number; total: number }>((res, rej) => {
    child.stdout!.on('data', () => {
      const m = /^READY (.*)$/m.exec(out);
      if (m) res(JSON.parse(m[1]));
    });
    void exit.then((e) => rej(new Error(`child ended before it was ready (${JSON.stringify(e)}):\n${out}`)));
  });
  return { ready, exit, output: () => out, kill: (sig) => child.kill(sig) };
}

async function gone(pid: number, withinMs = 15_000): Promise<boolean> {
  const until = Date.now() + withinMs;
  while (alive(pid) && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  return !alive(pid);
}

function leftovers(tmp: string): string[] {
  return readdirSync(tmp).filter((n) => n.startsWith('liaison-'));
}

describe('a program killed by a signal', () => {
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    it(`${sig}: cleans up and still dies of ${sig}`, async () => {
      const tmp = mkdtempSync(join(TMP, `${sig}-`));
      const child = startChild(tmp);
      const info = await child.ready;
      expect(info.total).toBe(5 << 20);
      expect(info.shm).toMatch(/^\/dev\/shm\/liaison-/);
      expect(existsSync(info.shm)).toBe(true);
      expect(existsSync(info.tmp)).toBe(true);
      expect(info.tmp.startsWith(tmp)).toBe(true);
      child.kill(sig);
      const how = await child.exit;
      expect(how, child.output()).toEqual({ code: null, signal: sig });
      expect(existsSync(info.shm)).toBe(false);
      expect(leftovers(tmp)).toEqual([]);
      expect(await gone(info.pid)).toBe(true);
    }, 120_000);
  }
});

describe('a program with its own handler', () => {
  it('keeps its runtime and files while it handles the signal, and cleans up when it exits', async () => {
    const tmp = mkdtempSync(join(TMP, 'own-'));
    const child = startChild(tmp, ['own-handler', 'SIGTERM']);
    const info = await child.ready;
    child.kill('SIGTERM');
    const how = await child.exit;
    expect(how, child.output()).toEqual({ code: 0, signal: null });
    const m = /^HANDLED (.*)$/m.exec(child.output());
    expect(m, child.output()).not.toBeNull();
    expect(JSON.parse(m![1])).toEqual({ shmThere: true, sum: 2 });
    expect(existsSync(info.shm)).toBe(false);
    expect(leftovers(tmp)).toEqual([]);
    expect(await gone(info.pid)).toBe(true);
  }, 120_000);
});
