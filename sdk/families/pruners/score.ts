/**
 * Score-based pruners: a plugin writes `score()` — one tensor per weight, shaped as it,
 * higher = more worth keeping — and this base turns scores into masks: top-k over every
 * selected weight at once (`scope: 'global'`) or within each weight (`'layer'`), among the
 * entries still kept, so a pruned entry is never revived. The schedule (one-shot or
 * iterative rounds) and the masking mode are {@link PrunerBase}'s.
 */
import { Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, type Tensor } from '../../../bridge/index.js';
import { PrunerBase, type PrunerBaseConfig, PrunerFields, type PrunerSchedule } from './base.js';
import type { PrunableWeight, PruneContext, ScorePruner, ScopeOfPruning } from './types.js';

/**
 * `scope` with the default `def`: spread into a score-based plugin's schema beside
 * {@link PrunerFields}. Optional in the static type, filled in by the default.
 */
export function scopeField(def: ScopeOfPruning) {
  return Type.Optional(Type.Union([Type.Literal('global'), Type.Literal('layer')], {
    default: def,
    description: "where the top-k runs: 'global' (one threshold over all selected weights; small layers may lose more) or 'layer' (each weight keeps its own (1 − sparsity) share)",
  }));
}

/** Config fields of a score-based pruner (the global scope by default). */
export const ScorePrunerFields = { ...PrunerFields, scope: scopeField('global') };

export interface ScorePrunerConfig extends PrunerBaseConfig {
  /** Where the top-k runs (default 'global'). */
  scope?: ScopeOfPruning;
}

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

export abstract class ScorePrunerBase<C extends PrunerSchedule & { scope?: ScopeOfPruning }> extends PrunerBase<C> implements ScorePruner<C> {
  abstract score(weight: PrunableWeight, ctx: PruneContext, index: number): Tensor;

  get scope(): ScopeOfPruning {
    return this.config.scope ?? 'global';
  }

  /**
   * Exactly `round((1 − sparsity) · n)` entries survive, n counted over all weights
   * (global) or per weight (layer): the indices of the top-k scores are scattered into a
   * flat mask, so ties at the threshold cannot keep extra entries (a `score ≥ threshold`
   * test would keep every tied entry).
   */
  masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
    const { rt } = ctx;
    const scores = weights.map((w, i) => this.score(w, ctx, i));
    if (scores.length !== weights.length || scores.some((s) => s === undefined)) {
      throw new LiaisonError('E_ARG', `${this.id}: score() returned nothing for weight '${weights[scores.findIndex((s) => s === undefined)]?.name}'; it must return a tensor shaped as the weight`);
    }
    const sizes = weights.map((w) => numel(w.shape));
    // entries already pruned rank below every live one: the lowest score minus one, so any
    // range of scores works (|w| ≥ 0, random in [0, 1), negative saliencies)
    const live = (flat: Tensor[]) => {
      const floor = (flat.length === 1 ? flat[0] : rt.cat(flat)).amin().sub(1);
      return flat.map((s, i) => s.where(ctx.current[i].reshape([-1]).gt(0), floor));
    };
    const flat = scores.map((s) => s.reshape([-1]));
    if (this.scope === 'layer') {
      return live(flat).map((s, i) => topMask(s, sizes[i], ctx.sparsity).reshape(weights[i].shape).mul(ctx.current[i]));
    }
    const total = sizes.reduce((a, b) => a + b, 0);
    const ranked = live(flat);
    const all = topMask(ranked.length === 1 ? ranked[0] : rt.cat(ranked), total, ctx.sparsity); // (total,) 1 = keep
    // entries past the live count would only be pruned ones; multiplying keeps them pruned
    const pieces = weights.length === 1 ? [all] : all.split(sizes, 0);
    return pieces.map((m, i) => m.reshape(weights[i].shape).mul(ctx.current[i]));
  }
}

/** (n,) f32 mask: 1 at the `round((1 − sparsity) · n)` largest of the flat `scores`. */
function topMask(scores: Tensor, n: number, sparsity: number): Tensor {
  const keep = Math.round((1 - sparsity) * n);
  const [, idx] = scores.topk(keep, 0, true, false);
  return scores.rt.zeros([n]).scatter(0, idx, 1);
}

/**
 * 0/1 f32 masks shaped as `shapes[i]`, keeping `counts[i]` (a () tensor) entries of weight
 * i drawn uniformly among its live ones (`current[i]` = 1; pruned entries stay pruned): the
 * random-pruning control at another pruner's per-weight counts (imp's `'random'`). Each
 * entry's seeded key is ranked, live ones first, and compared with the count in the
 * runtime, so no count is read back. Queued ops.
 */
export function randomMasksLike(rt: Runtime, shapes: readonly number[][], current: readonly Tensor[], counts: readonly Tensor[], seedOf: (i: number) => number): Tensor[] {
  return shapes.map((shape, i) => {
    const keys = rt.rand([numel(shape)], { seed: seedOf(i) }).where(current[i].reshape([-1]).gt(0), -1);
    const rank = keys.argsort(0, true).argsort(0); // (n,): 0 for the largest key
    return rank.lt(counts[i]).to('f32').reshape([...shape]);
  });
}

/**
 * Shuffle each tensor's entries in place by a seeded permutation (`seedOf(i)` for tensor
 * i): a fresh draw from each tensor's own empirical distribution, whatever made it (imp's
 * `'reinit'` control re-initializes the model's parameters so). Queued ops.
 */
export function permuteEach(rt: Runtime, ts: readonly Tensor[], shapes: readonly (readonly number[])[], seedOf: (i: number) => number): void {
  ts.forEach((t, i) => {
    const perm = rt.call('randperm', [numel(shapes[i])], { seed: seedOf(i) }) as Tensor;
    t.copy_(t.reshape([-1]).gather(0, perm).reshape([...shapes[i]]));
  });
}

/**
 * The masks a pruner had after each of its rounds, in the memory of one set: per weight,
 * the round that pruned each entry (f32, `never` for an entry still kept), so the mask
 * after round r is `prunedAt > r`. Only for nested masks (each round keeps entries among
 * the last's), which is what {@link ScorePrunerBase}'s rounds give. Kept tensors, freed by
 * `free()`; `record`, `masksAt` and `fingerprint` queue ops whose intermediates the
 * caller's `rt.scope()` frees.
 */
export class MaskHistory {
  readonly names: string[];
  readonly shapes: number[][];
  private at: Tensor[];

  constructor(rt: Runtime, weights: readonly { name: string; shape: readonly number[] }[], never: number) {
    this.names = weights.map((w) => w.name);
    this.shapes = weights.map((w) => [...w.shape]);
    this.at = this.shapes.map((s) => rt.full(s, never).keep());
  }

  /** Round `r`'s masks (in the order of the weights): the entries they drop now get r. */
  record(masks: readonly Tensor[], r: number): void {
    this.at.forEach((t, i) => { t.copy_(t.where(masks[i].gt(0), t.clamp(null, r))); });
  }

  /** (shape) f32 0/1 masks after round `r`, for `weights`: E_ARG (from `who`) unless they are the recorded ones. */
  masksAt(r: number, weights: readonly { name: string; shape: readonly number[] }[], who: string): Tensor[] {
    if (weights.length !== this.names.length || weights.some((w, i) => w.name !== this.names[i] || w.shape.join() !== this.shapes[i].join())) {
      const list = (ws: readonly { name: string; shape: readonly number[] }[]) => ws.map((w) => `${w.name} (${w.shape.join('×')})`).join(', ');
      throw new LiaisonError('E_ARG', `${who}: the masks recorded are of ${list(this.names.map((name, i) => ({ name, shape: this.shapes[i] })))}; asked for ${list(weights)}`, { param: 'weights' });
    }
    return this.at.map((t) => t.gt(r).to('f32'));
  }

  /**
   * () f64: a checksum of the masks after every round up to `r` (the record clamped at
   * r + 1 holds them all), each entry weighted by a fixed pseudo-random factor, so that
   * masks of the same counts at other positions differ (a plain sum would not).
   */
  fingerprint(rt: Runtime, r: number): Tensor {
    const parts = this.at.map((t, i) => t.clamp(null, r + 1).to('f64').mul(rt.rand(this.shapes[i], { seed: 7919 + i }).to('f64')).sum().reshape([1]));
    return (parts.length === 1 ? parts[0] : rt.cat(parts)).sum();
  }

  /** The record by weight name under `prefix`, for a plugin's checkpoint state. */
  state(prefix: string): Record<string, Tensor> {
    return Object.fromEntries(this.names.map((n, i) => [`${prefix}${n}`, this.at[i]]));
  }

  free(): void {
    for (const t of this.at) t.free();
    this.at = [];
  }
}
