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
 * as a function of exactly those inputs.
 *
 * {@link deflationWorkers} writes this as a spec of the SDK's workers (sdk/workers/,
 * docs/workers.md): a broadcast boundary, worker k joining at round k. The `sequential`
 * placement runs each worker alone; the `batched` one runs its co-located form
 * ({@link DeflationBlock}): the T local steps of all joined workers as matrix–matrix
 * products, Σ·X (d, d)·(d, A), with the deflation as (d, A)·(A, A) products masked strictly
 * upper-triangular (worker k sees only k' < k), traced once into a program replayed every
 * round — no round trip per round. Both compute the same numbers (test/deflators.test.ts).
 */
import type { DType, Runtime, Tensor } from '../../../bridge/index.js';
import { define, type Program } from '../../program.js';
import type { Colocated, WorkerSpec } from '../../workers/types.js';
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
export function deflate(y: Tensor, x: Tensor, v: Tensor, lambda: Tensor, mask: Tensor | null): Tensor {
  const coef = v.T.matmul(x).mul(lambda.unsqueeze(1)); // (m, A): λ_{k'} ⟨v_{k'}, x_k⟩
  return y.sub(v.matmul(mask ? coef.mul(mask) : coef));
}

/** What a block of workers deflates with: the broadcast, and the (m, A) mask of whom each sees (null: all of it). */
export interface Deflation { v: Tensor; lambda: Tensor; mask: Tensor | null }

/**
 * T power steps x ← Σ_k x / ‖Σ_k x‖ for a block of workers x (d, A), Σx (d, A) carried in so
 * that the first step needs no new product. Returns x, Σx and λ = xᵀΣx per worker (A,).
 */
export function powerSteps(rule: PowerRule, x: Tensor, sx: Tensor, by: Deflation | null): { x: Tensor; sx: Tensor; values: Tensor } {
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
export function hebbianSteps(rule: HebbianRule, x: Tensor, by: Deflation | null, rows: Tensor, age: number | Tensor): { x: Tensor; values: Tensor } {
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

/** One worker's state: its estimate x (d, 1), Σx (power mode), its Rayleigh value, its local steps so far. */
export interface DeflationWorker { x: Tensor; sx?: Tensor; value?: Tensor; age: number }
/** What one worker sends: its estimate (d, 1) and λ (). */
export interface DeflationMessage { x: Tensor; value: Tensor }

/**
 * Parallel Deflation's K workers as a worker spec: worker k (0-based) starts from column k
 * of `starts` (d, K) and joins at round k + 1; the boundary is a broadcast, gathered into
 * one {@link Broadcast} of the joined workers in order; `dtype` the working one. `rows(round)` draws the round's
 * minibatch row indices (T, B) in Hebbian mode.
 */
export function deflationWorkers(rt: Runtime, rule: LocalRule, starts: Tensor, k: number, dtype: DType, rows?: (round: number) => Tensor): WorkerSpec<DeflationWorker, DeflationMessage, Broadcast> {
  return {
    name: `parallel-deflation.${rule.mode}`,
    workers: k,
    joinRound: (w) => w + 1,
    localSteps: rule.steps,
    dtype,
    init: (w) => ({ x: starts.narrow(1, w, 1), age: 0 }),
    step: (s, view, ctx) => {
      const w = ctx.worker;
      const preds = w > 0 && view ? { vectors: view.vectors.narrow(1, 0, w), values: view.values.narrow(0, 0, w) } : null;
      if (rule.mode === 'power') {
        // Σx of a newcomer's start here, not in init: the co-located block computes its own from the joined columns
        const r = powerWorkerRound(rule, { x: s.x, sx: s.sx ?? rule.cov.matmul(s.x) }, preds);
        return { x: r.x, sx: r.sx, value: r.value, age: s.age + rule.steps };
      }
      const r = hebbianWorkerRound(rule, s.x, preds, ctx.input!, s.age);
      return { x: r.x, value: r.value, age: s.age + rule.steps };
    },
    publish: (s) => ({ x: s.x, value: s.value! }),
    boundary: {
      kind: 'broadcast',
      gather: (ms) => ({ vectors: rt.cat(ms.map((m) => m.x), 1), values: rt.stack(ms.map((m) => m.value)) }),
    },
    ...(rows ? { roundInput: (r: number) => rows(r) } : {}),
    colocated: (art) => new DeflationBlock(art, rule, typeof starts.shape?.[0] === 'number' ? starts.shape[0] : undefined),
  };
}

/** Matrix–vector products (or their multiply–add equivalent) of a round in which `active` workers ran and `joined` joined. */
export function roundMatvecs(rule: LocalRule, active: number, joined: number): number {
  return rule.mode === 'power' ? joined + rule.steps * active : hebbianCost(rule) * active;
}

/** (A, A) with [k', k] = 1 where k' < k: worker k deflates with its predecessors only. */
function predecessors(rt: Runtime, v: Tensor, x: Tensor): Tensor {
  return (rt.call('ones_like', [v.T.matmul(x)]) as Tensor).triu(1);
}

/** All joined workers of one runtime at once, one program run per round: the `batched` placement's block. */
export class DeflationBlock implements Colocated<DeflationWorker, Broadcast> {
  private x: Tensor | null = null; // (d, a) the workers' estimates = the last broadcast's vectors
  private sx: Tensor | null = null; // (d, a) Σx (power mode)
  private values: Tensor | null = null; // (a,) the last broadcast's values
  private readonly pending: Tensor[] = []; // starts of workers that join at the next round
  private readonly ages: number[] = [];
  private readonly program: Program;

  /** `d` the dimension when known here: declared on the placeholders, the broadcast's shapes are known without a round trip (the bytes each round reports). */
  constructor(private readonly rt: Runtime, private readonly rule: LocalRule, d?: number) {
    const col = d === undefined ? {} : { shape: [d, 'A'] };
    const row = d === undefined ? {} : { shape: ['A'] };
    // one program for every round: the worker count A is a symbolic size
    this.program = rule.mode === 'power'
      ? define(rt, { name: 'parallel-deflation.power', inputs: { x: col, sx: col, v: col, lambda: row } }, ({ x, sx, v, lambda }) =>
        powerSteps(rule, x, sx, { v, lambda, mask: predecessors(rt, v, x) }))
      // co-located workers share each step's minibatch; separate ones would draw their own
      : define(rt, { name: 'parallel-deflation.hebbian', inputs: { x: col, v: col, lambda: row, rows: {}, age: row } }, ({ x, v, lambda, rows, age }) =>
        hebbianSteps(rule, x, { v, lambda, mask: predecessors(rt, v, x) }, rows, age));
  }

  /** Workers join in order (worker k at round k + 1), so a newcomer's column goes last. */
  join(_worker: number, state: DeflationWorker): void {
    this.pending.push(state.x);
    this.ages.push(0);
  }

  /** `prev` must be this block's last broadcast (its own workers' estimates). */
  round(prev: Broadcast | null, rows: Tensor | null): Broadcast {
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
      }
      this.pending.length = 0;
    }
    const a = this.ages.length;
    let out: { x: Tensor; sx?: Tensor; values: Tensor };
    if (rule.mode === 'power') {
      out = this.program.run({ x: x!, sx: sx!, v: v!, lambda: lambda! }) as typeof out;
    } else {
      const age = keep(rt.tensor(this.ages, [a], rule.dtype));
      out = this.program.run({ x: x!, v: v!, lambda: lambda!, rows: rows!, age }) as typeof out;
      this.ages.forEach((g, i) => { this.ages[i] = g + rule.steps; });
    }
    for (const t of [...made, this.x, this.sx, this.values]) t?.free();
    this.x = out.x;
    this.sx = out.sx ?? null;
    this.values = out.values;
    return { vectors: out.x, values: out.values };
  }

  /** The last broadcast (x, values) is the caller's now: the coordinator hands it on. */
  free(): void {
    this.sx?.free();
    this.program.free();
  }
}
