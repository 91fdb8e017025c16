/**
 * The pipeline of sent training steps of a TrainingLoop (sdk/loop.ts; the Trainer's too):
 * steps are queued, sent in groups of half the window (each group one batch, one round
 * trip), and at most `inFlight` are ever unconfirmed, so the runtime always has the next
 * group while TypeScript waits for the oldest. A step's own reads (its loss, when logged)
 * go out in its group's batch: `send(read)` counts them into the group.
 */
import type { Runtime } from '../bridge/index.js';

/** A group of steps sent in one batch, and its completion (an Error if it failed; never rejects). */
interface Sent { steps: number; done: Promise<unknown> }

/** Steps sent ahead of the runtime: `add()` per step queued, `send()` per group (or logged step, or epoch end). */
export class StepWindow {
  /** Steps per group: half the window (at least 1). */
  readonly group: number;
  /** Steps queued, not sent. */
  private queued = 0;
  /** Steps sent, not known done. */
  private outstanding = 0;
  private readonly pending: Sent[] = [];

  constructor(private readonly rt: Runtime, private readonly inFlight: number) {
    this.group = Math.max(1, Math.floor(inFlight / 2));
  }

  /** Count one step queued (its ops are in the runtime's queue). */
  add(): void {
    this.queued++;
  }

  /** A whole group is queued: time to send it. */
  get full(): boolean {
    return this.queued >= this.group;
  }

  /**
   * Send what is queued as one batch, with `extra` (reads of this batch) counted into the
   * group's completion; then wait until a whole next group fits, so that at most
   * `inFlight` steps are ever unconfirmed. Waiting here, with nothing queued, also keeps the
   * next group (and an epoch's first ops) in one batch. A failed earlier group throws here.
   */
  async send(extra: Promise<unknown> | null): Promise<void> {
    this.pending.push({ steps: this.queued, done: settle(Promise.all([this.rt.flush(), extra])) });
    this.outstanding += this.queued;
    this.queued = 0;
    while (this.outstanding > 0 && this.outstanding + this.group > this.inFlight) await this.drain(1);
  }

  /** Wait for every group sent; the first failure among them is thrown. */
  async drainAll(): Promise<void> {
    await this.drain(this.pending.length);
  }

  /**
   * Wait for every group still in flight, never throwing, and start afresh: after a
   * failure, so that their records reach the log before it closes and no event fires after
   * fit() has settled. Steps queued and not sent are forgotten (the next send carries them).
   */
  async settled(): Promise<void> {
    const groups = this.pending.splice(0);
    await Promise.all(groups.map((g) => g.done));
    this.outstanding = 0;
    this.queued = 0;
  }

  /** Wait for the oldest `n` groups; the first failure among them is thrown. */
  private async drain(n: number): Promise<void> {
    const groups = this.pending.splice(0, n);
    const done = await Promise.all(groups.map((g) => g.done));
    this.outstanding -= groups.reduce((a, g) => a + g.steps, 0);
    const err = done.find((r) => r instanceof Error);
    if (err) throw err;
  }
}

/** A promise that never rejects: it resolves to the error instead (checked by drain). */
function settle(p: Promise<unknown>): Promise<unknown> {
  return p.then(() => null, (e: unknown) => (e instanceof Error ? e : new Error(String(e))));
}
