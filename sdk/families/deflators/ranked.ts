/**
 * Parallel Deflation's workers on the ranks of a runtime group: the ranked form of the
 * spec in sdk/families/deflators/workers.ts, run by the `ranks` placement
 * (sdk/workers/ranks.ts, docs/distributed.md).
 *
 * Worker k lives on rank k mod N as column ⌊k/N⌋ of that rank's block X_r (d, A), A =
 * ⌈a/N⌉ for the a workers joined so far; a slot whose worker has not joined (or does not
 * exist) is a zero column, which the power and Hebbian steps leave at zero. Every round,
 * on every rank, one traced program:
 *
 *   1. the rank's slots learn which workers they are from `dist_rank()`: slot j is worker
 *      j·N + rank, so worker k deflates with its predecessors only, mask [k', j] = k' < id_j;
 *   2. T local steps of its own columns against the last broadcast (V (d, a), λ (a,)), as
 *      the co-located block does for all of them (`powerSteps` / `hebbianSteps`);
 *   3. the broadcast: one `dist_all_gather` of every rank's (d, A) block with its (A,)
 *      values as one more row, put in worker order by an index_select — the same (V, λ)
 *      on every rank.
 *
 * The same numbers as the co-located block up to the order of floating-point sums (each
 * column's products are computed in a matrix of another width); test/distributed.test.ts
 * compares 1, 2 and 4 ranks with the `batched` placement in float64.
 */
import type { DType, Runtime, Tensor } from '../../../bridge/index.js';
import { define, type Program } from '../../program.js';
import type { Ranked, RankLayout } from '../../workers/types.js';
import { type Broadcast, type DeflationMessage, type DeflationWorker, hebbianSteps, type LocalRule, powerSteps } from './workers.js';

/** (1, A) `dtype`: the worker each of the rank's slots holds, j·N + rank (x (d, A) any of the rank's blocks). */
function slotWorkers(rt: Runtime, x: Tensor, world: number, dtype: DType): Tensor {
  const j = (rt.call('ones_like', [x.narrow(0, 0, 1)], { dtype }) as Tensor).cumsum(1).sub(1); // (1, A): 0, 1, …
  return j.mul(world).add((rt.call('dist_rank') as Tensor).to(dtype));
}

/** (a, A) `dtype`: [k', j] = 1 where worker k' precedes slot j's worker (k' < id_j). */
function predecessorsOf(rt: Runtime, lambda: Tensor, ids: Tensor, dtype: DType): Tensor {
  const k = (rt.call('ones_like', [lambda], { dtype }) as Tensor).cumsum(0).sub(1).unsqueeze(1); // (a, 1)
  return k.lt(ids).to(dtype);
}

/**
 * The broadcast from every rank's columns x (d, A) and values (A,): one `dist_all_gather` of
 * [x; values] (d + 1, A) along the columns, put in worker order (`order` (a,) i64).
 */
function broadcastOf(rt: Runtime, d: number, x: Tensor, values: Tensor, order: Tensor): { vectors: Tensor; values: Tensor } {
  const all = (rt.call('dist_all_gather', [rt.cat([x, values.unsqueeze(0)], 0)], { dim: 1, check: false }) as Tensor).indexSelect(1, order);
  return { vectors: all.narrow(0, 0, d), values: all.narrow(0, d, 1).reshape([-1]) };
}

/** The ranks' blocks of Parallel Deflation's workers, one program run per round; see the module comment. */
export class RankedDeflationBlock implements Ranked<DeflationWorker, DeflationMessage, Broadcast> {
  private x: Tensor | null = null; // (d, A) this rank's slots
  private sx: Tensor | null = null; // (d, A) Σx (power mode)
  private age: Tensor | null = null; // (A,) local steps of each slot's worker (Hebbian mode)
  private order: Tensor | null = null; // (a,) i64: worker order of a gather
  private joined = 0; // a: workers 0..a−1 have joined
  private readonly pending: Tensor[] = []; // start columns (d, 1) of the workers joining next round
  private readonly program: Program;

  /** `dtype` the working one, `d` the dimension. */
  constructor(private readonly rt: Runtime, private readonly rule: LocalRule, private readonly ranks: RankLayout, private readonly dtype: DType, d: number) {
    const col = { shape: [d, 'A'] };
    const bcol = { shape: [d, 'a'] };
    const world = ranks.world;
    const deflation = (x: Tensor, v: Tensor, lambda: Tensor) => ({ v, lambda, mask: predecessorsOf(rt, lambda, slotWorkers(rt, x, world, dtype), dtype) });
    this.program = rule.mode === 'power'
      ? define(rt, { name: 'parallel-deflation.power.ranks', inputs: { x: col, sx: col, v: bcol, lambda: { shape: ['a'] }, order: { shape: ['a'] } } }, ({ x, sx, v, lambda, order }) => {
        const out = powerSteps(rule, x, sx, deflation(x, v, lambda));
        return { x: out.x, sx: out.sx, ...broadcastOf(rt, d, out.x, out.values, order) };
      })
      : define(rt, { name: 'parallel-deflation.hebbian.ranks', inputs: { x: col, v: bcol, lambda: { shape: ['a'] }, rows: {}, age: { shape: ['A'] }, order: { shape: ['a'] } } }, ({ x, v, lambda, rows, age, order }) => {
        const out = hebbianSteps(rule, x, deflation(x, v, lambda), rows, age);
        return { x: out.x, age: age.add(rule.steps), ...broadcastOf(rt, d, out.x, out.values, order) };
      });
  }

  /** Workers join in order (worker k at round k + 1): the pending starts are workers a, a+1, …. */
  join(_worker: number, state: DeflationWorker): void {
    this.pending.push(state.x);
  }

  /** `prev` must be this block's last broadcast. */
  round(prev: Broadcast | null, rows: Tensor | null): { view: Broadcast } {
    const { rt, rule, ranks } = this;
    const made: Tensor[] = [];
    const keep = (t: Tensor) => { made.push(t); return t; };
    let v = prev?.vectors ?? null, lambda = prev?.values ?? null;
    if (this.pending.length) {
      const p = this.pending.length;
      const from = this.joined;
      const to = from + p;
      const starts = keep(rt.cat(this.pending, 1)); // (d, p), the same on every rank
      const zeros = keep(starts.mul(0));
      const grow = ranks.slots(to) - ranks.slots(from);
      const zcols = grow ? keep(rt.cat(Array.from({ length: grow }, () => zeros.narrow(1, 0, 1)), 1)) : null;
      const wider = (t: Tensor | null, z: Tensor | null) => (t ? (z ? keep(rt.cat([t, z], t === this.age ? 0 : 1)) : t) : z!);
      let x = wider(this.x, zcols);
      // newcomers' slots (worker id in from..to−1 on this rank) take their starts; the rest stay
      const ids = keep(slotWorkers(rt, x, ranks.world, this.dtype)); // (1, A)
      const fresh = keep(keep(ids.ge(from)).logicalAnd(keep(ids.lt(to))));
      const pick = keep(keep(keep(ids.sub(from)).clamp(0, p - 1)).to('i64').reshape([-1]));
      const chosen = keep(starts.indexSelect(1, pick)); // (d, A)
      x = keep(rt.where(fresh, chosen, x));
      if (rule.mode === 'power') this.sx = this.replace(this.sx, keep(rt.where(fresh, keep(rule.cov.matmul(chosen)), wider(this.sx, zcols))));
      else this.age = this.replace(this.age, keep(rt.where(fresh.reshape([-1]), 0, wider(this.age, zcols ? zcols.narrow(0, 0, 1).reshape([-1]) : null))));
      this.x = this.replace(this.x, x);
      // their broadcast columns are zero this round: they deflate nothing yet
      v = keep(v ? rt.cat([v, zeros], 1) : zeros);
      lambda = keep(lambda ? rt.cat([lambda, zeros.sum(0)], 0) : zeros.sum(0));
      this.order?.free();
      this.order = rt.tensor(ranks.gatherOrder(to), [to], 'i64');
      this.joined = to;
      this.pending.length = 0;
    }
    const out = rule.mode === 'power'
      ? this.program.run({ x: this.x!, sx: this.sx!, v: v!, lambda: lambda!, order: this.order! }) as { x: Tensor; sx: Tensor; vectors: Tensor; values: Tensor }
      : this.program.run({ x: this.x!, v: v!, lambda: lambda!, rows: rows!, age: this.age!, order: this.order! }) as { x: Tensor; age: Tensor; vectors: Tensor; values: Tensor };
    for (const t of made) if (t !== this.x && t !== this.sx && t !== this.age) t.free();
    prev?.vectors.free(); // the last broadcast was this block's: the caller hands it back
    prev?.values.free();
    this.x?.free();
    this.x = out.x;
    if ('sx' in out) { this.sx?.free(); this.sx = out.sx; } else { this.age?.free(); this.age = out.age; }
    return { view: { vectors: out.vectors, values: out.values } };
  }

  /** `next` in place of `old` (freed unless it is still `next`'s input: the block's state is replaced once per round). */
  private replace(old: Tensor | null, next: Tensor): Tensor {
    if (old && old !== next) old.free();
    return next;
  }

  /** The last broadcast is the caller's now: the coordinator hands it on. */
  free(): void {
    for (const t of [this.x, this.sx, this.age, this.order]) t?.free();
    this.program.free();
  }
}
