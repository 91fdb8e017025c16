/**
 * Losses and evaluation, shared by the Trainer's step program and its evaluations (and
 * usable without a Trainer: `evaluate(model, test, { loss: 'cross_entropy' })`).
 */
import { LiaisonError, type Tensor } from '../bridge/index.js';
import { type Batch, Dataset, type TextCorpus } from './data.js';
import type { Model } from './model.js';
import type { EvalResult } from './trainer-types.js';

export type LossKind = 'cross_entropy' | 'mse';

/**
 * () f32: the loss of outputs `out` against targets `y` of rank `yRank`. cross_entropy:
 * logits (B, C) against (B) class indices, or (B, T, C) against (B, T) (one row per
 * token); mse: (B, 1) or (B) outputs against (B) targets, or (B, k) against (B, k).
 * Queued ops only, so a traced step may call it.
 */
export function lossOf(kind: LossKind, out: Tensor, y: Tensor, yRank: number): Tensor {
  if (kind === 'mse') return out.rt.call('mse_loss', [yRank === 1 ? out.squeeze(-1) : out, y]) as Tensor;
  return out.rt.call('cross_entropy', yRank > 1 ? [out.flatten(0, -2), y.flatten()] : [out, y]) as Tensor;
}

/** E_ARG when `kind` does not suit the targets (class indices or floats) of `what` (named in the message). */
export function checkTargets(kind: LossKind, classification: boolean, what = 'this data'): void {
  if (kind === 'cross_entropy' && !classification) throw new LiaisonError('E_ARG', `loss 'cross_entropy' needs integer class targets, and ${what}'s y is float; use loss 'mse' for regression`, { param: 'loss' });
  if (kind === 'mse' && classification) throw new LiaisonError('E_ARG', `loss 'mse' needs float targets, and ${what}'s y holds class indices; use loss 'cross_entropy'`, { param: 'loss' });
}

export interface EvaluateOptions {
  loss: LossKind;
  /** Rows per forward pass (default 1024). */
  batchSize?: number;
  /** Text: the window length in tokens (required for a TextCorpus). */
  context?: number;
  /** Text: at most this many windows. */
  maxWindows?: number;
}

/**
 * Loss (and accuracy, for classes) of `model` on `data`: forward in eval mode in chunks of
 * `batchSize` rows, read back in one round trip. For text: consecutive held-out windows of
 * `context` tokens; accuracy is next-token accuracy and the perplexity is exp(loss).
 */
export async function evaluate(model: Model, data: Dataset | TextCorpus, opts: EvaluateOptions): Promise<EvalResult> {
  const rt = model.rt;
  const text = !(data instanceof Dataset);
  checkTargets(opts.loss, text || data.classification);
  if (text && (!Number.isInteger(opts.context) || (opts.context as number) < 1)) throw new LiaisonError('E_ARG', 'evaluate: text needs opts.context, the window length in tokens', { param: 'context' });
  const rows = opts.batchSize ?? 1024;
  if (!Number.isInteger(rows) || rows < 1) throw new LiaisonError('E_ARG', `evaluate: batchSize must be an integer >= 1, got ${JSON.stringify(opts.batchSize)}`, { param: 'batchSize' });
  if (opts.maxWindows !== undefined && opts.maxWindows !== Infinity && (!Number.isInteger(opts.maxWindows) || opts.maxWindows < 1)) {
    throw new LiaisonError('E_ARG', `evaluate: maxWindows must be an integer >= 1, got ${JSON.stringify(opts.maxWindows)}`, { param: 'maxWindows' });
  }
  return rt.scope(async () => {
    let parts: Batch[];
    let n: number;
    if (data instanceof Dataset) {
      parts = data.batches(rows, { shuffle: false });
      n = data.size;
    } else {
      const w = data.windows(opts.context as number, opts.maxWindows);
      const sizes = Array.from({ length: Math.ceil(w.count / rows) }, (_, i) => Math.min(rows, w.count - i * rows));
      const xs = sizes.length > 1 ? w.x.split(sizes) : [w.x];
      const ys = sizes.length > 1 ? w.y.split(sizes) : [w.y];
      parts = sizes.map((size, i) => ({ x: xs[i], y: ys[i], size }));
      n = w.count;
    }
    const classification = text || (data as Dataset).classification;
    const yRank = text ? 2 : (data as Dataset).yShape.length;
    const losses: Tensor[] = [];
    const accs: Tensor[] = [];
    for (const b of parts) {
      const out = model.forward(b.x, { train: false });
      // weighted by rows, so that a smaller last chunk counts for what it holds
      losses.push(lossOf(opts.loss, out, b.y, yRank).mul(b.size));
      if (classification) accs.push((rt.call('accuracy', [out, b.y]) as Tensor).mul(b.size));
    }
    // both reads ride in one batch; awaited together, so that when the batch fails the
    // second read's rejection is handled too (awaiting one after the other left it unhandled)
    const [loss, acc] = await Promise.all([
      rt.stack(losses).sum().div(n).item(),
      classification ? rt.stack(accs).sum().div(n).item() : undefined,
    ]);
    const r: EvalResult = { loss };
    if (acc !== undefined) r.accuracy = acc;
    if (text) r.perplexity = Math.exp(r.loss);
    return r;
  });
}
