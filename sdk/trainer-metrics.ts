/**
 * Metrics plugins add with `TrainingHooks.addMetric` (a router's entropy and load, …): traced
 * tensors the step program returns beside its loss, kept per step and read back with the
 * loss, in the same batch (no round trip of their own). The Trainer reports their means over
 * the steps since the last log in each `progress` event and over the epoch in each `epoch`
 * event, under `metrics[name]`: a 0-d tensor as a number, any other as a flat number[]
 * (its mean over those steps, element by element).
 */
import type { Runtime, Tensor } from '../bridge/index.js';

/** A metric's value as events report it. */
export type MetricValue = number | number[];

/** Each step's metric tensors (in the order the metrics were added), for one epoch. */
export class StepMetrics {
  private readonly rows: Tensor[][] = [];

  constructor(private readonly rt: Runtime, private readonly names: readonly string[]) {}

  get size(): number {
    return this.names.length;
  }

  /** One step's outputs past the loss. */
  push(values: readonly Tensor[]): void {
    if (this.names.length) this.rows.push([...values]);
  }

  /**
   * The means over steps [from, to) of every metric, queued now and resolved with the
   * batch that carries them; undefined without metrics or steps.
   */
  summary(from: number, to: number): Promise<Record<string, MetricValue>> | undefined {
    const rows = this.rows.slice(from, to);
    if (!this.names.length || !rows.length) return undefined;
    const reads = this.names.map((name, j) => {
      const all = this.rt.stack(rows.map((r) => r[j]));
      const f32 = all.to('f32');
      const mean = f32.mean(0);
      all.free();
      f32.free();
      return mean.data().then((d): [string, MetricValue] => [name, d.shape.length === 0 ? Number((d.data as ArrayLike<number>)[0]) : Array.from(d.data as ArrayLike<number>, Number)]).finally(() => mean.free());
    });
    return Promise.all(reads).then((kv) => Object.fromEntries(kv));
  }

  /** Free every step's tensors (once their reads are queued). */
  free(): void {
    for (const r of this.rows) for (const t of r) t.free();
    this.rows.length = 0;
  }
}
