/**
 * A session on one PyTorch runtime process: the {@link RuntimeOf} contract over one
 * connection. The handshake is here; the queue and transport (bridge/queue.ts), the
 * lifetimes (bridge/lifetimes.ts), the trace hook (bridge/trace.ts) and the factories
 * (bridge/factories.ts) each live in a module of their own.
 *
 * Ops are queued, not sent: `a.matmul(b).relu()` allocates handles on the client and
 * returns at once; see bridge/queue.ts for when the queue goes out.
 */
import { Connection, type ConnectionOptions } from './connection.js';
import type { ArgOf, GroupInfo, HatchProcess, OpRecord, OpRecorder, PythonHatch, PyObject, RuntimeInfo, RuntimeOf, RuntimeStats, TensorData } from './contract.js';
import type { DType, TypedArray } from './dtype.js';
import { bytesOf } from './group-parts.js';
import { LiaisonError } from './errors.js';
import { TensorFactories } from './factories.js';
import { spawnRuntime, type RuntimeProcess, type SpawnOptions } from './launcher.js';
import { Lifetimes, scope } from './lifetimes.js';
import { HandleRef } from './protocol.js';
import { OpQueue } from './queue.js';
import { inferShapes } from './shapes.js';
import { ShmDir } from './shm.js';
import { Tensor } from './tensor.js';
import { TraceHook, refused } from './trace.js';

type Arg = ArgOf<Tensor>;

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

/** @internal What a group (bridge/group.ts) shares with the session on each of its ranks. */
export interface GroupLink {
  /** The group: its tensors are handles in this session too (this rank's shard of each). */
  readonly group: object;
  /**
   * Handle ids for the group and all its rank sessions, from one counter: a group tensor
   * has the same id on every rank, and a rank's own tensors never take one of its ids.
   */
  nextHandle(): number;
}

/** dist_* ops that do not communicate: a rank session may queue them alone. */
const LOCAL_DIST = new Set(['dist_rank', 'dist_world_size', 'dist_shard']);

export class ProcessRuntime extends TensorFactories implements RuntimeOf<Tensor> {
  readonly info: RuntimeInfo;
  readonly endpoint: string;
  private readonly conn: Connection;
  private readonly proc?: RuntimeProcess;
  /** The pythonia escape hatch, when `startWithPython()` (bridge/python.ts) started this runtime. */
  readonly python?: PythonHatch;
  private readonly shm?: ShmDir;
  private readonly queue: OpQueue;
  private readonly lifetimes = new Lifetimes((id) => this.release(id));
  private readonly hook = new TraceHook();
  private nextHandle = 1;
  private link?: GroupLink;
  private closing: Promise<void> | null = null;

  private constructor(conn: Connection, info: RuntimeInfo, opts: RuntimeOptions, proc?: RuntimeProcess) {
    super();
    this.conn = conn;
    this.info = info;
    this.endpoint = conn.endpoint;
    this.proc = proc;
    this.python = (proc as Partial<HatchProcess> | undefined)?.python;
    if (info.shm && (opts.shm ?? true) && conn.endpoint.startsWith('ipc://')) this.shm = ShmDir.create() ?? undefined;
    this.queue = new OpQueue(conn, info.sid, {
      maxOps: opts.maxQueuedOps ?? 4096,
      maxBytes: opts.maxQueuedBytes ?? 64 << 20,
      shm: this.shm,
      shmMin: opts.shmMinBytes ?? 16 << 20, // measured crossover with the socket on one host
      shmReads: opts.shmReads ?? false,
    });
  }

  /** Spawn a local runtime (ipc://, private temp dir) and open a session on it. */
  static async start(opts: StartOptions = {}): Promise<ProcessRuntime> {
    const proc = await spawnRuntime(opts);
    try {
      return await ProcessRuntime.open(proc.endpoint, undefined, opts, proc);
    } catch (e) {
      await proc.kill();
      throw e;
    }
  }

  /** Connect to a runtime someone else started (a GPU box over tcp://, with its key). */
  static async connect(endpoint: string, opts: ConnectOptions = {}): Promise<ProcessRuntime> {
    const raw = opts.key ?? process.env.LIAISON_KEY;
    const key = typeof raw === 'string' ? Buffer.from(raw) : raw;
    return ProcessRuntime.open(endpoint, key, opts);
  }

  /** Open a session over a runtime process started by some other launcher. */
  static async open(endpoint: string, key: Uint8Array | undefined, opts: RuntimeOptions, proc?: RuntimeProcess): Promise<ProcessRuntime> {
    const conn = new Connection({ ...opts, endpoint, key });
    if (proc) {
      void proc.exited.then((how) => {
        conn.fail(new LiaisonError('E_DEAD', `the runtime process ${how}.${proc.stderrTail() ? `\nLast runtime output:\n${proc.stderrTail()}` : ''}`));
      });
    }
    const waitMs = opts.timeoutMs ?? 30_000;
    try {
      const { header } = await conn.request('hello', {}, [], waitMs);
      return new ProcessRuntime(conn, runtimeInfo(header), opts, proc);
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
    // Data a traced function uploads is a constant of the program: upload it now, for
    // real, and let the program capture it.
    if (this.hook.recorder) return this.hook.paused(() => this.tensor(data, shape, dtype));
    const { bytes, dt, shp } = bytesOf(data, shape, dtype);
    if (this.conn.closed) throw new LiaisonError('E_CLOSED', 'runtime is closed; cannot queue upload');
    return this.call('upload', [], { dtype: dt, shape: shp, ...this.queue.upload(bytes) }) as Tensor;
  }

  /** Queue any op of the runtime's op table; `outputs` results (a list when != 1). */
  call(op: string, args: readonly Arg[] = [], kw?: Record<string, Arg>, outputs = 1): Tensor | Tensor[] {
    if (this.conn.closed) throw new LiaisonError('E_CLOSED', `runtime is closed; cannot queue ${op}`);
    if (this.link) this.refuseGroupWork(op, args);
    const wireArgs = args.map((a) => this.wire(a)); // throws on a freed or foreign tensor before anything is made
    const wireKw = kw ? (this.wire(kw) as Record<string, unknown>) : undefined;
    const out: Tensor[] = [];
    const recorder = this.hook.recorder;
    for (let i = 0; i < outputs; i++) out.push(recorder ? this.symbolic(recorder) : this.newTensor());
    if (outputs > 0) inferShapes(op, args, kw, out, recorder);
    const rec: OpRecord = { op, out: out.map((t) => t.ref), args: wireArgs };
    if (wireKw) rec.kw = wireKw;
    if (recorder) recorder.record(rec);
    else this.queue.push(rec);
    return outputs === 1 ? out[0] : out;
  }

  /** A rank of a group must not wait alone in a collective its peers never join. */
  private refuseGroupWork(op: string, args: readonly Arg[]): void {
    const g = this.info.group!;
    if (g.worldSize > 1 && op.startsWith('dist_') && !LOCAL_DIST.has(op)) {
      throw new LiaisonError('E_ARG', `${op} queued on rank ${g.rank} alone: a collective runs on every rank of the group, so queue it on the group (the other ${g.worldSize - 1} rank(s) would never join it)`, { op });
    }
    if (op === 'program_run' && args[0] instanceof Tensor && args[0].rt === this.link!.group) {
      throw new LiaisonError('E_ARG', `program_run on rank ${g.rank} alone: the program was defined on the group, which runs it on every rank; define it on this rank (group.rank(${g.rank})) to run it here`, { op });
    }
  }

  private newTensor(): Tensor {
    const id = this.link ? this.link.nextHandle() : this.nextHandle++;
    if (id > 0xffffffff) throw new LiaisonError('E_INTERNAL', 'handle ids exhausted for this session; open a new Runtime');
    const t = new Tensor(this, id);
    this.lifetimes.track(t);
    return t;
  }

  private wire(a: Arg): unknown {
    if (a instanceof Tensor) {
      if (a.rt !== this && (!this.link || a.rt !== this.link.group)) throw new LiaisonError('E_HANDLE', `tensor #${a.id} belongs to another runtime session`);
      this.hook.checkOwn(a);
      if (a.freed) throw new LiaisonError('E_HANDLE', `tensor #${a.id} was freed`, { handle: a.id });
      const bad = this.queue.poison(a.id);
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

  // ---------------------------------------------------------------- tracing (bridge/trace.ts)

  /**
   * @internal sdk/program.ts: run `fn` with ops recorded into `recorder`. `fn` must be
   * synchronous, so nothing else can queue ops on this runtime meanwhile.
   */
  recording<T>(recorder: OpRecorder, fn: () => T): T {
    return this.hook.recording(recorder, fn);
  }

  /** @internal Whether a trace is recording this runtime's ops right now. */
  get recordingNow(): boolean {
    return this.hook.recorder !== null;
  }

  /** @internal The recorder of the trace running now (sdk/program.ts marks groups in it), or null. */
  get activeRecorder(): OpRecorder | null {
    return this.hook.recorder;
  }

  /** @internal A tensor that exists only inside the program `recorder` traces. */
  symbolic(recorder: OpRecorder): Tensor {
    const t = new Tensor(this, this.link ? this.link.nextHandle() : this.nextHandle++);
    t.traced = recorder;
    return t;
  }

  // ---------------------------------------------------------------- values out

  /** @internal Tensor.data(): queue a read in the current batch. */
  read(t: Tensor): Promise<TensorData> {
    if (this.hook.recorder || t.traced) return refused(this.hook.error(`reads the value of tensor #${t.id}`, t));
    const ref = this.handleOf(t);
    return ref instanceof HandleRef ? this.queue.read(ref) : ref;
  }

  /** @internal Tensor.info(): dtype, shape and device without the data. */
  meta(t: Tensor): Promise<Record<string, unknown>> {
    if (this.hook.recorder || t.traced) return refused(this.hook.error(`reads the shape of tensor #${t.id}`, t));
    const ref = this.handleOf(t);
    return ref instanceof HandleRef ? this.queue.meta(ref) : ref;
  }

  /** `t`'s handle, or a rejected promise saying why it cannot be read: a read fails as a rejection, never a throw. */
  private handleOf(t: Tensor): HandleRef | Promise<never> {
    try {
      return this.wire(t) as HandleRef;
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Send whatever is queued and wait until the runtime has run it all. */
  flush(): Promise<void> {
    if (this.hook.recorder) return refused(this.hook.error('calls flush()'));
    return this.queue.flush();
  }

  // ---------------------------------------------------------------- lifetimes (bridge/lifetimes.ts)

  /** @internal */
  release(id: number): void {
    this.queue.free(id);
  }

  /** @internal Tensor.free() */
  freeTensor(t: Tensor): void {
    if (t.traced) return; // lives in its program, not in the session
    this.lifetimes.untrack(t);
    this.release(t.id);
  }

  /**
   * Run `fn`; every tensor created inside and not returned (directly, or inside a
   * returned array or object) is freed when it ends. Nested scopes hand returned tensors
   * to the enclosing scope. `t.keep()` exempts a tensor.
   */
  scope<T>(fn: () => Promise<T> | T): Promise<T> {
    return scope(fn);
  }

  // ---------------------------------------------------------------- the session

  /** Runtime-side counts: sessions, live objects, ops run. */
  async stats(): Promise<RuntimeStats> {
    await this.flush();
    const { header } = await this.conn.request('ping');
    return header.stats as RuntimeStats;
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

  // ---------------------------------------------------------------- as a rank of a group

  /**
   * @internal bridge/group.ts: make this session rank `info.group.rank` of `link.group`,
   * before it makes any tensor. `onSend` runs whenever this session's queue sends.
   */
  joinGroup(link: GroupLink, onSend: () => void): void {
    if (!this.info.group) throw new LiaisonError('E_GROUP', `the runtime at ${this.endpoint} is not a rank of a group (its hello reported no group)`);
    this.link = link;
    this.queue.onSend = onSend;
  }

  /** @internal bridge/group.ts: the op queue, which a group fills with the ops it fans out. */
  get opQueue(): OpQueue {
    return this.queue;
  }

  /** @internal bridge/group.ts: fail every pending request with `e` (a group's fault) and stop. */
  failWith(e: LiaisonError): void {
    this.conn.fail(e);
  }
}

/** The `hello` reply as {@link RuntimeInfo}: the group fields in camelCase. */
function runtimeInfo(header: Record<string, unknown>): RuntimeInfo {
  const info = { ...header } as unknown as RuntimeInfo;
  const g = header.group as Record<string, unknown> | undefined;
  if (g && typeof g === 'object') {
    const group: GroupInfo = {
      rank: g.rank as number, worldSize: g.world_size as number, localRank: g.local_rank as number,
      backend: g.backend as string, endpoints: (g.endpoints as string[] | undefined) ?? [],
    };
    info.group = group;
  } else delete info.group;
  return info;
}
