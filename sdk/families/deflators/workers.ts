/**
 * The workers of Parallel Deflation (Liao, Su, Kyrillidis, "Provable Model-Parallel
 * Distributed PCA with Parallel Deflation", CPAL 2025, https://arxiv.org/abs/2502.17615)
 * and the boundary between them.
 *
 * Worker k targets the k-th eigenvector. In each round it takes only the coordinator's
 * {@link Broadcast} of the previous round — its predecessors' estimates v_{k'} and their
 * Rayleigh values λ_{k'} = v_{k'}ᵀΣv_{k'} — deflates the ORIGINAL matrix with them,
 *
 *     Σ_k = Σ − Σ_{k'<k} λ_{k'} v_{k'} v_{k'}ᵀ,
 *
 * runs T local steps warm-started from its own last estimate, and hands back its new
 * estimate and λ_k. Nothing else crosses the boundary, so a worker could live in another
 * process: {@link powerWorkerRound} and {@link hebbianWorkerRound} are one worker's round
 * as a function of exactly those inputs, and {@link PerWorkerPool} runs the workers that
 * way, one after the other.
 *
 * Workers that share one runtime run batched instead ({@link BatchedPool}): the T local
 * steps of all joined workers as matrix–matrix products, Σ·X (d, d)·(d, A), with the
 * deflation as (d, A)·(A, A) products masked strictly upper-triangular (worker k sees only
 * k' < k), traced once into a program replayed every round — no round trip per round.
 * Both pools compute the same numbers (test/deflators.test.ts checks it).
 */
import type { DType, Runtime, Tensor } from '../../../bridge/index.js';
import { define, type Program } from '../../program.js';
import { normalizeColumns } from './base.js';

/** What the coordinator sends every worker after a round. */
export interface Broadcast {
  /** (d, a): column k' is worker k''s estimate (unit norm), for the a workers joined so far. */
  vectors: Tensor;
  /** (a,): λ_{k'}, the weight of v_{k'} in its successors' deflation. */
  values: Tensor;
}

/** Power iteration on the deflated matrix, T steps a round. */
export interface PowerRule { mode: 'power'; cov: Tensor; steps: number }
/** Hebb's rule on minibatches of centered data rows (n, d), T steps a round. */
export interface HebbianRule { mode: 'hebbian'; data: Tensor; dim: number; dtype: DType; steps: number; batchSize: number; lr: number; lrDecay: number }
/** How a worker improves its estimate in its local steps. */
export type LocalRule = PowerRule | HebbianRule;

/** Σ_k y for a block of workers' columns: y − V·(mask ⊙ λ ⊙ VᵀX), broadcast V (d, m), λ (m,), x (d, A). */
function deflate(y: Tensor, x: Tensor, v: Tensor, lambda: Tensor, mask: Tensor | null): Tensor {
  const coef = v.T.matmul(x).mul(lambda.unsqueeze(1)); // (m, A): λ_{k'} ⟨v_{k'}, x_k⟩
  return y.sub(v.matmul(mask ? coef.mul(mask) : coef));
}

/** What a block of workers deflates with: the broadcast, and the (m, A) mask of whom each sees (null: all of it). */
interface Deflation { v: Tensor; lambda: Tensor; mask: Tensor | null }

/**
 * T power steps x ← Σ_k x / ‖Σ_k x‖ for a block of workers x (d, A), Σx (d, A) carried in so
 * that the first step needs no new product. Returns x, Σx and λ = xᵀΣx per worker (A,).
 */
function powerSteps(rule: PowerRule, x: Tensor, sx: Tensor, by: Deflation | null): { x: Tensor; sx: Tensor; values: Tensor } {
  for (let t = 0; t < rule.steps; t++) {
    if (t > 0) sx = rule.cov.matmul(x);
    x = normalizeColumns(by ? deflate(sx, x, by.v, by.lambda, by.mask) : sx);
  }
  sx = rule.cov.matmul(x);
  return { x, sx, values: x.mul(sx).sum(0) };
}

/**
 * T Hebbian steps for a block of workers x (d, A): for each minibatch of rows Y_t (B, d)
 * (`rows` (T, B) i64), Σ̂ = Y_tᵀY_t / B and x ← normalize(x + η_t Σ̂_k x), where
 * η_t = lr / ((1 + (age + t) / lrDecay) · ρ̂_t), ρ̂_t = xᵀΣ̂x the minibatch Rayleigh value
 * (so that lr does not depend on the data's scale) and `age` (a number, or (A,) per worker)
 * the local steps before this round. λ per worker (A,): the mean of the round's ρ̂_t.
 */
function hebbianSteps(rule: HebbianRule, x: Tensor, by: Deflation | null, rows: Tensor, age: number | Tensor): { x: Tensor; values: Tensor } {
  let acc: Tensor | null = null;
  for (let t = 0; t < rule.steps; t++) {
    const yb = rule.data.indexSelect(0, rows.narrow(0, t, 1).reshape([-1])); // (B, d)
    const p = yb.matmul(x); // (B, A)
    const rho = p.square().sum(0).div(rule.batchSize); // (A,)
    const s = yb.T.matmul(p).div(rule.batchSize); // (d, A): Σ̂x
    const g = by ? deflate(s, x, by.v, by.lambda, by.mask) : s;
    const decay = typeof age === 'number' ? 1 + (age + t) / rule.lrDecay : age.add(t).div(rule.lrDecay).add(1);
    const eta = rho.clamp(1e-30).mul(decay).reciprocal().mul(rule.lr); // (A,)
    x = normalizeColumns(x.add(g.mul(eta)));
    acc = acc ? acc.add(rho) : rho;
  }
  return { x, values: acc!.div(rule.steps) };
}

/** A worker's predecessors' part of the broadcast, as what it deflates with. */
const alone = (preds: Broadcast | null): Deflation | null => (preds ? { v: preds.vectors, lambda: preds.values, mask: null } : null);

/**
 * One worker's round in power mode: T steps from its own x (d, 1) and Σx (d, 1). `preds` is
 * the broadcast cut to its predecessors (null for worker 0). Returns the new x, Σx and
 * λ = xᵀΣx: T matrix–vector products in all.
 */
export function powerWorkerRound(rule: PowerRule, own: { x: Tensor; sx: Tensor }, preds: Broadcast | null): { x: Tensor; sx: Tensor; value: Tensor } {
  const r = powerSteps(rule, own.x, own.sx, alone(preds));
  return { x: r.x, sx: r.sx, value: r.values.reshape([]) };
}

/**
 * One worker's round in Hebbian mode (`hebbianSteps` for one column): `age` is the worker's
 * local steps before this round. 2·B·d multiply–adds a step.
 */
export function hebbianWorkerRound(rule: HebbianRule, x: Tensor, preds: Broadcast | null, rows: Tensor, age: number): { x: Tensor; value: Tensor } {
  const r = hebbianSteps(rule, x, alone(preds), rows, age);
  return { x: r.x, value: r.values.reshape([]) };
}

/** Matrix–vector-product equivalents of one worker's Hebbian round: 2·B·d multiply–adds a step, d² a matvec. */
export function hebbianCost(rule: HebbianRule): number {
  return (rule.steps * 2 * rule.batchSize) / rule.dim;
}

/** Workers 0..A−1 of one fit, driven round by round by a coordinator. */
export interface WorkerPool {
  /** Matrix–vector products (with the d×d matrix, or their multiply–add equivalent) so far. */
  readonly matvecs: number;
  /** The next worker joins with its start x (d, 1), unit norm. */
  join(start: Tensor): void;
  /**
   * One round: every joined worker runs its local steps against `prev`, the previous round's
   * broadcast (null in the first round), and this round's broadcast comes back, valid until
   * the next round. `rows` (T, B) i64: the round's minibatch row indices (Hebbian mode).
   */
  round(prev: Broadcast | null, rows?: Tensor): Broadcast;
  free(): void;
}

interface WorkerState { x: Tensor; sx?: Tensor; age: number }

/** Every worker on its own, fed only its predecessors' part of the broadcast. */
export class PerWorkerPool implements WorkerPool {
  matvecs = 0;
  private readonly workers: WorkerState[] = [];
  private held: Tensor[] = [];

  constructor(private readonly rt: Runtime, private readonly rule: LocalRule) {}

  join(start: Tensor): void {
    const w: WorkerState = { x: start, age: 0 };
    if (this.rule.mode === 'power') {
      w.sx = this.rule.cov.matmul(start);
      this.matvecs += 1;
    }
    this.workers.push(w);
  }

  round(prev: Broadcast | null, rows?: Tensor): Broadcast {
    const { rule } = this;
    const outs = this.workers.map((w, k) => {
      const preds = k > 0 && prev ? { vectors: prev.vectors.narrow(1, 0, k), values: prev.values.narrow(0, 0, k) } : null;
      if (rule.mode === 'power') {
        const r = powerWorkerRound(rule, { x: w.x, sx: w.sx! }, preds);
        Object.assign(w, { x: r.x, sx: r.sx });
        this.matvecs += rule.steps;
        return r;
      }
      const r = hebbianWorkerRound(rule, w.x, preds, rows!, w.age);
      w.x = r.x;
      w.age += rule.steps;
      this.matvecs += hebbianCost(rule);
      return r;
    });
    for (const t of this.held) t.free();
    const out = { vectors: this.rt.cat(outs.map((o) => o.x), 1), values: this.rt.stack(outs.map((o) => o.value)) };
    this.held = [out.vectors, out.values];
    return out;
  }

  free(): void {
    for (const t of this.held) t.free();
  }
}

/** (A, A) with [k', k] = 1 where k' < k: worker k deflates with its predecessors only. */
function predecessors(rt: Runtime, v: Tensor, x: Tensor): Tensor {
  return (rt.call('ones_like', [v.T.matmul(x)]) as Tensor).triu(1);
}

/** All joined workers of one runtime at once: one program run per round. */
export class BatchedPool implements WorkerPool {
  matvecs = 0;
  private x: Tensor | null = null; // (d, a) the workers' estimates = the last broadcast's vectors
  private sx: Tensor | null = null; // (d, a) Σx (power mode)
  private values: Tensor | null = null; // (a,) the last broadcast's values
  private readonly pending: Tensor[] = []; // starts of workers that join at the next round
  private readonly ages: number[] = [];
  private readonly program: Program;

  constructor(private readonly rt: Runtime, private readonly rule: LocalRule) {
    // one program for every round: the worker count A is a symbolic size
    this.program = rule.mode === 'power'
      ? define(rt, { name: 'parallel-deflation.power', inputs: { x: {}, sx: {}, v: {}, lambda: {} } }, ({ x, sx, v, lambda }) =>
        powerSteps(rule, x, sx, { v, lambda, mask: predecessors(rt, v, x) }))
      // co-located workers share each step's minibatch; separate ones would draw their own
      : define(rt, { name: 'parallel-deflation.hebbian', inputs: { x: {}, v: {}, lambda: {}, rows: {}, age: {} } }, ({ x, v, lambda, rows, age }) =>
        hebbianSteps(rule, x, { v, lambda, mask: predecessors(rt, v, x) }, rows, age));
  }

  join(start: Tensor): void {
    this.pending.push(start);
    this.ages.push(0);
  }

  /** `prev` must be this pool's last broadcast (its own workers' estimates). */
  round(prev: Broadcast | null, rows?: Tensor): Broadcast {
    const { rt, rule } = this;
    const made: Tensor[] = [];
    const keep = (t: Tensor) => { made.push(t); return t; };
    let x = this.x, sx = this.sx, v = prev?.vectors ?? null, lambda = prev?.values ?? null;
    if (this.pending.length) {
      // newcomers: their starts join the block; their broadcast columns are zero (they deflate nothing yet)
      const starts = keep(rt.cat(this.pending, 1)); // (d, n)
      const zeros = keep(starts.mul(0));
      x = keep(x ? rt.cat([x, starts], 1) : starts);
      v = keep(v ? rt.cat([v, zeros], 1) : zeros);
      lambda = keep(lambda ? rt.cat([lambda, zeros.sum(0)], 0) : zeros.sum(0));
      if (rule.mode === 'power') {
        const s0 = keep(rule.cov.matmul(starts));
        sx = keep(sx ? rt.cat([sx, s0], 1) : s0);
        this.matvecs += this.pending.length;
      }
      this.pending.length = 0;
    }
    const a = this.ages.length;
    let out: { x: Tensor; sx?: Tensor; values: Tensor };
    if (rule.mode === 'power') {
      out = this.program.run({ x: x!, sx: sx!, v: v!, lambda: lambda! }) as typeof out;
      this.matvecs += rule.steps * a;
    } else {
      const age = keep(rt.tensor(this.ages, [a], rule.dtype));
      out = this.program.run({ x: x!, v: v!, lambda: lambda!, rows: rows!, age }) as typeof out;
      this.matvecs += hebbianCost(rule) * a;
      this.ages.forEach((g, i) => { this.ages[i] = g + rule.steps; });
    }
    for (const t of [...made, this.x, this.sx, this.values]) t?.free();
    this.x = out.x;
    this.sx = out.sx ?? null;
    this.values = out.values;
    return { vectors: out.x, values: out.values };
  }

  free(): void {
    for (const t of [this.x, this.sx, this.values]) t?.free();
    this.program.free();
  }
}
