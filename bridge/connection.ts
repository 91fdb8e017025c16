/**
 * One DEALER socket to one runtime: request ids, a send queue, one reader loop.
 *
 * zeromq.js allows one `send` and one `receive` in flight per socket, so every request
 * goes through `queue` (drained by a single sender) and every reply comes through one
 * reader loop that settles the request by id. At most `maxInFlight` requests are on the
 * wire at once: the runtime's ROUTER then never has to queue more replies for us than our
 * pipe holds.
 *
 * A peer that dies is noticed whether requests are pending or not (docs/bridge.md, "When
 * the runtime dies"): a spawned local runtime by its launcher (the process exit), a tcp
 * runtime by the socket's own connection events (watchPeer), an idle one by the heartbeat.
 */
import { Dealer } from 'zeromq';
import { LiaisonError } from './errors.js';
import { VERSION, decode, encode, type Kind, type ReplyHeader } from './protocol.js';

export interface ConnectionOptions {
  /** `ipc://…` or `tcp://host:port`. */
  endpoint: string;
  /** HMAC key; required on tcp:// (every message is signed). */
  key?: Uint8Array;
  /** Default per-request timeout in ms (0: none). */
  timeoutMs?: number;
  /** Requests on the wire at once; the rest wait in the send queue. */
  maxInFlight?: number;
  /** Idle heartbeat: ping this often when nothing is pending (0: off). */
  heartbeatMs?: number;
  /** A heartbeat unanswered this long declares the runtime dead. */
  heartbeatTimeoutMs?: number;
  /** Watch the socket's connection events on ipc:// too (always on tcp://): a peer that exits drops it. */
  watchPeer?: boolean;
  /**
   * @internal A group (bridge/group.ts) decides for its ranks: a dropped connection or an
   * unanswered heartbeat is reported here instead of failing this connection, so the group
   * can fail every rank's requests with one error naming the rank that died.
   */
  onPeerLost?: (e: LiaisonError, how: 'disconnect' | 'heartbeat') => void;
}

/** What a runtime's `hello` reply says about its limits (older runtimes send none). */
export interface RuntimeLimits {
  max_message_bytes?: number;
  max_sessions?: number;
  session_idle_s?: number;
}

export interface Reply {
  header: ReplyHeader;
  buffers: Uint8Array[];
}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  /** When the default timeout expires (ms since epoch; 0: never). */
  deadline: number;
  /** A request with its own timeout has its own timer and is skipped by the sweep. */
  timer?: NodeJS.Timeout;
  kind: Kind;
  /** On the wire (counts against maxInFlight), not only queued. */
  sent: boolean;
}

interface Outgoing {
  id: number;
  header: Record<string, unknown>;
  buffers: readonly Uint8Array[];
}

export class Connection {
  readonly endpoint: string;
  private readonly sock: Dealer;
  private readonly key?: Uint8Array;
  private readonly pending = new Map<number, Pending>();
  /** Requests to send, from `qHead` on; a sent one's slot is cleared, so its buffers can be collected. */
  private readonly queue: (Outgoing | undefined)[] = [];
  private qHead = 0;
  private nextId = 1;
  private inFlight = 0;
  private sending = false;
  private dead: LiaisonError | null = null;
  private readonly maxInFlight: number;
  private readonly timeoutMs: number;
  private hbTimer?: NodeJS.Timeout;
  private lastReply = Date.now();
  /** The session the `hello` opened: the idle heartbeat names it, which keeps it from expiring. */
  private sid?: string;
  /** The runtime's `max_message_bytes`, once its `hello` reported one. */
  private maxMessageBytes = 0;
  private readonly onPeerLost?: (e: LiaisonError, how: 'disconnect' | 'heartbeat') => void;

  constructor(opts: ConnectionOptions) {
    this.endpoint = opts.endpoint;
    if (opts.endpoint.startsWith('tcp://') && !opts.key?.length) {
      throw new LiaisonError('E_AUTH', `connecting to ${opts.endpoint} needs a key: every message on tcp:// is signed (pass { key } or set LIAISON_KEY)`);
    }
    this.key = opts.key?.length ? opts.key : undefined;
    this.maxInFlight = opts.maxInFlight ?? 1024;
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.sock = new Dealer({
      linger: 0,
      sendHighWaterMark: 0,
      receiveHighWaterMark: 0,
      ...(opts.endpoint.startsWith('tcp://') ? { heartbeatInterval: 2000, heartbeatTimeout: 10_000 } : {}),
    });
    this.onPeerLost = opts.onPeerLost;
    if (opts.endpoint.startsWith('tcp://') || opts.watchPeer) this.watchPeer();
    this.sock.connect(opts.endpoint);
    void this.readLoop();
    const hb = opts.heartbeatMs ?? 5000;
    if (hb > 0) this.startHeartbeat(hb, opts.heartbeatTimeoutMs ?? 15_000);
  }

  get closed(): boolean {
    return this.dead !== null;
  }

  /**
   * Send one request; resolves with the reply, rejects with a LiaisonError carrying the
   * runtime's code, message and Python traceback.
   */
  request(kind: Kind, fields: Record<string, unknown> = {}, buffers: readonly Uint8Array[] = [], timeoutMs = this.timeoutMs): Promise<Reply> {
    if (this.dead) return Promise.reject(this.dead);
    if (this.maxMessageBytes > 0) {
      // The buffers alone are a lower bound of the message: refuse before hashing them.
      let size = 0;
      for (const b of buffers) size += b.byteLength;
      if (size > this.maxMessageBytes) return Promise.reject(this.tooLarge(kind, size));
    }
    if (kind === 'close' && fields.sid === this.sid) this.sid = undefined;
    const id = this.nextId++;
    if (this.nextId > 0x7fffffff) this.nextId = 1;
    const header: Record<string, unknown> = { v: VERSION, id, kind, ...fields };
    return new Promise<Reply>((resolve, reject) => {
      const p: Pending = { resolve, reject, kind, deadline: 0, sent: false };
      if (timeoutMs > 0 && timeoutMs === this.timeoutMs) {
        // The common case shares one sweep timer: pending requests sit in the Map in the
        // order they were made, so expired ones are always at its head.
        p.deadline = Date.now() + timeoutMs;
        this.armSweep();
      } else if (timeoutMs > 0) {
        p.timer = setTimeout(() => this.expire(id, timeoutMs), timeoutMs);
        p.timer.unref?.();
      }
      this.pending.set(id, p);
      this.queue.push({ id, header, buffers });
      this.pump();
    });
  }

  private expire(id: number, timeoutMs: number): void {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (p.sent) this.inFlight--;
    p.reject(new LiaisonError('E_TIMEOUT', `no reply to ${p.kind} #${id} within ${timeoutMs} ms (raise timeoutMs for long ops)`));
    this.pump();
  }

  private sweepTimer?: NodeJS.Timeout;

  private armSweep(): void {
    if (this.sweepTimer) return;
    const every = Math.max(20, Math.min(1000, this.timeoutMs / 4));
    this.sweepTimer = setInterval(() => {
      const now = Date.now();
      for (const [id, p] of this.pending) {
        if (p.timer) continue;
        if (p.deadline > now) break;
        if (p.deadline) this.expire(id, this.timeoutMs);
      }
      if (this.pending.size === 0 && this.sweepTimer) {
        clearInterval(this.sweepTimer);
        this.sweepTimer = undefined;
      }
    }, every);
    this.sweepTimer.unref?.();
  }

  /** Reject everything pending at once and stop. Idempotent. */
  fail(err: LiaisonError): void {
    if (this.dead) return;
    this.dead = err;
    if (this.hbTimer) clearInterval(this.hbTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    for (const [, p] of this.pending) {
      if (p.timer) clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.queue.length = 0;
    this.qHead = 0;
    this.sock.close();
  }

  close(): void {
    this.fail(new LiaisonError('E_CLOSED', 'the Liaison client was closed'));
  }

  private pump(): void {
    if (this.sending || this.dead) return;
    this.sending = true;
    void this.sendLoop();
  }

  private async sendLoop(): Promise<void> {
    try {
      while (!this.dead && this.qHead < this.queue.length && this.inFlight < this.maxInFlight) {
        const msg = this.queue[this.qHead]!;
        this.queue[this.qHead++] = undefined;
        const p = this.pending.get(msg.id);
        if (!p) continue; // timed out while queued
        if (this.key) msg.header.ts = Date.now();
        let frames: Uint8Array[];
        try {
          frames = encode(msg.header, msg.buffers, this.key);
        } catch (e) {
          // a value msgpack cannot carry fails its own request, not the connection
          this.pending.delete(msg.id);
          if (p.timer) clearTimeout(p.timer);
          p.reject(new LiaisonError('E_ARG', `cannot encode ${p.kind} #${msg.id}: ${(e as Error).message}`));
          continue;
        }
        if (this.maxMessageBytes > 0) {
          let size = 0;
          for (const f of frames) size += f.byteLength;
          if (size > this.maxMessageBytes) {
            this.pending.delete(msg.id);
            if (p.timer) clearTimeout(p.timer);
            p.reject(this.tooLarge(p.kind, size));
            continue;
          }
        }
        p.sent = true;
        this.inFlight++;
        await this.sock.send(frames as Buffer[]);
        if (this.qHead === this.queue.length) {
          this.queue.length = 0;
          this.qHead = 0;
        } else if (this.qHead > 4096 && this.qHead * 2 > this.queue.length) {
          this.queue.splice(0, this.qHead);
          this.qHead = 0;
        }
      }
    } catch (e) {
      this.broken(new LiaisonError('E_DEAD', `sending to ${this.endpoint} failed: ${(e as Error).message}`));
    } finally {
      this.sending = false;
    }
    if (!this.dead && this.qHead < this.queue.length && this.inFlight < this.maxInFlight) this.pump();
  }

  private async readLoop(): Promise<void> {
    try {
      for (;;) {
        const frames = await this.sock.receive();
        this.onReply(frames);
      }
    } catch (e) {
      this.broken(new LiaisonError('E_DEAD', `receiving from ${this.endpoint} failed: ${(e as Error).message}`));
    }
  }

  private onReply(frames: Buffer[]): void {
    if (this.dead) return; // a reply read after fail(): its request was rejected already
    let r: ReturnType<typeof decode>;
    try {
      r = decode(frames, this.key);
    } catch (e) {
      process.emitWarning(`liaison: unreadable reply dropped: ${(e as Error).message}`);
      return;
    }
    const { header, buffers, forged } = r;
    this.lastReply = Date.now();
    const id = header.id;
    const p = typeof id === 'number' ? this.pending.get(id) : undefined;
    if (forged) {
      // The runtime signs with its key; a reply we cannot verify is either a runtime that
      // refused *our* signature (different keys) or a stranger. Only the first may settle
      // a request, and only as a failure.
      if (p && header.ok === false && header.error?.code === 'E_AUTH') {
        this.settle(id as number, p);
        p.reject(new LiaisonError('E_AUTH', `the runtime refused our signature: ${header.error.message} (are both sides using the same key?)`));
      } else {
        process.emitWarning('liaison: a reply with a bad signature was dropped');
      }
      return;
    }
    if (!p) {
      if (header.ok === false && header.error) {
        process.emitWarning(`liaison: runtime error for no pending request: ${header.error.code} ${header.error.message}`);
      }
      return;
    }
    this.settle(id as number, p);
    if (header.ok && p.kind === 'hello') this.learn(header);
    if (header.ok) p.resolve({ header, buffers });
    else p.reject(LiaisonError.fromWire(header.error ?? { code: 'E_INTERNAL', message: 'error reply without an error field' }));
  }

  private settle(id: number, p: Pending): void {
    if (p.timer) clearTimeout(p.timer);
    this.pending.delete(id);
    if (p.sent) this.inFlight--;
    if (this.qHead < this.queue.length) this.pump();
  }

  /** The session id and limits from a `hello` reply. */
  private learn(header: ReplyHeader): void {
    if (typeof header.sid === 'string') this.sid = header.sid;
    const limits = header.limits as RuntimeLimits | undefined;
    const max = limits?.max_message_bytes;
    if (typeof max === 'number' && Number.isFinite(max) && max > 0) this.maxMessageBytes = max;
  }

  private tooLarge(kind: Kind, size: number): LiaisonError {
    return new LiaisonError('E_LIMIT', `a ${kind} message of ${bytes(size)} is over the runtime's max_message_bytes of ${bytes(this.maxMessageBytes)}: send less at once (smaller uploads, a lower maxQueuedBytes) or start the runtime with a larger --max-message-bytes (LIAISON_MAX_MESSAGE_BYTES)`);
  }

  private startHeartbeat(everyMs: number, deadAfterMs: number): void {
    // Only an idle connection is pinged: a long op legitimately keeps the runtime's one
    // loop busy, so an unanswered ping then proves nothing (a tcp peer's death is seen by
    // watchPeer meanwhile). The ping names our session: an idle client keeps it alive
    // against the runtime's session_idle_s.
    this.hbTimer = setInterval(() => {
      if (this.dead || this.pending.size > 0 || Date.now() - this.lastReply < everyMs) return;
      this.request('ping', this.sid ? { sid: this.sid } : {}, [], deadAfterMs).catch((e: LiaisonError) => {
        if (e.code === 'E_TIMEOUT') {
          this.peerLost(new LiaisonError('E_DEAD', `the runtime at ${this.endpoint} stopped answering heartbeats (${deadAfterMs} ms)`), 'heartbeat');
        } else if (e.code === 'E_SESSION') {
          this.sid = undefined; // gone already; the next batch reports it
        }
      });
    }, everyMs);
    this.hbTimer.unref?.();
  }

  /** The socket itself failed: the owner hears of it first (a group fails all its ranks), then this fails. */
  private broken(e: LiaisonError): void {
    if (this.dead) return;
    this.onPeerLost?.(e, 'disconnect');
    if (!this.dead) this.fail(e);
  }

  /** The peer is gone or hung: fail, unless an owner decides (a group, for all its ranks at once). */
  private peerLost(e: LiaisonError, how: 'disconnect' | 'heartbeat' = 'disconnect'): void {
    if (this.dead) return;
    if (this.onPeerLost) this.onPeerLost(e, how);
    else this.fail(e);
  }

  /**
   * tcp (and ipc with `watchPeer`): fail everything pending the moment the connection drops. libzmq's own heartbeats
   * (ZMTP PING/PONG, answered by the runtime's I/O thread even while an op computes) drop
   * the connection of a hung host within heartbeatTimeout; a killed one drops at once. The
   * DEALER would reconnect, but under a new routing id, so replies to requests sent before
   * can never arrive, and whether those requests ran is unknown: the connection is dead.
   */
  private watchPeer(): void {
    const lost = (why: string) => {
      if (this.dead) return;
      const n = this.pending.size;
      this.peerLost(new LiaisonError('E_DEAD', `${why}: the runtime at ${this.endpoint} died, hung or became unreachable${n ? `, and the ${n} pending request${n === 1 ? '' : 's'} can get no reply` : ''}. Connect again to go on`));
    };
    const ev = this.sock.events;
    ev.on('disconnect', () => lost('the connection was lost'));
    for (const type of ['handshake:error:protocol', 'handshake:error:auth', 'handshake:error:other'] as const) {
      ev.on(type, (e) => lost(`the ZeroMQ handshake failed (${e.error.message})`));
    }
  }
}

function bytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(2)} GiB (${n} bytes)`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB (${n} bytes)`;
  return `${n} bytes`;
}
