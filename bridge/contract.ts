/**
 * The contract between the SDK and whatever runs its ops: the {@link RuntimeOf} interface,
 * the values ops take, the wire form of a queued op, and the trace hook.
 *
 * `ProcessRuntime` (bridge/process-runtime.ts) implements it over one runtime process;
 * `Group` (bridge/group.ts) over the N ranks of a torch.distributed group, as one
 * controller driving SPMD tensors: a tensor made through the group has the same handle id
 * on every rank, each rank holding its own value of it (its shard). The SDK never needs to
 * know which it holds (`info.group` tells it when it cares). How a group serves each member:
 *
 * - **SPMD, on every rank** — `call`, `tensor` (the same data to each), the factories,
 *   `manualSeed`, `freeTensor`, `symbolic` and programs (`program_define`/`program_run` are
 *   ops): one op record, the same handles, queued on every rank in the same order, so the
 *   collectives (`dist_*` ops) meet;
 * - **rank 0** — `read`, `meta`: a tensor's value and shape as rank 0 holds them
 *   (`group.readEach` reads every rank's);
 * - **fan out** — `flush`, `close`, `ping`, `stats` (summed, collectives included): sent to
 *   every rank and awaited together; `adopt` is refused (no pythonia hatch on a group);
 * - **local** — `scope`, `recording`, `recordingNow`, `activeRecorder`: client-side
 *   bookkeeping that a group keeps once, for all its ranks;
 * - **describe** — `info`, `endpoint`: rank 0's, with `info.group.worldSize` the group's
 *   size; `closed` whether the group is closed; `python` and `process` undefined.
 *
 * Rank-addressed work goes through `group.rank(r)`, a `ProcessRuntime` on rank r alone.
 *
 * This module imports no implementation, so tensor.ts and every runtime can depend on it
 * without depending on each other. The interface is generic in the tensor type only for
 * that reason: `Runtime` (bridge/runtime.ts) is `RuntimeOf<Tensor>`.
 */
import type { ArrayOf, DType, TypedArray } from './dtype.js';
import type { LiaisonError } from './errors.js';
import type { RuntimeProcess } from './launcher.js';
import type { HandleRef } from './protocol.js';
import type { Py } from 'pythonia';

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
  /** Present on a rank of a group started under torchrun (`--group`); a `Group` reports rank 0's with its world size. */
  group?: GroupInfo;
}

/** A rank's place in its group, from the `hello` reply (docs/protocol.md §3). */
export interface GroupInfo {
  rank: number;
  worldSize: number;
  /** The rank's index on its own machine (its CUDA device when it has one). */
  localRank: number;
  /** torch.distributed's backend: `gloo` on CPU, `nccl` on CUDA. */
  backend: string;
  /** Every rank's endpoint, in rank order, as the ranks advertise them. */
  endpoints: string[];
}

/** Runtime-side counts (a group sums its ranks'). */
export interface RuntimeStats {
  sessions: number;
  objects: number;
  ops_run: number;
  /** The collectives this runtime ran and the bytes they sent (0 on a plain runtime; absent on an older one). */
  collectives?: { calls: number; bytes: number };
}

export interface TensorData<D extends DType = DType> {
  dtype: D;
  shape: number[];
  data: ArrayOf[D];
}

export interface TensorInfo {
  dtype: DType;
  shape: number[];
  device: string;
}

/** A value an op accepts: a tensor, a number, a bool, a string, or arrays of these. */
export type ArgOf<T> = T | number | boolean | string | null | undefined | readonly ArgOf<T>[] | { [k: string]: ArgOf<T> };

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

/** A pythonia proxy to a Python object. pythonia types every Python value as `any`. */
export type PyObject = any;

/** The pythonia escape hatch of a runtime started by `startWithPython()` (bridge/python.ts). */
export interface PythonHatch {
  /** Import a module in the runtime's interpreter (pythonia's `python(name)`). */
  import(module: string): Promise<PyObject>;
  /** pythonia's `py` template tag: evaluate a Python expression, e.g. `` py`${a} @ ${b}` ``. */
  readonly py: Py;
  /**
   * Keep a Python object for one `adopt` op; resolves with its key. `rt.adopt(obj)` does
   * this and the op together.
   */
  stash(obj: PyObject): Promise<number>;
  /** The interpreter's process id (pythonia's child; it hosts the runtime too). */
  readonly pid: number;
  /** True once the runtime was closed (pythonia has exited). */
  readonly closed: boolean;
}

/** A runtime process that carries the hatch; a runtime picks `python` up from it. */
export interface HatchProcess extends RuntimeProcess {
  python: PythonHatch;
}

/** The session contract: what the SDK, plugins and `Tensor` may ask of a runtime. */
export interface RuntimeOf<T> {
  readonly info: RuntimeInfo;
  readonly endpoint: string;
  readonly closed: boolean;
  /** The pythonia escape hatch, when `startWithPython()` started this runtime. */
  readonly python?: PythonHatch;
  /** @internal for tests: the runtime process, when this object started it. */
  readonly process: RuntimeProcess | undefined;

  /** Upload a typed array (or plain numbers) as a tensor of `shape`. */
  tensor(data: TypedArray | readonly number[], shape?: readonly number[], dtype?: DType): T;
  /** Queue any op of the runtime's op table; `outputs` results (a list when != 1). */
  call(op: string, args?: readonly ArgOf<T>[], kw?: Record<string, ArgOf<T>>, outputs?: number): T | T[];
  /** Hand a Python object built through `rt.python` to the runtime. */
  adopt(obj: PyObject): Promise<T>;

  zeros(shape: readonly number[], dtype?: DType): T;
  ones(shape: readonly number[], dtype?: DType): T;
  full(shape: readonly number[], value: number, dtype?: DType): T;
  arange(start: number, end?: number, step?: number, dtype?: DType): T;
  linspace(start: number, end: number, steps: number): T;
  eye(n: number, m?: number): T;
  rand(shape: readonly number[], opts?: { seed?: number; dtype?: DType }): T;
  randn(shape: readonly number[], opts?: { seed?: number; dtype?: DType }): T;
  randint(low: number, high: number, shape: readonly number[], opts?: { seed?: number }): T;
  manualSeed(seed: number): void;
  where(cond: T, a: T | number, b: T | number): T;
  cat(tensors: readonly T[], dim?: number): T;
  stack(tensors: readonly T[], dim?: number): T;
  einsum(equation: string, ...operands: T[]): T;

  /** @internal Tensor.data(): queue a read in the current batch. */
  read(t: T): Promise<TensorData>;
  /** @internal Tensor.info(): dtype, shape and device without the data. */
  meta(t: T): Promise<Record<string, unknown>>;
  /** Send whatever is queued and wait until the runtime has run it all. */
  flush(): Promise<void>;

  /** @internal Tensor.free() */
  freeTensor(t: T): void;
  /** Run `fn`; tensors made inside and not returned are freed when it ends. */
  scope<R>(fn: () => Promise<R> | R): Promise<R>;

  /** @internal sdk/program.ts: run `fn` with ops recorded into `recorder`. */
  recording<R>(recorder: OpRecorder, fn: () => R): R;
  /** @internal Whether a trace is recording this runtime's ops right now. */
  readonly recordingNow: boolean;
  /** @internal The recorder of the trace running now, or null. */
  readonly activeRecorder: OpRecorder | null;
  /** @internal A tensor that exists only inside the program `recorder` traces. */
  symbolic(recorder: OpRecorder): T;

  /** Runtime-side counts: sessions, live objects, ops run. */
  stats(): Promise<RuntimeStats>;
  /** One round trip with nothing to do (liveness, latency). */
  ping(): Promise<void>;
  /** Close the session; a runtime this object started is stopped too. */
  close(): Promise<void>;
}
