/**
 * Shared pieces of the bridge benchmarks: statistics, the result record and its two
 * printed forms (table, JSON line), and the baseline processes (the raw pyzmq echo server,
 * the plain-torch loop), which are always killed, whatever happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Dealer } from 'zeromq';
import { resolvePython } from '../bridge/launcher.js';
import type { Dataset } from '../sdk/data.js';
import type { Trainer } from '../sdk/trainer.js';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
export const BASELINES = join(BENCH_DIR, 'baselines');

/** One benchmark's outcome. `value` is Liaison's figure, `baseline` the baseline's. */
export interface BenchRecord {
  name: string;
  value: number;
  baseline: number;
  ratio: number;
  unit: string;
  target: string;
}

/** A record plus what the table shows besides it. */
export interface BenchResult extends BenchRecord {
  /** Whether the target is met (printed, never enforced). */
  met: boolean;
  /** A short remark: sample sizes, a speed-up factor, the spread. */
  note: string;
}

export interface BenchOptions {
  /** Tiny sizes and few repetitions: checks that the benchmark runs, measures nothing. */
  quick: boolean;
  /** Progress lines go here (stderr by default; a test passes a no-op). */
  log: (line: string) => void;
  /** Whether a benchmark of the group was asked for (a group skips the others). */
  wants: (name: string) => boolean;
}

export type Bench = (opts: BenchOptions) => Promise<BenchResult[]>;

// ------------------------------------------------------------------ statistics

export function median(xs: readonly number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export function quantile(xs: readonly number[], q: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.round(q * (s.length - 1))))];
}

/** Microseconds since some fixed point, as a float. */
export function nowUs(): number {
  return Number(process.hrtime.bigint()) / 1000;
}

/** A number rounded to `sig` significant digits (JSON stays readable). */
export function round(x: number, sig = 4): number {
  if (!Number.isFinite(x) || x === 0) return x;
  return Number(x.toPrecision(sig));
}

export function result(r: Omit<BenchResult, 'ratio'> & { ratio?: number }): BenchResult {
  return { ...r, value: round(r.value), baseline: round(r.baseline), ratio: round(r.ratio ?? r.value / r.baseline) };
}

// ------------------------------------------------------------------ output

/** The one machine-readable line per benchmark (docs/architecture.md, "Benchmarks"), keys in this order. */
export function jsonLine(r: BenchRecord): string {
  const f = (x: number) => (Number.isFinite(x) ? JSON.stringify(x) : 'null');
  return `{"name": ${JSON.stringify(r.name)}, "value": ${f(r.value)}, "baseline": ${f(r.baseline)}, ` +
    `"ratio": ${f(r.ratio)}, "unit": ${JSON.stringify(r.unit)}, "target": ${JSON.stringify(r.target)}}`;
}

export function table(results: readonly BenchResult[]): string {
  const head = ['benchmark', 'liaison', 'baseline', 'ratio', 'unit', 'target', 'met', 'note'];
  const rows = results.map((r) => [
    r.name, fmt(r.value), fmt(r.baseline), `${fmt(r.ratio)}x`, r.unit, r.target, r.met ? 'yes' : 'NO', r.note,
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(w[i]))).join('  ').trimEnd();
  return [line(head), line(w.map((n) => '-'.repeat(n))), ...rows.map(line)].join('\n');
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a >= 1e5) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(0);
  if (a >= 1) return x.toFixed(2);
  return x.toPrecision(3);
}

// ------------------------------------------------------------------ processes

const live = new Set<ChildProcess>();
const dirs = new Set<string>();
let hooked = false;
function killAllOnExit(): void {
  if (hooked) return;
  hooked = true;
  // Even a crash must not leave a process or a socket folder behind.
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
}

/** A private temporary folder, removed by `removeDir` or, failing that, at exit. */
export function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'liaison-bench-'));
  dirs.add(d);
  killAllOnExit();
  return d;
}

export function removeDir(d: string): void {
  rmSync(d, { recursive: true, force: true });
  dirs.delete(d);
}

export function python(): string {
  return resolvePython();
}

/** Spawn `python script args`, tracked so that it dies with us. */
export function spawnPython(script: string, args: string[], stdin: 'ignore' | 'pipe' = 'ignore', env: Record<string, string> = {}): ChildProcess {
  const child = spawn(python(), [script, ...args], { stdio: [stdin, 'pipe', 'pipe'], env: { ...process.env, PYTHONUNBUFFERED: '1', ...env } });
  live.add(child);
  killAllOnExit();
  child.on('exit', () => live.delete(child));
  return child;
}

/**
 * A baseline script in serve mode (`baselines/*.py --serve`): it answers each line written
 * with `ask` by one JSON line, read with `next`. Stopped by `defer` when the bench ends.
 */
export function serveBaseline(script: string, args: string[], defer: (f: () => unknown) => void, env: Record<string, string> = {}, launcher: readonly string[] = []): {
  ask(line: string): void;
  next<T = Record<string, number | boolean>>(): Promise<T>;
} {
  // with a launcher (`-m torch.distributed.run …`) the script is its argument
  const py = launcher.length
    ? spawnPython(launcher[0], [...launcher.slice(1), join(BASELINES, script), ...args], 'pipe', env)
    : spawnPython(join(BASELINES, script), args, 'pipe', env);
  defer(() => stop(py));
  let err = '';
  py.stderr!.setEncoding('utf8').on('data', (s: string) => { err = (err + s).slice(-4000); });
  const lines = createInterface({ input: py.stdout! })[Symbol.asyncIterator]();
  return {
    ask: (line) => { py.stdin!.write(`${line}\n`); },
    next: async <T>() => {
      // a launcher may pass other lines through (torchrun's warnings): the protocol's lines are JSON objects
      for (;;) {
        const r = await lines.next();
        if (r.done) throw new Error(`${script} exited early.\n${err.trim()}`);
        const l = String(r.value).trim();
        if (l.startsWith('{')) return JSON.parse(l) as T;
      }
    },
  };
}

/** A served baseline as {@link serveBaseline} returns it. */
export type ServedBaseline = ReturnType<typeof serveBaseline>;

/**
 * The epoch-timing protocol shared by the benchmarks that pit a Liaison training loop
 * against a plain PyTorch one (baselines/digits_loop.py's stdin protocol): the baseline's
 * `{"ready": true}` line, `warmup` epochs of each, then `rounds` alternations of `perRound`
 * epochs of each (so both see the same machine load). `sdkEpochs(n)` runs n epochs of
 * ours and returns each one's seconds and the last one's loss. Both sides train the same
 * weights on the same batches, so their last losses must agree to 1e-4: if not, it was not
 * the same training and the figures would mean nothing (an Error naming `name`).
 */
export async function alternateEpochs(name: string, baseline: ServedBaseline, sdkEpochs: (n: number) => Promise<{ seconds: number[]; loss: number }>, o: { warmup: number; rounds: number; perRound: number }): Promise<{ sdk: number[]; py: number[]; sdkLoss: number; pyLoss: number }> {
  const nextLine = () => baseline.next<{ epoch_s: number[]; loss: number }>();
  await nextLine(); // {"ready": true}
  baseline.ask(String(o.warmup));
  await nextLine();
  await sdkEpochs(o.warmup);
  const sdk: number[] = [], py: number[] = [];
  let sdkLoss = NaN, pyLoss = NaN;
  for (let r = 0; r < o.rounds; r++) {
    const h = await sdkEpochs(o.perRound);
    sdk.push(...h.seconds);
    sdkLoss = h.loss;
    baseline.ask(String(o.perRound));
    const m = await nextLine();
    py.push(...m.epoch_s);
    pyLoss = m.loss;
  }
  if (!(Math.abs(sdkLoss - pyLoss) <= 1e-4 * Math.max(1, Math.abs(pyLoss)))) {
    throw new Error(`${name}: Liaison and the PyTorch loop disagree (last epoch loss ${sdkLoss} vs ${pyLoss}): not the same training`);
  }
  return { sdk, py, sdkLoss, pyLoss };
}

/** `alternateEpochs`' `sdkEpochs` for a Trainer: `n` epochs of `fit(train)`. */
export function trainerEpochs(trainer: Trainer, train: Dataset): (n: number) => Promise<{ seconds: number[]; loss: number }> {
  return async (n) => {
    const h = await trainer.fit(train, { epochs: n });
    return { seconds: h.map((e) => e.seconds), loss: h[h.length - 1].loss };
  };
}

/** Resolves with the first stdout line matching `re`; rejects if the process exits first. */
export function waitForLine(child: ChildProcess, re: RegExp, what: string, timeoutMs = 60_000): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (s: string) => { err = (err + s).slice(-4000); });
    const rl = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => fail(`${what} did not start within ${timeoutMs} ms`), timeoutMs);
    const fail = (msg: string) => {
      clearTimeout(timer);
      rl.close();
      reject(new Error(`${msg}${err ? `\n${err.trim()}` : ''}`));
    };
    child.once('exit', (code, sig) => fail(`${what} exited (${sig ?? code}) before it was ready`));
    rl.on('line', (l) => {
      const m = re.exec(l);
      if (m) {
        clearTimeout(timer);
        rl.close();
        resolve(m);
      }
    });
  });
}

/** Ask a child to stop (SIGTERM), then make sure (SIGKILL after 2 s). */
export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const gone = new Promise<void>((res) => child.once('exit', () => res()));
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 2000);
  await gone;
  clearTimeout(t);
}

/** The raw baseline: `baselines/raw_echo.py` on a private ipc:// socket. */
export interface EchoServer {
  endpoint: string;
  pid: number;
  close(): Promise<void>;
}

export async function startEcho(): Promise<EchoServer> {
  const dir = tempDir();
  const endpoint = `ipc://${join(dir, 'echo.sock')}`;
  const child = spawnPython(join(BASELINES, 'raw_echo.py'), [endpoint, '--parent-pid', String(process.pid)]);
  try {
    await waitForLine(child, /^ECHO_READY /, 'raw_echo.py');
  } catch (e) {
    await stop(child);
    removeDir(dir);
    throw e;
  }
  return {
    endpoint,
    pid: child.pid!,
    async close() {
      await stop(child);
      removeDir(dir);
    },
  };
}

/** A zeromq.js DEALER with the options the SDK's Connection uses. */
export function rawDealer(endpoint: string): Dealer {
  const sock = new Dealer({ linger: 0, sendHighWaterMark: 0, receiveHighWaterMark: 0 });
  sock.connect(endpoint);
  return sock;
}

/** Run `fn` with resources that are released however it ends (in reverse order). */
export async function using<T>(fn: (defer: (f: () => unknown) => void) => Promise<T>): Promise<T> {
  const stack: (() => unknown)[] = [];
  try {
    return await fn((f) => stack.push(f));
  } finally {
    for (const f of stack.reverse()) {
      try {
        await f();
      } catch {
        /* cleanup is best effort; the first error wins */
      }
    }
  }
}
