/**
 * The pythonia escape hatch (docs/python-hatch.md): an embedded runtime whose interpreter
 * the program can also reach through pythonia, to build Python objects (a custom
 * `nn.Module`, a model loaded from a local folder) and hand them to the runtime by
 * reference.
 *
 * ```ts
 * const rt = await startWithPython();
 * const torch = await rt.python.import('torch');
 * const lin = await rt.adopt(await (await torch.nn).Linear(3, 2));
 * const y = rt.call('module_forward', [lin, [rt.tensor([1, 2, 3], [1, 3])]]) as Tensor;
 * ```
 *
 * pythonia starts the interpreter (its `$PYTHON_BIN`, set here to the runtime's Python);
 * `liaison_runtime.embedded` then runs the ordinary server on a thread of it. Control calls
 * go through pythonia; tensors only ever travel over the runtime's ZeroMQ socket. pythonia
 * is loaded on first use, so programs that never open the hatch never load it.
 */
import type { ChildProcess } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { delimiter, isAbsolute, join, resolve as resolvePath, sep } from 'node:path';
import type { Py, Python } from 'pythonia';
import type { HatchProcess, PythonHatch, PyObject } from './contract.js';
import { LiaisonError } from './errors.js';
import { own, privateEndpoint, resolvePython, runtimeEnv, type SpawnOptions } from './launcher.js';
import { ProcessRuntime, type RuntimeOptions } from './process-runtime.js';

export type { HatchProcess, PythonHatch, PyObject } from './contract.js';

/** Options: those of `Runtime.start` but `inheritStderr` (pythonia always shares our stdio) and `limits` (the embedded runtime, one program's own, keeps the defaults). */
export interface PythonStartOptions extends RuntimeOptions, Omit<SpawnOptions, 'inheritStderr' | 'limits'> {}

/** A runtime started with the hatch: `python` is always there. */
export type PythonRuntime = ProcessRuntime & { readonly python: PythonHatch };

interface Pythonia {
  python: Python & ((module: string) => Promise<PyObject>);
  py: Py;
  com: { proc: ChildProcess | null };
}

interface PythoniaBridge {
  loop?: ReturnType<typeof setInterval>;
  runTasks: () => void;
  freeable: unknown[];
}

/**
 * pythonia keeps one bridge and one interpreter per Node process. After a hatch has been
 * open, a restarted interpreter would reuse the object ids that the first one's proxies
 * still name, so the hatch opens once per process ('open' → 'spent'); a start that failed
 * before any proxy reached the program leaves it 'fresh'.
 */
let state: 'fresh' | 'starting' | 'open' | 'spent' = 'fresh';
let loaded = false;
let exitedBefore = false; // python.exit() ran: pythonia's GC loop is stopped
/** Our proxies from every start: kept alive so that no id of a failed one is ever freed in a later interpreter. */
const retained: PyObject[] = [];

export async function startWithPython(opts: PythonStartOptions = {}): Promise<PythonRuntime> {
  if (state !== 'fresh') {
    throw new LiaisonError('E_SPAWN', state === 'spent'
      ? 'the pythonia hatch opens once per Node process (pythonia keeps one global bridge, and a restarted one would reuse the object ids of the first); use Runtime.start() for further runtimes'
      : 'a pythonia hatch is already open or starting in this Node process (pythonia keeps one global bridge); close it first');
  }
  state = 'starting';
  let ok = false;
  try {
    const rt = await start(opts);
    ok = true;
    return rt;
  } finally {
    if (!ok) state = 'fresh';
  }
}

async function start(opts: PythonStartOptions): Promise<PythonRuntime> {
  const python = findExecutable(resolvePython(opts.python));
  const bridge = (globalThis as { __pythonBridge?: PythoniaBridge }).__pythonBridge;
  if (bridge && !loaded) {
    throw new LiaisonError('E_SPAWN', 'pythonia is already in use in this Node process; the hatch needs to start its interpreter itself (pythonia keeps one global bridge)');
  }
  const env = runtimeEnv(opts.env);
  const vars: Record<string, string> = { ...opts.env, PYTHON_BIN: python, PYTHONPATH: env.PYTHONPATH!, PYTHONUNBUFFERED: '1' };
  // the hatch's interpreter has no command line of ours: its policy reads the root from here
  if (opts.fileRoot !== undefined) vars.LIAISON_FILE_ROOT = resolvePath(opts.fileRoot);

  // pythonia spawns its interpreter with our environment while it loads (and again in
  // `python()` after an exit): set what it needs for exactly that long.
  let pyia: Pythonia;
  let embP: Promise<PyObject>;
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    const mod = await import('pythonia').catch((e: unknown) => {
      throw new LiaisonError('E_SPAWN', `cannot load pythonia (an npm dependency of liaison): ${(e as Error).message}`, { cause: e });
    });
    pyia = (mod as unknown as { default: Pythonia }).default;
    if (exitedBefore && bridge) {
      bridge.freeable = [];
      bridge.loop = setInterval(bridge.runTasks, 1000); // python.exit() stopped pythonia's GC loop
      exitedBefore = false;
    }
    loaded = true;
    embP = pyia.python('liaison_runtime.embedded'); // (re)starts the interpreter when none runs
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
  const child = pyia.com.proc!;
  child.once('error', () => undefined); // reported through `exited` instead
  const { dir, endpoint } = privateEndpoint();
  const { exited, stop } = own(child, dir);

  let emb: PyObject;
  let closed = false;
  const gone = (): boolean => closed || child.exitCode !== null || child.signalCode !== null;
  const kill = async (): Promise<void> => {
    if (!closed) {
      closed = true;
      if (emb !== undefined && child.exitCode === null && child.signalCode === null) {
        await within(Promise.resolve(emb.stop()), 7000).catch(() => undefined);
      }
      if (pyia.com.proc === child) {
        pyia.python.exit(); // SIGTERM, and pythonia's timers stop
        exitedBefore = true;
      }
    }
    await stop();
  };

  let ready: Record<string, unknown>;
  try {
    const timeoutMs = opts.startTimeoutMs ?? 120_000;
    const died = exited.then((how) => { throw new LiaisonError('E_SPAWN', `the pythonia interpreter (${python}) ${how} before the runtime was ready; its output is above`); });
    const boot = (async () => {
      emb = await embP.catch((e) => {
        throw new LiaisonError('E_SPAWN', `the pythonia interpreter (${python}) cannot import liaison_runtime: ${pyMessage(e)}`);
      });
      retained.push(emb);
      const info = await Promise.resolve(emb.start(endpoint, opts.device ?? null)).catch((e: unknown) => {
        throw new LiaisonError('E_SPAWN', `the embedded runtime did not start: ${pyMessage(e)}`);
      });
      retained.push(info);
      return (await info.valueOf()) as Record<string, unknown>;
    })();
    ready = await within(Promise.race([boot, died]), timeoutMs, `the embedded runtime did not start within ${timeoutMs} ms`);
  } catch (e) {
    await kill();
    throw e;
  }

  const hatch: PythonHatch = {
    pid: child.pid!,
    py: pyia.py,
    get closed() { return gone(); },
    import(module: string): Promise<PyObject> {
      // pythonia would quietly start a new interpreter after an exit
      if (gone()) return Promise.reject(new LiaisonError('E_CLOSED', `runtime is closed; cannot import ${module} through pythonia`));
      return pyia.python(module);
    },
    async stash(obj: PyObject): Promise<number> {
      if (gone()) throw new LiaisonError('E_CLOSED', 'runtime is closed; cannot hand it a Python object');
      try {
        return (await emb.stash(obj)) as number;
      } catch (e) {
        throw new LiaisonError('E_ARG', `adopt: ${pyMessage(e)}`, { cause: e });
      }
    },
  };
  const proc: HatchProcess = { endpoint: String(ready.endpoint), child, dir, ready, stderrTail: () => '', exited, kill, python: hatch };
  let rt: ProcessRuntime;
  try {
    rt = await ProcessRuntime.open(proc.endpoint, undefined, opts, proc);
  } catch (e) {
    await kill();
    throw e;
  }
  // From here the program holds proxies into this interpreter: no second one in this process.
  state = 'open';
  void exited.then(() => { state = 'spent'; });
  return rt as PythonRuntime;
}

/** The interpreter's path: pythonia cannot report a missing one (its spawn error would go unhandled). */
function findExecutable(cmd: string): string {
  const runnable = (p: string): boolean => {
    try { accessSync(p, constants.X_OK); return true; } catch { return false; }
  };
  if (isAbsolute(cmd) || cmd.includes(sep)) {
    if (runnable(cmd)) return cmd;
  } else {
    for (const d of (process.env.PATH ?? '').split(delimiter)) if (d && runnable(join(d, cmd))) return join(d, cmd);
  }
  throw new LiaisonError('E_SPAWN', `no Python interpreter at ${cmd}`);
}

/** The Python error line of a pythonia exception (its message is empty; the stack has it). */
function pyMessage(e: unknown): string {
  const text = e instanceof Error ? e.stack || e.message : String(e);
  const lines = text.replace(/\x1b\[[0-9;]*m/g, '').trim().split('\n');
  return (lines.pop() ?? '').replace(/^(\*\*\* JS \*\*\*|🌉)\s*/u, '').trim() || 'unknown Python error';
}

function within<T>(p: Promise<T>, ms: number, message = `no answer from the pythonia interpreter within ${ms} ms`): Promise<T> {
  let t: ReturnType<typeof setTimeout>;
  return Promise.race([
    p,
    new Promise<never>((_, rej) => { t = setTimeout(() => rej(new LiaisonError('E_SPAWN', message)), ms); }),
  ]).finally(() => clearTimeout(t));
}
