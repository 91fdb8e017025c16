/**
 * Metrics a training run writes: JSON Lines (one object per logged step, epoch,
 * evaluation and checkpoint) and, where the runtime's Python has TensorBoard, event files.
 *
 * A JSONL record always has `kind`, `epoch`, `step` and `time` (ISO 8601); the rest
 * depends on the kind:
 *
 * | kind         | fields                                                    |
 * |--------------|-----------------------------------------------------------|
 * | `step`       | `loss` (mean since the previous record), `lr`             |
 * | `epoch`      | `loss` (mean over the epoch), `seconds`, `evalLoss?`, `accuracy?` |
 * | `eval`       | `loss`, `accuracy?` (classification)                      |
 * | `checkpoint` | `path`                                                    |
 */
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';

export type MetricKind = 'step' | 'epoch' | 'eval' | 'checkpoint';

/** One line of a metrics file. */
export interface MetricRecord {
  kind: MetricKind;
  /** Epoch, from 0 (the epoch the record belongs to). */
  epoch: number;
  /** Optimizer steps done so far. */
  step: number;
  /** ISO 8601 wall-clock time of the record. */
  time: string;
  loss?: number;
  lr?: number;
  accuracy?: number;
  evalLoss?: number;
  seconds?: number;
  path?: string;
}

/** Appends records to a JSONL file as they come (a crash loses nothing already logged). */
export class MetricsLog {
  private fd: number | null;

  /** Open `path` for appending; parent folders are made. */
  constructor(readonly path: string) {
    try {
      mkdirSync(dirname(path), { recursive: true });
      this.fd = openSync(path, 'a');
    } catch (e) {
      throw new LiaisonError('E_ARG', `metricsFile: cannot open ${path} for writing: ${(e as Error).message}`, { param: 'metricsFile', cause: e });
    }
  }

  /** Append one record (the time is filled in when missing). */
  write(rec: Omit<MetricRecord, 'time'> & { time?: string }): void {
    if (this.fd === null) throw new LiaisonError('E_CLOSED', `metrics log ${this.path} is closed`);
    const line = JSON.stringify({ ...rec, time: rec.time ?? new Date().toISOString() });
    writeSync(this.fd, line + '\n');
  }

  close(): void {
    if (this.fd !== null) closeSync(this.fd);
    this.fd = null;
  }
}

/** Every record of a JSONL metrics file, in order. */
export function readMetrics(path: string): MetricRecord[] {
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim()).map((l, i) => {
    try {
      return JSON.parse(l) as MetricRecord;
    } catch (e) {
      throw new LiaisonError('E_ARG', `readMetrics: line ${i + 1} of ${path} is not JSON`, { cause: e });
    }
  });
}

/**
 * TensorBoard scalars, written by the runtime (torch.utils.tensorboard) straight from
 * tensors it holds, so logging a loss costs no read. Made with {@link TensorBoard.open},
 * which resolves to null — after one line on stderr — where the runtime's Python has no
 * `tensorboard` package or may not write files.
 */
export class TensorBoard {
  private constructor(private readonly rt: Runtime, private readonly writer: Tensor, readonly logdir: string) {
    writer.keep(); // held until close(), whatever rt.scope() opened it
  }

  /** A writer into `logdir` (made if missing), or null with a one-line notice when TensorBoard cannot be used. */
  static async open(rt: Runtime, logdir: string, notice: (line: string) => void = (l) => process.stderr.write(l + '\n')): Promise<TensorBoard | null> {
    if (!rt.info.ops.includes('tb_writer')) {
      notice(`liaison: tensorboardDir is set, but this runtime has no TensorBoard ops; not writing TensorBoard logs`);
      return null;
    }
    const writer = rt.call('tb_writer', [logdir]) as Tensor;
    try {
      await rt.flush();
    } catch (e) {
      notice(`liaison: not writing TensorBoard logs: ${(e as Error).message.split('\n')[0]}`);
      return null;
    }
    return new TensorBoard(rt, writer, logdir);
  }

  /** Queue `tag` = `value` (a () tensor or a number) at `step`. */
  scalar(tag: string, value: Tensor | number, step: number): void {
    const v = typeof value === 'number' ? this.rt.full([], value) : value;
    this.rt.call('tb_scalar', [this.writer, tag, v, step], undefined, 0);
    if (v !== value) v.free(); // a number's tensor is ours: freed once the op has it
  }

  /** Write what is buffered to disk (queued; the runtime flushes in order). */
  flush(): void {
    this.rt.call('tb_flush', [this.writer], undefined, 0);
  }

  /** Write what is buffered, close the event file, and drop the writer. */
  close(): void {
    this.rt.call('tb_close', [this.writer], undefined, 0);
    this.writer.free();
  }
}
