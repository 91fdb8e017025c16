/**
 * The sessions behind a `Group` (bridge/group.ts): opening one on every rank and checking
 * that the ranks agree about the group, and watching them for a rank that dies.
 *
 * Faults: a rank's connection dropping, its process exiting (a local group polls the pids)
 * or torchrun's agent exiting fails the whole group at once — every pending request on
 * every rank rejects with one E_GROUP naming the rank that died — and a local group's
 * processes are stopped. An unanswered heartbeat alone does not decide for a rank whose
 * process still runs: a rank waiting in a collective for a dead peer cannot answer, and it
 * is the dead peer's exit that decides.
 */
import { LiaisonError } from './errors.js';
import { alive, type GroupProcess, type GroupSpawnOptions } from './group-launcher.js';
import { ProcessRuntime, type ConnectOptions } from './process-runtime.js';

export interface GroupStartOptions extends GroupSpawnOptions, ConnectOptions {}

/** How often a local group's rank pids are checked. */
const POLL_MS = 200;
/** How long a collective that failed inside a runtime waits for the rank death that explains it. */
const EXPLAIN_MS = 3000;

/**
 * Open a session on every rank: `where` lists them in rank order, or names one rank whose
 * handshake lists the others. Checks that every rank reports the same world size, ranks
 * 0..N-1 each once, and `expected` ranks when given; E_GROUP naming what disagreed.
 */
export async function openRanks(where: string | readonly string[], opts: ConnectOptions, watch: GroupWatch, expected?: number): Promise<ProcessRuntime[]> {
  const opened: ProcessRuntime[] = [];
  const raw = opts.key ?? process.env.LIAISON_KEY;
  const key = typeof raw === 'string' ? Buffer.from(raw) : raw;
  const open = async (ep: string): Promise<ProcessRuntime> => {
    const slot = { rank: -1 };
    const rt = await ProcessRuntime.open(ep, ep.startsWith('tcp://') ? key : undefined, {
      ...opts, watchPeer: true,
      onPeerLost: (_e, how) => watch.rankLost(slot.rank, how === 'heartbeat' ? 'it stopped answering heartbeats' : `its connection (${ep}) dropped`, how),
    });
    opened.push(rt);
    slot.rank = rt.info.group?.rank ?? -1;
    return rt;
  };
  try {
    let ranks: ProcessRuntime[];
    if (typeof where === 'string') {
      const first = await open(where);
      const g = first.info.group;
      if (!g) throw new LiaisonError('E_GROUP', `the runtime at ${where} is not a rank of a group (it was started without --group, or not under torchrun)`);
      if (g.endpoints.length !== g.worldSize) throw new LiaisonError('E_GROUP', `rank ${g.rank} at ${where} lists ${g.endpoints.length} endpoints for a world of ${g.worldSize}`);
      ranks = await Promise.all(g.endpoints.map((ep, r) => (r === g.rank ? first : open(ep))));
    } else {
      ranks = await Promise.all(where.map(open));
    }
    checkAgreement(ranks, expected);
    return ranks;
  } catch (e) {
    await Promise.all(opened.map((r) => r.close()));
    throw e;
  }
}

/** @internal (exported for tests) E_GROUP naming what the ranks disagree about, if anything. */
export function checkAgreement(ranks: readonly Pick<ProcessRuntime, 'info' | 'endpoint'>[], expected?: number): void {
  const bad = ranks.find((r) => !r.info.group);
  if (bad) throw new LiaisonError('E_GROUP', `the runtime at ${bad.endpoint} is not a rank of a group (its handshake reports none)`);
  const sizes = ranks.map((r) => r.info.group!.worldSize);
  if (sizes.some((s) => s !== sizes[0])) {
    throw new LiaisonError('E_GROUP', `the ranks disagree about the world size: ${ranks.map((r, i) => `${r.endpoint} says ${sizes[i]}`).join(', ')}`);
  }
  if (sizes[0] !== ranks.length) throw new LiaisonError('E_GROUP', `the group reports a world of ${sizes[0]} ranks, ${ranks.length} answered`);
  ranks.forEach((r, i) => {
    const k = r.info.group!.rank;
    if (k !== i) throw new LiaisonError('E_GROUP', `the endpoint of rank ${i} (${r.endpoint}) answered as rank ${k}: each rank 0..${ranks.length - 1} must answer once`);
  });
  if (expected !== undefined && expected !== ranks.length) {
    throw new LiaisonError('E_GROUP', `a group of ${expected} ranks was asked for, the ranks report a world of ${ranks.length}`);
  }
}

/** Watches a group's ranks and fails the group, once, when one dies. */
export class GroupWatch {
  /** The group's fault, once a rank died: every request after it fails with this. */
  failure: LiaisonError | null = null;
  private ranks: readonly ProcessRuntime[] = [];
  private early: [number, string][] = [];
  private timer?: NodeJS.Timeout;
  private stopped = false;

  constructor(readonly proc?: GroupProcess) {}

  /** Start watching (the sessions are open and the group is built). */
  begin(ranks: readonly ProcessRuntime[]): void {
    this.ranks = ranks;
    for (const [r, why] of this.early) this.rankLost(r, why, 'disconnect');
    const proc = this.proc;
    if (!proc || this.failure) return;
    this.timer = setInterval(() => {
      const r = ranks.findIndex((s) => !alive(s.info.pid));
      if (r >= 0) this.rankLost(r, 'its process exited', 'exit');
    }, POLL_MS);
    this.timer.unref?.();
    void proc.exited.then((how) => {
      const r = ranks.findIndex((s) => !alive(s.info.pid));
      if (r >= 0) this.rankLost(r, 'its process exited', 'exit');
      else this.fail(new LiaisonError('E_GROUP', `torchrun's agent (pid ${proc.pid}) ${how} while every rank ran; the group is closed.${tailOf(proc)}`));
    });
  }

  /** The group is closing: what happens to the ranks now is expected. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
  }

  /** Rank `r`'s connection dropped, its heartbeat went unanswered, or its process exited. */
  rankLost(r: number, why: string, how: 'disconnect' | 'heartbeat' | 'exit'): void {
    if (this.stopped || this.failure) return;
    if (this.ranks.length === 0) {
      this.early.push([r, why]); // still connecting: decided once the group exists
      return;
    }
    const pid = this.ranks[r]?.info.pid;
    // a live local rank that does not answer is busy (a long op, a collective): its peers' exits decide
    if (how === 'heartbeat' && this.proc && pid !== undefined && alive(pid)) return;
    const exited = how === 'exit' || (this.proc !== undefined && pid !== undefined && !alive(pid));
    this.fail(new LiaisonError('E_GROUP', `rank ${r} (pid ${pid}) died: ${exited && how !== 'exit' ? 'its process exited' : why}. ` +
      `Every pending request of the group was rejected and the group is closed${this.proc ? ' (torchrun and every rank stopped)' : ''}; start a new group to go on.${this.proc ? tailOf(this.proc) : ''}`));
  }

  private fail(e: LiaisonError): void {
    if (this.stopped || this.failure) return;
    this.failure = e;
    if (this.timer) clearInterval(this.timer);
    for (const r of this.ranks) r.failWith(e);
    void this.proc?.kill(1000);
  }

  /**
   * What a failed batch reports: a collective the runtime failed (E_GROUP) while a peer was
   * dying, or a connection that broke (E_DEAD), is reported as the rank's death that explains
   * it, as every other pending request is.
   */
  async translate(e: LiaisonError): Promise<LiaisonError> {
    if (this.failure || (e.code !== 'E_GROUP' && e.code !== 'E_DEAD') || this.stopped) return this.failure ?? e;
    const until = Date.now() + EXPLAIN_MS;
    while (!this.failure && !this.stopped && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
    return this.failure ?? e;
  }
}

function tailOf(proc: GroupProcess): string {
  const t = proc.stderrTail();
  return t ? `\nLast output of the group:\n${t}` : '';
}

/** How long closing waits for what was queued to finish before it drops the connections. */
export const CLOSE_FLUSH_MS = 10_000;

/** Whether `p` settles (either way) within `ms`. */
export async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((res) => { timer = setTimeout(() => res(false), ms); });
  try {
    return await Promise.race([p.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A rank's error as the group reports it: rank 0's as it is, another's naming its rank. */
export function rankError(r: number, e: unknown): unknown {
  if (r === 0 || !(e instanceof LiaisonError) || e.code === 'E_GROUP') return e;
  return new LiaisonError(e.code, `rank ${r}: ${e.message}`, { op: e.op, index: e.index, param: e.param, handle: e.handle, traceback: e.pythonTraceback, cause: e });
}
