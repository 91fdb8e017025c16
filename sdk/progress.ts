/**
 * A terminal progress bar for training (cli-progress), on stderr so that a program's
 * stdout stays its own.
 *
 * 'auto' shows the bar only when stderr is a terminal: a service or a CI log gets
 * nothing (it has the Trainer's events and the metrics file instead); 'bar' shows it
 * always (redrawn on a terminal, printed line by line elsewhere); 'none' prints nothing.
 */
import cliProgress from 'cli-progress';

export type ProgressMode = 'auto' | 'bar' | 'none';

/** What the bar shows besides the step count. */
export interface ProgressValues {
  epoch: number;
  epochs: number;
  /** The latest logged training loss (NaN until one is). */
  loss: number;
}

/** The loop's view of a progress display. */
export interface ProgressView {
  start(totalSteps: number, values: ProgressValues): void;
  /** Steps done so far (of this run). */
  update(steps: number, values?: Partial<ProgressValues>): void;
  stop(): void;
}

const SILENT: ProgressView = { start() {}, update() {}, stop() {} };

/** The display for `mode`, drawing on `stream` (default stderr). */
export function progressView(mode: ProgressMode, stream: NodeJS.WriteStream = process.stderr): ProgressView {
  if (mode === 'none' || (mode === 'auto' && !stream.isTTY)) return SILENT;
  const bar = new cliProgress.SingleBar({
    stream,
    format: ' {bar} {percentage}% | epoch {epoch}/{epochs} | step {value}/{total} | loss {loss} | {eta_formatted} left',
    barCompleteChar: '\u2588',
    barIncompleteChar: '\u2591',
    hideCursor: stream.isTTY,
    // off a terminal ('bar' asked for explicitly): a plain line every few seconds
    noTTYOutput: !stream.isTTY,
    notTTYSchedule: 5000,
    etaBuffer: 50,
  });
  const show = (v: Partial<ProgressValues>) => {
    const out: Record<string, string | number> = {};
    if (v.epoch !== undefined) out.epoch = v.epoch;
    if (v.epochs !== undefined) out.epochs = v.epochs;
    if (v.loss !== undefined) out.loss = Number.isFinite(v.loss) ? v.loss.toFixed(4) : '-';
    return out;
  };
  return {
    start(total, values) { bar.start(total, 0, show(values)); },
    update(steps, values = {}) { bar.update(steps, show(values)); },
    stop() { bar.stop(); },
  };
}
