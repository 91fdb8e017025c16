/**
 * The recorder hook of a session: while sdk/program.ts traces a program, ops go to its
 * recorder instead of the queue, and whatever would need a value fails with E_TRACE.
 */
import type { OpRecorder } from './contract.js';
import { LiaisonError } from './errors.js';
import type { Tensor } from './tensor.js';

export class TraceHook {
  /** The recorder of the trace running now, or null. */
  recorder: OpRecorder | null = null;

  /** Run `fn` with ops recorded into `recorder`; `fn` is synchronous, so nothing else queues meanwhile. */
  recording<T>(recorder: OpRecorder, fn: () => T): T {
    if (this.recorder) throw new LiaisonError('E_TRACE', `cannot trace program '${recorder.label}' inside program '${this.recorder.label}'`);
    this.recorder = recorder;
    try {
      return fn();
    } finally {
      this.recorder = null;
    }
  }

  /** Run `fn` for real, outside the trace (data a traced function uploads is a constant of the program). */
  paused<T>(fn: () => T): T {
    const rec = this.recorder;
    this.recorder = null;
    try { return fn(); } finally { this.recorder = rec; }
  }

  /** E_TRACE for something a program cannot do (`what`), reported to the trace running now. */
  error(what: string, t?: Tensor): LiaisonError {
    const rec = this.recorder ?? (t?.traced as OpRecorder | undefined);
    const e = new LiaisonError('E_TRACE', `program '${rec?.label}': ${what}. A program runs inside the runtime without coming back to TypeScript, so its code cannot depend on tensor values: use where(), masks, topk or sort instead of an if on a value`);
    this.recorder?.fail(e);
    return e;
  }

  /** Refuse a tensor of another trace as an argument here. */
  checkOwn(t: Tensor): void {
    if (t.traced && t.traced !== this.recorder) {
      const e = new LiaisonError('E_TRACE', `tensor #${t.id} belongs to the trace of program '${(t.traced as OpRecorder).label}' and exists only inside it; use the program's outputs instead`);
      this.recorder?.fail(e);
      throw e;
    }
  }
}

/**
 * A rejection already reported elsewhere (a trace error, thrown by trace() itself): the
 * promise still rejects for whoever awaits it, but is not an unhandled rejection if nobody does.
 */
export function refused<T>(e: Error): Promise<T> {
  const p = Promise.reject(e);
  p.catch(() => undefined);
  return p;
}
