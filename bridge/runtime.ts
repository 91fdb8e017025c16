/**
 * A session on a PyTorch runtime: the object a program holds.
 *
 * Ops are queued, not sent: `a.matmul(b).relu()` allocates handles on the client and
 * returns at once. The queue goes out as one `batch` request when a value is read, on
 * `flush()`, or when it grows past `maxQueuedOps` / `maxQueuedBytes`. Reads issued in
 * the same tick share one batch, so a training step costs one round trip.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { Connection, type ConnectionOptions } from './connection.js';
import { type DType, ITEMSIZE, type TypedArray, dtypeOf, isDType, toBytes, viewAs } from './dtype.js';
import { LiaisonError } from './errors.js';
import { spawnRuntime, type RuntimeProcess, type SpawnOptions } from './launcher.js';
import { HandleRef } from './protocol.js';
import type { HatchProcess, PythonHatch, PyObject } from './python.js';
import { inferShapes } from './shapes.js';
import { ShmDir } from './shm.js';
import { Tensor, type TensorData } from './tensor.js';

export interface RuntimeInfo {
  sid: string;
  device: string;
  cuda: boolean;
  torch: string;
  runtime: string;
  pid: number;
  /** torch's intra-op threads in the runtime: `SpawnOptions.threads`, else LIAISON_THREADS, else the cores it may use (a cgroup CPU quota counts). */
  threads: number;
  ops: string[];
  shm: boolean;
}

export interface RuntimeOptions extends Omit<ConnectionOptions, 'endpoint' | 'key'> {
  /** Send the queue once this many ops are waiting (default 4096). */
  maxQueuedOps?: number;
  /** Send the queue once this many upload bytes are waiting (default 64 MiB). */
  maxQueuedBytes?: number;
  /**
   * Upload tensors of at least `shmMinBytes` (16 MiB) through /dev/shm on one host
   * (default on). Node has no mmap, so each direction costs a copy through tmpfs: measured
   * here, that beats the socket for uploads from about 16 MiB, but not for downloads into
   * fresh arrays, so reads use the socket unless `shmReads` is set (docs/bridge.md).
   */
  shm?: boolean;
  shmReads?: boolean;
  shmMinBytes?: number;
}

export interface StartOptions extends RuntimeOptions, SpawnOptions {}

export interface ConnectOptions extends RuntimeOptions {
  /** HMAC key shared with the runtime (required on tcp://); default LIAISON_KEY. */
  key?: Uint8Array | string;
}

/** A value an op accepts: a tensor, a number, a bool, a string, or arrays of these. */
export type Arg = Tensor | number | boolean | string | null | undefined | readonly Arg[] | { [k: string]: Arg };

/** One queued op as the wire carries it (docs/protocol.md §4). */
export interface OpRecord { op: string; out: HandleRef[]; args: unknown[]; kw?: Record<string, unknown> }

/**
 * @internal What sdk/program.ts installs while it traces a program: ops go to `record`
 * instead of the queue, their results are symbolic tensors that exist only inside the
 * program, and anything that would need a value fails with E_TRACE.
 */
export interface OpRecorder {
  /** The program's name, for errors. */
  readonly label: string;
  record(rec: OpRecord): void;
  /** A trace-time error: kept and thrown when the traced function returns. */
  fail(e: LiaisonError): void;
}
interface Waiter<T> { resolve: (v: T) => void; reject: (e: Error) => void }

const scopes = new AsyncLocalStorage<Set<Tensor>>();

export class Runtime {
  readonly info: RuntimeInfo;
  readonly endpoint: string;
  private readonly conn: Connection;
  private readonly proc?: RuntimeProcess;
  /** The pythonia escape hatch, when `startWithPython()` (bridge/python.ts) started this runtime. */
  readonly python?: PythonHatch;
  private readonly shm?: ShmDir;
  private readonly shmMin: number;
  private readonly shmReads: boolean;
  private readonly maxOps: number;
  private readonly maxBytes: number;
  private nextHandle = 1;
  private ops: OpRecord[] = [];
  private bufs: Uint8Array[] = [];
  private queuedBytes = 0;
  private frees: HandleRef[] = [];
  private reads: { ref: HandleRef; w: Waiter<TensorData> }[] = [];
  private metas: { ref: HandleRef; w: Waiter<Record<string, unknown>> }[] = [];
  private scheduled = false;
  private last: Promise<unknown> = Promise.resolve();
  private deferred: LiaisonError | null = null;
  private poisoned = new Map<number, LiaisonError>();
  private closing: Promise<void> | null = null;
  private readonly finalizer = new FinalizationRegistry<number>((id) => this.release(id));
  private recorder: OpRecorder | null = null;

  private constructor(conn: Connection, info: RuntimeInfo, opts: RuntimeOptions, proc?: RuntimeProcess) {
    this.conn = conn;
    this.info = info;
    this.endpoint = conn.endpoint;
    this.proc = proc;
    this.python = (proc as Partial<HatchProcess> | undefined)?.python;
    this.maxOps = opts.maxQueuedOps ?? 4096;
    this.maxBytes = opts.maxQueuedBytes ?? 64 << 20;
    this.shmMin = opts.shmMinBytes ?? 16 << 20; // measured crossover with the socket on one host
    this.shmReads = opts.shmReads ?? false;
    if (info.shm && (opts.shm ?? true) && conn.endpoint.startsWith('ipc://')) this.shm = ShmDir.create() ?? undefined;
  }

  /** Spawn a local runtime (ipc://, private temp dir) and open a session on it. */
  static async start(opts: StartOptions = {}): Promise<Runtime> {
    const proc = await spawnRuntime(opts);
    try {
      return await Runtime.open(proc.endpoint, undefined, opts, proc);
    } catch (e) {
      await proc.kill();
      throw e;
    }
  }

  /** Connect to a runtime someone else started (a GPU box over tcp://, with its key). */
  static async connect(endpoint: string, opts: ConnectOptions = {}): Promise<Runtime> {
    const raw = opts.key ?? process.env.LIAISON_KEY;
    const key = typeof raw === 'string' ? Buffer.from(raw) : raw;
    return Runtime.open(endpoint, key, opts);
  }

  /** Open a session over a runtime process started by some other launcher. */
  static async open(endpoint: string, key: Uint8Array | undefined, opts: RuntimeOptions, proc?: RuntimeProcess): Promise<Runtime> {
    const conn = new Connection({ ...opts, endpoint, key });
    if (proc) {
      void proc.exited.then((how) => {
        conn.fail(new LiaisonError('E_DEAD', `the runtime process ${how}.${proc.stderrTail() ? `\nLast runtime output:\n${proc.stderrTail()}` : ''}`));
      });
    }
    const waitMs = opts.timeoutMs ?? 30_000;
    try {
      const { header } = await conn.request('hello', {}, [], waitMs);
      return new Runtime(conn, header as unknown as RuntimeInfo, opts, proc);
    } catch (e) {
      conn.close();
      if (e instanceof LiaisonError && e.code === 'E_TIMEOUT') {
        // ZeroMQ connects lazily and silently: a wrong address only shows as silence
        throw new LiaisonError('E_TIMEOUT', `no runtime answered at ${endpoint} within ${waitMs} ms: is it running, is the endpoint right, and can this machine reach it?`, { cause: e });
      }
      throw e;
    }
  }

  get closed(): boolean {
    return this.conn.closed;
  }

  // ---------------------------------------------------------------- tensors in

  /**
   * Upload a typed array (or plain numbers) as a tensor of `shape`.
   * The array is read when the batch is sent; do not change it until a later read or
   * `flush()` resolves (large arrays on one host are copied into shared memory at once).
   */
  tensor(data: TypedArray | readonly number[], shape?: readonly number[], dtype?: DType): Tensor {
    if (this.recorder) {
      // Data a traced function uploads is a constant of the program: upload it now, for
      // real, and let the program capture it.
      const rec = this.recorder;
      this.recorder = null;
      try { return this.tensor(data, shape, dtype); } finally { this.recorder = rec; }
    }
    const dt: DType = dtype ?? (Array.isArray(data) ? 'f32' : dtypeOf(data as TypedArray));
    if (!isDType(dt)) throw new LiaisonError('E_DTYPE', `unknown dtype ${String(dt)}`);
    const bytes = toBytes(data, dt);
    const numel = bytes.byteLength / ITEMSIZE[dt];
    const shp = shape ? [...shape] : [numel];
    const want = shp.reduce((a, b) => a * b, 1);
    if (want !== numel) throw new LiaisonError('E_SHAPE', `shape [${shp}] holds ${want} elements, the data has ${numel}`);
    const kw: Record<string, Arg> = { dtype: dt, shape: shp };
    const shmPath = this.shm && bytes.byteLength >= this.shmMin ? this.shm.tryWrite(bytes) : null;
    if (shmPath !== null) {
      kw.shm = shmPath;
    } else {
      kw.frame = this.bufs.length;
      this.bufs.push(bytes);
      this.queuedBytes += bytes.byteLength;
    }
    return this.call('upload', [], kw) as Tensor;
  }

  /** Queue any op of the runtime's op table; `outputs` results (a list when != 1). */
  call(op: string, args: readonly Arg[] = [], kw?: Record<string, Arg>, outputs = 1): Tensor | Tensor[] {
    if (this.conn.closed) throw new LiaisonError('E_CLOSED', `runtime is closed; cannot queue ${op}`);
    const wireArgs = args.map((a) => this.wire(a)); // throws on a freed or foreign tensor before anything is made
    const wireKw = kw ? (this.wire(kw) as Record<string, unknown>) : undefined;
    const out: Tensor[] = [];
    const recorder = this.recorder;
    for (let i = 0; i < outputs; i++) out.push(recorder ? this.symbolic(recorder) : this.newTensor());
    if (outputs > 0) inferShapes(op, args, kw, out, recorder);
    const rec: OpRecord = { op, out: out.map((t) => t.ref), args: wireArgs };
    if (wireKw) rec.kw = wireKw;
    if (recorder) {
      recorder.record(rec);
      return outputs === 1 ? out[0] : out;
    }
    this.ops.push(rec);
    if (this.ops.length >= this.maxOps || this.queuedBytes >= this.maxBytes) this.send();
    return outputs === 1 ? out[0] : out;
  }

  private newTensor(): Tensor {
    const id = this.nextHandle++;
    if (id > 0xffffffff) throw new LiaisonError('E_INTERNAL', 'handle ids exhausted for this session; open a new Runtime');
    const t = new Tensor(this, id);
    this.finalizer.register(t, id, t);
    scopes.getStore()?.add(t);
    return t;
  }

  /**
   * @internal sdk/program.ts: run `fn` with ops recorded into `recorder`. `fn` must be
   * synchronous, so nothing else can queue ops on this runtime meanwhile.
   */
  recording<T>(recorder: OpRecorder, fn: () => T): T {
    if (this.recorder) throw new LiaisonError('E_TRACE', `cannot trace program '${recorder.label}' inside program '${this.recorder.label}'`);
    this.recorder = recorder;
    try {
      return fn();
    } finally {
      this.recorder = null;
    }
  }

  /** @internal Whether a trace is recording this runtime's ops right now. */
  get recordingNow(): boolean {
    return this.recorder !== null;
  }

  /** @internal The recorder of the trace running now (sdk/program.ts marks groups in it), or null. */
  get activeRecorder(): OpRecorder | null {
    return this.recorder;
  }

  /** @internal A tensor that exists only inside the program `recorder` traces. */
  symbolic(recorder: OpRecorder): Tensor {
    const t = new Tensor(this, this.nextHandle++);
    t.traced = recorder;
    return t;
  }

  private traceError(what: string, t?: Tensor): LiaisonError {
    const rec = this.recorder ?? (t?.traced as OpRecorder | undefined);
    const e = new LiaisonError('E_TRACE', `program '${rec?.label}': ${what}. A program runs inside the runtime without coming back to TypeScript, so its code cannot depend on tensor values: use where(), masks, topk or sort instead of an if on a value`);
    this.recorder?.fail(e);
    return e;
  }

  private wire(a: Arg): unknown {
    if (a instanceof Tensor) {
      if (a.rt !== this) throw new LiaisonError('E_HANDLE', `tensor #${a.id} belongs to another runtime session`);
      if (a.traced && a.traced !== this.recorder) {
        const e = new LiaisonError('E_TRACE', `tensor #${a.id} belongs to the trace of program '${(a.traced as OpRecorder).label}' and exists only inside it; use the program's outputs instead`);
        this.recorder?.fail(e);
        throw e;
      }
      if (a.freed) throw new LiaisonError('E_HANDLE', `tensor #${a.id} was freed`, { handle: a.id });
      const bad = this.poisoned.get(a.id);
      if (bad) throw new LiaisonError('E_HANDLE', `tensor #${a.id} does not exist: the op that makes it failed (${bad.message})`, { handle: a.id, cause: bad });
      return a.ref;
    }
    if (Array.isArray(a)) return a.map((x) => this.wire(x));
    if (a instanceof HandleRef) return a;
    if (a !== null && typeof a === 'object') {
      const o: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(a)) if (v !== undefined) o[k] = this.wire(v as Arg);
      return o;
    }
    return a;
  }

  /**
   * Hand a Python object built through `rt.python` (a tensor, an `nn.Module`, …) to the
   * runtime: resolves with a handle to it, once pythonia has stashed it. The object is
   * shared, not copied (a tensor is moved to the runtime's device if it is elsewhere).
   */
  async adopt(obj: PyObject): Promise<Tensor> {
    if (!this.python) throw new LiaisonError('E_ARG', 'adopt: this runtime has no pythonia hatch; start it with startWithPython()');
    const key = await this.python.stash(obj);
    return this.call('adopt', [], { key }) as Tensor;
  }

  // ---------------------------------------------------------------- tensors made in the runtime

  zeros(shape: readonly number[], dtype: DType = 'f32'): Tensor { return this.call('zeros', [shape], { dtype }) as Tensor; }
  ones(shape: readonly number[], dtype: DType = 'f32'): Tensor { return this.call('ones', [shape], { dtype }) as Tensor; }
  full(shape: readonly number[], value: number, dtype: DType = 'f32'): Tensor { return this.call('full', [shape, value], { dtype }) as Tensor; }
  /** `arange(end)` or `arange(start, end, step)`. */
  arange(start: number, end?: number, step = 1, dtype?: DType): Tensor { return this.call('arange', [start], { end, step, dtype }) as Tensor; }
  linspace(start: number, end: number, steps: number): Tensor { return this.call('linspace', [start, end, steps]) as Tensor; }
  eye(n: number, m?: number): Tensor { return this.call('eye', [n], { m }) as Tensor; }
  /** Uniform [0, 1). With `seed`, the same values every time; without, the session's stream. */
  rand(shape: readonly number[], opts: { seed?: number; dtype?: DType } = {}): Tensor { return this.call('rand', [shape], opts) as Tensor; }
  /** Standard normal. With `seed`, the same values every time; without, the session's stream. */
  randn(shape: readonly number[], opts: { seed?: number; dtype?: DType } = {}): Tensor { return this.call('randn', [shape], opts) as Tensor; }
  randint(low: number, high: number, shape: readonly number[], opts: { seed?: number } = {}): Tensor { return this.call('randint', [low, high, shape], opts) as Tensor; }
  /** Reseed the session's random stream. */
  manualSeed(seed: number): void { this.call('manual_seed', [seed], undefined, 0); }
  /** `cond ? a : b`, elementwise. */
  where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor { return this.call('where', [cond, a, b]) as Tensor; }
  cat(tensors: readonly Tensor[], dim = 0): Tensor { return this.call('cat', [tensors], { dim }) as Tensor; }
  stack(tensors: readonly Tensor[], dim = 0): Tensor { return this.call('stack', [tensors], { dim }) as Tensor; }
  /** `einsum('bij,bjk->bik', a, b)`. */
  einsum(equation: string, ...operands: Tensor[]): Tensor { return this.call('einsum', [equation, operands]) as Tensor; }

  // ---------------------------------------------------------------- values out

  /** @internal Tensor.data(): queue a read in the current batch. */
  read(t: Tensor): Promise<TensorData> {
    if (this.recorder || t.traced) return refused(this.traceError(`reads the value of tensor #${t.id}`, t));
    return new Promise((resolve, reject) => {
      this.reads.push({ ref: this.wire(t) as HandleRef, w: { resolve, reject } });
      this.schedule();
    });
  }

  /** @internal Tensor.info(): dtype, shape and device without the data. */
  meta(t: Tensor): Promise<Record<string, unknown>> {
    if (this.recorder || t.traced) return refused(this.traceError(`reads the shape of tensor #${t.id}`, t));
    return new Promise((resolve, reject) => {
      this.metas.push({ ref: this.wire(t) as HandleRef, w: { resolve, reject } });
      this.schedule();
    });
  }

  /** Send whatever is queued and wait until the runtime has run it all. */
  flush(): Promise<void> {
    if (this.recorder) return refused(this.traceError('calls flush()'));
    return this.flushQueued();
  }

  private async flushQueued(): Promise<void> {
    this.send();
    await this.last;
    this.throwDeferred();
  }

  private throwDeferred(): void {
    const e = this.deferred;
    if (e) {
      this.deferred = null;
      throw e;
    }
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.send();
    });
  }

  private send(): void {
    if (!this.ops.length && !this.reads.length && !this.metas.length && !this.frees.length) return;
    const ops = this.ops, bufs = this.bufs, reads = this.reads, metas = this.metas, frees = this.frees;
    this.ops = []; this.bufs = []; this.reads = []; this.metas = []; this.frees = []; this.queuedBytes = 0;
    const fields: Record<string, unknown> = { sid: this.info.sid, ops };
    if (reads.length) fields.reads = reads.map((r) => r.ref);
    if (metas.length) fields.meta = metas.map((m) => m.ref);
    if (frees.length) fields.free = frees;
    if (this.shm && this.shmReads && reads.length) fields.shm = { dir: this.shm.dir, min: this.shmMin };
    // A read in this batch reports an earlier auto-flush's failure instead of a value
    // computed after it.
    const earlier = this.deferred;
    this.deferred = null;
    const p = this.conn.request('batch', fields, bufs).then(
      ({ header, buffers }) => {
        if (earlier) throw earlier;
        const rs = (header.reads as { dtype: DType; shape: number[]; frame?: number; shm?: string }[] | undefined) ?? [];
        rs.forEach((m, i) => {
          try {
            const bytes = m.shm !== undefined ? this.shm!.take(m.shm) : buffers[m.frame!];
            reads[i].w.resolve({ dtype: m.dtype, shape: m.shape, data: viewAs(bytes, m.dtype) });
          } catch (e) {
            reads[i].w.reject(e as Error);
          }
        });
        const ms = (header.meta as Record<string, unknown>[] | undefined) ?? [];
        ms.forEach((m, i) => metas[i].w.resolve(m));
      },
      (e: LiaisonError) => {
        if (e.code === 'E_HANDLE' && e.handle !== undefined && this.poisoned.has(e.handle)) {
          e = new LiaisonError('E_HANDLE', `${e.message}; it was never made because: ${this.poisoned.get(e.handle)!.message}`, { ...e, traceback: e.pythonTraceback, cause: this.poisoned.get(e.handle) });
        }
        if (e.index !== undefined) {
          for (let i = e.index; i < ops.length; i++) for (const h of ops[i].out) this.poisoned.set(h.id, e);
        }
        throw e;
      },
    ).catch((e: LiaisonError) => {
      for (const r of reads) r.w.reject(e);
      for (const m of metas) m.w.reject(e);
      if (!reads.length && !metas.length) this.deferred ??= e; // nobody awaits this batch: report at the next flush
    });
    this.last = p;
  }

  // ---------------------------------------------------------------- lifetimes

  /** @internal */
  release(id: number): void {
    this.poisoned.delete(id);
    if (this.conn.closed) return;
    this.frees.push(new HandleRef(id));
    if (this.frees.length >= 1024) this.schedule();
  }

  /** @internal Tensor.free() */
  freeTensor(t: Tensor): void {
    if (t.traced) return; // lives in its program, not in the session
    this.finalizer.unregister(t);
    this.release(t.id);
  }

  /**
   * Run `fn`; every tensor created inside and not returned (directly, or inside a
   * returned array or object) is freed when it ends. Nested scopes hand returned tensors
   * to the enclosing scope. `t.keep()` exempts a tensor.
   */
  async scope<T>(fn: () => Promise<T> | T): Promise<T> {
    const made = new Set<Tensor>();
    const keep = new Set<Tensor>();
    try {
      const result = await scopes.run(made, fn);
      collectTensors(result, keep, 2);
      return result;
    } finally {
      // on a throw too: nothing made inside is returned then
      const parent = scopes.getStore();
      for (const t of made) {
        if (keep.has(t) || t.kept) parent?.add(t);
        else if (!t.freed) t.free();
      }
    }
  }

  /** Runtime-side counts: sessions, live objects, ops run. */
  async stats(): Promise<{ sessions: number; objects: number; ops_run: number }> {
    await this.flush();
    const { header } = await this.conn.request('ping');
    return header.stats as { sessions: number; objects: number; ops_run: number };
  }

  /** One round trip with nothing to do (liveness, latency). */
  async ping(): Promise<void> {
    await this.conn.request('ping');
  }

  /** Close the session; a runtime this object started is stopped too. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        if (!this.conn.closed) {
          await this.flush().catch(() => undefined);
          await this.conn.request('close', { sid: this.info.sid }, [], 5000).catch(() => undefined);
          if (this.proc) await this.conn.request('shutdown', {}, [], 2000).catch(() => undefined);
        }
      } finally {
        this.conn.close();
        this.shm?.remove();
        if (this.proc) await this.proc.kill();
      }
    })();
    return this.closing;
  }

  /** @internal for tests: the runtime process, when this object started it. */
  get process(): RuntimeProcess | undefined {
    return this.proc;
  }
}

/**
 * A rejection already reported elsewhere (a trace error, thrown by trace() itself): the
 * promise still rejects for whoever awaits it, but is not an unhandled rejection if nobody does.
 */
function refused<T>(e: Error): Promise<T> {
  const p = Promise.reject(e);
  p.catch(() => undefined);
  return p;
}

function collectTensors(v: unknown, into: Set<Tensor>, depth: number): void {
  if (v instanceof Tensor) into.add(v);
  else if (depth <= 0 || v === null || typeof v !== 'object') return;
  else if (Array.isArray(v)) for (const x of v) collectTensors(x, into, depth - 1);
  else if (isPlainObject(v)) for (const x of Object.values(v)) collectTensors(x, into, depth - 1);
  // anything else (a typed array of results, a Map, a class instance) holds no tensor we track
}

function isPlainObject(v: object): boolean {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}
