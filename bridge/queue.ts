/**
 * The op queue of one session and its transport: ops, uploads, reads and frees wait here
 * and go out together as one `batch` request (docs/protocol.md §4) when a value is read,
 * on `flush()`, or when the queue grows past `maxOps` / `maxBytes`. Reads issued in the
 * same tick share one batch, so a training step costs one round trip.
 *
 * Large uploads go through /dev/shm on one host (bridge/shm.ts) instead of the socket.
 */
import type { Connection } from './connection.js';
import type { OpRecord, TensorData } from './contract.js';
import { type DType, viewAs } from './dtype.js';
import { LiaisonError } from './errors.js';
import { HandleRef } from './protocol.js';
import type { ShmDir } from './shm.js';

export interface QueueOptions {
  /** Send the queue once this many ops are waiting. */
  maxOps: number;
  /** Send the queue once this many upload bytes are waiting. */
  maxBytes: number;
  /** Shared memory for uploads of at least `shmMin` bytes (and reads, with `shmReads`). */
  shm?: ShmDir;
  shmMin: number;
  shmReads: boolean;
}

interface Waiter<T> { resolve: (v: T) => void; reject: (e: Error) => void }

/** Frees sent on their own once this many wait: the runtime's store should not grow unbounded between reads. */
const FREES_PER_BATCH = 1024;

export class OpQueue {
  private ops: OpRecord[] = [];
  private bufs: Uint8Array[] = [];
  private queuedBytes = 0;
  private frees: HandleRef[] = [];
  private reads: { ref: HandleRef; w: Waiter<TensorData> }[] = [];
  private metas: { ref: HandleRef; w: Waiter<Record<string, unknown>> }[] = [];
  private scheduled = false;
  private last: Promise<unknown> = Promise.resolve();
  private deferred: LiaisonError | null = null;
  /** Handles whose making op failed, with the error: a later use says why they do not exist. */
  private poisoned = new Map<number, LiaisonError>();
  /**
   * @internal Called whenever this queue sends a batch. A group (bridge/group.ts) sends its
   * other ranks' queues then too: a collective queued on every rank must go out on every
   * rank, or the ranks that sent it wait in it for the ones that did not.
   */
  onSend?: () => void;
  /**
   * @internal What a failed batch reports, decided by the group: a collective that failed
   * because a rank died reports that rank's death, as every other pending request does.
   */
  translate?: (e: LiaisonError) => Promise<LiaisonError>;

  constructor(private readonly conn: Connection, private readonly sid: string, private readonly opts: QueueOptions) {}

  /** Queue an op; past `maxOps` / `maxBytes` the queue goes out, unless `autoSend` is off (a group checks {@link full} once every rank has it). */
  push(rec: OpRecord, autoSend = true): void {
    this.ops.push(rec);
    if (autoSend && this.full) this.send();
  }

  /** Past `maxOps` or `maxBytes`: time to send. */
  get full(): boolean {
    return this.ops.length >= this.opts.maxOps || this.queuedBytes >= this.opts.maxBytes;
  }

  /**
   * Queue `bytes` for an upload op: the kw fields that tell the runtime where they are
   * (a file in shared memory, or a frame of the next batch).
   */
  upload(bytes: Uint8Array): { shm: string } | { frame: number } {
    const { shm, shmMin } = this.opts;
    const path = shm && bytes.byteLength >= shmMin ? shm.tryWrite(bytes) : null;
    if (path !== null) return { shm: path };
    this.bufs.push(bytes);
    this.queuedBytes += bytes.byteLength;
    return { frame: this.bufs.length - 1 };
  }

  read(ref: HandleRef): Promise<TensorData> {
    return new Promise((resolve, reject) => {
      this.reads.push({ ref, w: { resolve, reject } });
      this.schedule();
    });
  }

  meta(ref: HandleRef): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      this.metas.push({ ref, w: { resolve, reject } });
      this.schedule();
    });
  }

  /** Drop handle `id` on the runtime with the next batch. */
  free(id: number): void {
    this.poisoned.delete(id);
    if (this.conn.closed) return;
    this.frees.push(new HandleRef(id));
    if (this.frees.length >= FREES_PER_BATCH) this.schedule();
  }

  /** Why handle `id` was never made, if the op making it failed. */
  poison(id: number): LiaisonError | undefined {
    return this.poisoned.get(id);
  }

  /** Send whatever is queued, wait until the runtime has run it all, and report an unread failure. */
  async flush(): Promise<void> {
    this.send();
    await this.last;
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

  private empty(): boolean {
    return !this.ops.length && !this.reads.length && !this.metas.length && !this.frees.length;
  }

  /** Send whatever is queued now, without waiting for the reply. */
  send(): void {
    if (this.empty()) return;
    if (this.onSend) {
      this.onSend(); // may send this queue itself (the group sends all its ranks' in rank order)
      if (this.empty()) return;
    }
    const ops = this.ops, bufs = this.bufs, reads = this.reads, metas = this.metas, frees = this.frees;
    this.ops = []; this.bufs = []; this.reads = []; this.metas = []; this.frees = []; this.queuedBytes = 0;
    const fields: Record<string, unknown> = { sid: this.sid, ops };
    if (reads.length) fields.reads = reads.map((r) => r.ref);
    if (metas.length) fields.meta = metas.map((m) => m.ref);
    if (frees.length) fields.free = frees;
    const shm = this.opts.shm;
    if (shm && this.opts.shmReads && reads.length) fields.shm = { dir: shm.dir, min: this.opts.shmMin };
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
            const bytes = m.shm !== undefined ? shm!.take(m.shm) : buffers[m.frame!];
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
    ).catch(async (e: LiaisonError) => {
      if (this.translate) e = await this.translate(e);
      for (const r of reads) r.w.reject(e);
      for (const m of metas) m.w.reject(e);
      if (!reads.length && !metas.length) this.deferred ??= e; // nobody awaits this batch: report at the next flush
    });
    this.last = p;
  }
}
