/**
 * A group of runtimes on torch.distributed, driven as one runtime: one controller, SPMD
 * tensors (as Monarch's mesh tensors). `torchrun` starts N ranks (bridge/group-launcher.ts);
 * the group holds a session on each and implements {@link RuntimeOf}, so the SDK and the
 * plugins run on it unchanged.
 *
 * A tensor made through the group has the same handle id on every rank, each rank holding
 * its own value (usually the same: replicated parameters; different where the user made it
 * so: {@link Group.shard}, {@link Group.tensorEach}, a `dist_shard` op). Every op is one record
 * queued on every rank in the same order, so collectives (`dist_*` ops) meet; a program
 * traced on the group is stored and replayed on every rank. Reads give rank 0's value,
 * {@link Group.readEach} every rank's. {@link Group.rank} is rank r's own session, for work
 * on one rank (bridge/contract.ts says how each member is served).
 *
 * ```ts
 * const g = await Group.start({ ranks: 2 });
 * const x = g.shard(new Float32Array([1, 2, 3, 4]), [4]);   // rank 0: [1, 2], rank 1: [3, 4]
 * const s = g.call('dist_all_reduce', [x.sum()]) as Tensor;  // 10 on every rank
 * await g.close();
 * ```
 */
import type { ArgOf, OpRecorder, RuntimeInfo, RuntimeOf, RuntimeStats, TensorData } from './contract.js';
import { type DType, type TypedArray, dtypeOf } from './dtype.js';
import { LiaisonError } from './errors.js';
import { TensorFactories } from './factories.js';
import { type Data, bytesOf, splitRows } from './group-parts.js';
import { CLOSE_FLUSH_MS, GroupWatch, openRanks, rankError, settlesWithin, type GroupStartOptions } from './group-ranks.js';
import { spawnGroup, type GroupProcess } from './group-launcher.js';
import { Lifetimes, scope } from './lifetimes.js';
import { HandleRef } from './protocol.js';
import type { ConnectOptions, ProcessRuntime } from './process-runtime.js';
import { inferShapes } from './shapes.js';
import { Tensor } from './tensor.js';
import { TraceHook, refused } from './trace.js';

export type { GroupStartOptions } from './group-ranks.js';
type Arg = ArgOf<Tensor>;

export class Group extends TensorFactories implements RuntimeOf<Tensor> {
  /** Rank 0's, with `group.worldSize` the group's size. */
  readonly info: RuntimeInfo;
  /** Rank 0's endpoint: `Group.connect` needs only this one. */
  readonly endpoint: string;
  /** The session on each rank, in rank order. */
  readonly ranks: readonly ProcessRuntime[];
  /** The world size. */
  readonly size: number;
  readonly python = undefined;
  private readonly watch: GroupWatch;
  private readonly lifetimes = new Lifetimes((id) => this.release(id));
  private readonly hook = new TraceHook();
  private nextId = 1;
  private sendingAll = false;
  private closing: Promise<void> | null = null;

  private constructor(ranks: ProcessRuntime[], watch: GroupWatch) {
    super();
    this.ranks = ranks;
    this.size = ranks.length;
    this.watch = watch;
    const first = ranks[0].info;
    this.info = { ...first, group: { ...first.group!, worldSize: this.size } };
    this.endpoint = ranks[0].endpoint;
    const link = { group: this, nextHandle: () => this.allocate() };
    for (const r of ranks) {
      r.joinGroup(link, () => this.sendAll());
      r.opQueue.translate = (e) => watch.translate(e);
    }
  }

  /**
   * Start a local group of `ranks` runtimes under torchrun (gloo on CPU, NCCL with one GPU
   * per rank) and connect to every rank. Each rank gets `threads` torch threads (default:
   * this machine's cores divided among its ranks).
   */
  static async start(opts: GroupStartOptions): Promise<Group> {
    const n = opts?.ranks;
    if (!Number.isInteger(n) || n < 1) throw new LiaisonError('E_ARG', `Group.start: ranks must be an integer >= 1, got ${JSON.stringify(n)}`, { param: 'ranks' });
    const nnodes = opts.nnodes ?? 1;
    if (!Number.isInteger(nnodes) || nnodes < 1 || n % nnodes !== 0) throw new LiaisonError('E_ARG', `Group.start: nnodes must be an integer >= 1 dividing ranks (${n}), got ${JSON.stringify(opts.nnodes)}`, { param: 'nnodes' });
    if (nnodes > 1 && !opts.rdzvEndpoint) throw new LiaisonError('E_ARG', 'Group.start: a group on several machines needs rdzvEndpoint (host:port of the c10d rendezvous)', { param: 'rdzvEndpoint' });
    const proc = await spawnGroup(opts);
    try {
      // several machines: the ranks bound tcp; the first local rank tells where all are
      const endpoints = nnodes === 1 ? proc.ranks.map((r) => r.endpoint) : undefined;
      return await Group.open(endpoints ?? proc.ranks[0].endpoint, opts, n, proc);
    } catch (e) {
      await proc.kill(500);
      throw e;
    }
  }

  /**
   * Connect to a group someone started with torchrun (`--group`): `rank0Endpoint` is rank
   * 0's (any rank's works); the others' are in its handshake. tcp needs the key.
   */
  static connect(rank0Endpoint: string, opts: ConnectOptions = {}): Promise<Group> {
    return Group.open(rank0Endpoint, opts);
  }

  /**
   * `LIAISON_GROUP=N` starts a local group of N ranks; `LIAISON_GROUP_ENDPOINT=tcp://…`
   * connects to one (its key from LIAISON_KEY); neither: null.
   */
  static async fromEnv(opts: Omit<GroupStartOptions, 'ranks'> & ConnectOptions = {}): Promise<Group | null> {
    const ep = process.env.LIAISON_GROUP_ENDPOINT;
    if (ep) return Group.connect(ep, opts);
    const raw = process.env.LIAISON_GROUP;
    if (raw === undefined || raw === '') return null;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new LiaisonError('E_ARG', `LIAISON_GROUP must be an integer >= 1 (the number of ranks), got ${JSON.stringify(raw)}`, { param: 'LIAISON_GROUP' });
    return Group.start({ ...opts, ranks: n });
  }

  private static async open(where: string | string[], opts: ConnectOptions, expected?: number, proc?: GroupProcess): Promise<Group> {
    const watch = new GroupWatch(proc);
    const ranks = await openRanks(where, opts, watch, expected);
    const g = new Group(ranks, watch);
    watch.begin(ranks);
    return g;
  }

  /** Rank r's own session: its tensors and programs live on rank r alone. */
  rank(r: number): ProcessRuntime {
    if (!Number.isInteger(r) || r < 0 || r >= this.size) throw new LiaisonError('E_ARG', `rank ${r} is not a rank of this group (0..${this.size - 1})`, { param: 'rank' });
    return this.ranks[r];
  }

  get closed(): boolean {
    return this.closing !== null || this.watch.failure !== null;
  }

  /** @internal for tests: the local group's processes, when this object started them. */
  get process(): undefined {
    return undefined;
  }

  /** @internal for tests: torchrun's pid and every rank's (a local group only). */
  get pids(): { agent?: number; ranks: number[] } {
    return { agent: this.watch.proc?.pid, ranks: this.ranks.map((r) => r.info.pid) };
  }

  // ---------------------------------------------------------------- tensors in

  /** Upload the same data to every rank. */
  tensor(data: Data, shape?: readonly number[], dtype?: DType): Tensor {
    if (this.hook.recorder) return this.hook.paused(() => this.tensor(data, shape, dtype));
    const { bytes, dt, shp } = bytesOf(data, shape, dtype);
    return this.uploadEach(this.ranks.map(() => bytes), dt, this.ranks.map(() => shp));
  }

  /**
   * Upload different data per rank as ONE group tensor: rank r gets `parts[r]`. `shape` is
   * one shape for every part, or a shape per part; the dtype is the first part's.
   */
  tensorEach(parts: readonly Data[], shape?: readonly number[] | readonly (readonly number[])[], dtype?: DType): Tensor {
    if (parts.length !== this.size) throw new LiaisonError('E_ARG', `tensorEach: ${parts.length} parts for a group of ${this.size} ranks`, { param: 'parts' });
    if (this.hook.recorder) return this.hook.paused(() => this.tensorEach(parts, shape, dtype));
    const dt: DType = dtype ?? (Array.isArray(parts[0]) ? 'f32' : dtypeOf(parts[0] as TypedArray));
    const each = parts.map((p, r) => bytesOf(p, shape && Array.isArray(shape[0]) ? (shape as number[][])[r] : (shape as number[] | undefined), dt));
    return this.uploadEach(each.map((e) => e.bytes), dt, each.map((e) => e.shp));
  }

  /** Split `data` (of `shape`) along dim 0 as `torch.tensor_split` does and give rank r part r. */
  shard(data: Data, shape: readonly number[], dtype?: DType): Tensor {
    if (this.hook.recorder) return this.hook.paused(() => this.shard(data, shape, dtype));
    const { bytes, dt, shp } = bytesOf(data, shape, dtype);
    const { parts, shapes } = splitRows(bytes, shp, this.size);
    return this.uploadEach(parts, dt, shapes);
  }

  /** One group tensor whose value on rank r is `parts[r]`. */
  private uploadEach(parts: readonly Uint8Array[], dt: DType, shapes: readonly number[][]): Tensor {
    this.checkOpen('upload');
    const t = this.newTensor();
    this.ranks.forEach((r, i) => {
      const q = r.opQueue;
      q.push({ op: 'upload', out: [t.ref], args: [], kw: { dtype: dt, shape: shapes[i], ...q.upload(parts[i]) } }, false);
    });
    this.sendIfFull();
    const same = shapes.every((s) => s.length === shapes[0].length && s.every((d, k) => d === shapes[0][k]));
    if (same) t.sh = [...shapes[0]];
    else t.lost = `tensor #${t.id} holds a part of a different shape on each rank (${shapes.map((s) => `[${s}]`).join(', ')})`;
    return t;
  }

  /** Queue one op on every rank; `outputs` results (a list when != 1). */
  call(op: string, args: readonly Arg[] = [], kw?: Record<string, Arg>, outputs = 1): Tensor | Tensor[] {
    this.checkOpen(op);
    const wireArgs = args.map((a) => this.wire(a));
    const wireKw = kw ? (this.wire(kw) as Record<string, unknown>) : undefined;
    const recorder = this.hook.recorder;
    const out: Tensor[] = [];
    for (let i = 0; i < outputs; i++) out.push(recorder ? this.symbolic(recorder) : this.newTensor());
    if (outputs > 0) inferShapes(op, args, kw, out, recorder);
    const rec = { op, out: out.map((t) => t.ref), args: wireArgs, ...(wireKw ? { kw: wireKw } : {}) };
    if (recorder) recorder.record(rec);
    else {
      for (const r of this.ranks) r.opQueue.push(rec, false);
      this.sendIfFull();
    }
    return outputs === 1 ? out[0] : out;
  }

  /** A full queue goes out once every rank has the op: no rank's batch may end between two ranks' copies of it. */
  private sendIfFull(): void {
    if (this.ranks.some((r) => r.opQueue.full)) this.sendAll();
  }

  /** A group has no pythonia hatch: adopt on one rank's session is not possible either (they run under torchrun). */
  adopt(): Promise<Tensor> {
    return Promise.reject(new LiaisonError('E_ARG', 'adopt: a group has no pythonia hatch (its ranks run under torchrun); build the object from ops instead'));
  }

  private checkOpen(op: string): void {
    if (this.watch.failure) throw this.watch.failure;
    if (this.closing) throw new LiaisonError('E_CLOSED', `the group is closed; cannot queue ${op}`);
  }

  private allocate(): number {
    const id = this.nextId++;
    if (id > 0xffffffff) throw new LiaisonError('E_INTERNAL', 'handle ids exhausted for this group; start a new one');
    return id;
  }

  private newTensor(): Tensor {
    const t = new Tensor(this, this.allocate());
    this.lifetimes.track(t);
    return t;
  }

  private wire(a: Arg): unknown {
    if (a instanceof Tensor) {
      if (a.rt !== this) {
        const r = this.ranks.indexOf(a.rt as ProcessRuntime);
        throw new LiaisonError('E_HANDLE', r >= 0
          ? `tensor #${a.id} lives on rank ${r} alone (made through group.rank(${r})); an op on the group needs a group tensor (group.tensorEach, or rank-addressed work on rank ${r})`
          : `tensor #${a.id} belongs to another runtime session`, { handle: a.id });
      }
      this.hook.checkOwn(a);
      if (a.freed) throw new LiaisonError('E_HANDLE', `tensor #${a.id} was freed`, { handle: a.id });
      for (const r of this.ranks) {
        const bad = r.opQueue.poison(a.id);
        if (bad) throw new LiaisonError('E_HANDLE', `tensor #${a.id} does not exist: the op that makes it failed (${bad.message})`, { handle: a.id, cause: bad });
      }
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

  // ---------------------------------------------------------------- tracing

  /** @internal sdk/program.ts: run `fn` with the group's ops recorded into `recorder`. */
  recording<T>(recorder: OpRecorder, fn: () => T): T {
    return this.hook.recording(recorder, fn);
  }

  /** @internal */
  get recordingNow(): boolean {
    return this.hook.recorder !== null;
  }

  /** @internal */
  get activeRecorder(): OpRecorder | null {
    return this.hook.recorder;
  }

  /** @internal A tensor that exists only inside the program `recorder` traces. */
  symbolic(recorder: OpRecorder): Tensor {
    const t = new Tensor(this, this.allocate());
    t.traced = recorder;
    return t;
  }

  // ---------------------------------------------------------------- values out

  /** @internal Tensor.data(): rank 0's value. */
  read(t: Tensor): Promise<TensorData> {
    return this.onRank(0, t, 'reads the value', (q, ref) => q.read(ref));
  }

  /** @internal Tensor.info(): rank 0's dtype, shape and device. */
  meta(t: Tensor): Promise<Record<string, unknown>> {
    return this.onRank(0, t, 'reads the shape', (q, ref) => q.meta(ref));
  }

  /** Every rank's value of `t`, in rank order. */
  readEach(t: Tensor): Promise<TensorData[]> {
    return Promise.all(this.ranks.map((_, r) => this.onRank(r, t, 'reads the value', (q, ref) => q.read(ref))));
  }

  private onRank<V>(r: number, t: Tensor, what: string, fn: (q: ProcessRuntime['opQueue'], ref: HandleRef) => Promise<V>): Promise<V> {
    if (this.hook.recorder || t.traced) return refused(this.hook.error(`${what} of tensor #${t.id}`, t));
    try {
      this.checkOpen('a read');
      return fn(this.ranks[r].opQueue, this.wire(t) as HandleRef);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Send every rank's queue and wait until every rank has run it all. */
  async flush(): Promise<void> {
    if (this.hook.recorder) return refused(this.hook.error('calls flush()'));
    if (this.watch.failure) throw this.watch.failure;
    const done = await Promise.allSettled(this.ranks.map((r) => r.opQueue.flush()));
    const r = done.findIndex((d) => d.status === 'rejected');
    if (r >= 0) throw rankError(r, (done[r] as PromiseRejectedResult).reason);
  }

  /** Every rank's queue goes out when one does: a collective must reach every rank. */
  private sendAll(): void {
    if (this.sendingAll) return;
    this.sendingAll = true;
    try {
      for (const r of this.ranks) r.opQueue.send();
    } finally {
      this.sendingAll = false;
    }
  }

  // ---------------------------------------------------------------- lifetimes

  /** @internal */
  release(id: number): void {
    for (const r of this.ranks) r.opQueue.free(id);
  }

  /** @internal Tensor.free() */
  freeTensor(t: Tensor): void {
    if (t.traced) return;
    this.lifetimes.untrack(t);
    this.release(t.id);
  }

  /** Run `fn`; tensors made inside and not returned are freed (on every rank) when it ends. */
  scope<T>(fn: () => Promise<T> | T): Promise<T> {
    return scope(fn);
  }

  // ---------------------------------------------------------------- the group

  /** Every rank's counts, summed (collectives included). */
  async stats(): Promise<RuntimeStats> {
    await this.flush();
    const each = await Promise.all(this.ranks.map((r) => r.stats()));
    const sum: RuntimeStats = { sessions: 0, objects: 0, ops_run: 0, collectives: { calls: 0, bytes: 0 } };
    for (const s of each) {
      sum.sessions += s.sessions;
      sum.objects += s.objects;
      sum.ops_run += s.ops_run;
      sum.collectives!.calls += s.collectives?.calls ?? 0;
      sum.collectives!.bytes += s.collectives?.bytes ?? 0;
    }
    return sum;
  }

  /** One round trip to every rank. */
  async ping(): Promise<void> {
    await Promise.all(this.ranks.map((r) => r.ping()));
  }

  /** Close every rank's session; a group this object started is stopped (torchrun and every rank). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.watch.stop();
      try {
        if (!this.watch.failure && !(await settlesWithin(this.flush(), CLOSE_FLUSH_MS))) {
          // a rank still waits (in a collective its peers never joined?): do not wait with it
          const e = new LiaisonError('E_CLOSED', `the group was closed while its ranks were still running ops (${CLOSE_FLUSH_MS} ms)`);
          for (const r of this.ranks) r.failWith(e);
        }
        await Promise.all(this.ranks.map((r) => r.close()));
      } finally {
        await this.watch.proc?.kill();
      }
    })();
    return this.closing;
  }
}
