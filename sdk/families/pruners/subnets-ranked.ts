/**
 * Independent subnetworks on the ranks of a runtime group: the ranked form of the
 * `masked-neurons` workers (plugins/pruners/masked-neurons.ts), run by the `ranks`
 * placement (sdk/workers/ranks.ts, docs/distributed.md).
 *
 * Subnet s trains on rank s mod N, in slot ⌊s/N⌋. Every rank replays one traced program per
 * round: for each of its slots, the subnet's row of the round's input (its mask and
 * minibatch rows, picked by the subnet's number j·N + `dist_rank()`), its local descent
 * from the shared weights, and its part of the merge — per weight entry, the sum of its
 * copy over the subnets that held it and how many held it. One `dist_all_reduce_many` sums
 * those over the ranks, and every rank divides: the merged weights of `mergeByHolders`
 * (sdk/families/pruners/subnets.ts), the same on every rank. A slot past the last subnet
 * (S not a multiple of N) trains a copy and counts for nothing.
 *
 * On one rank this is the batched placement's arithmetic in the same order; on N ranks the
 * sums over subnets are added in another order (rank by rank), so results agree to float
 * rounding (test/distributed.test.ts).
 */
import type { Runtime, Tensor } from '../../../bridge/index.js';
import { define, type Program } from '../../program.js';
import type { Ranked, RankLayout } from '../../workers/types.js';
import { held, type MLPLayout } from './subnets.js';

/** One subnet's round: its trained copies of the weights and its (1, H) mask, from the shared weights and its row (1, ·) of the round's input. */
export type Descend = (shared: readonly Tensor[], row: Tensor) => { w: Tensor[]; mask: Tensor };

export interface RankedSubnetsOptions {
  /** S: subnets in all. */
  subnets: number;
  descend: Descend;
  lay: MLPLayout;
  combine: 'holders' | 'all';
  unheld: 'keep' | 'zero';
}

/** The ranks' subnets, one program run per round; see the module comment. */
export class RankedSubnets implements Ranked<{ w: Tensor[]; mask: Tensor }, { w: Tensor[]; mask: Tensor }, Tensor[]> {
  private program: Program | null = null;

  constructor(private readonly rt: Runtime, private readonly ranks: RankLayout, private readonly o: RankedSubnetsOptions) {}

  /** A subnet's own state is not needed: every round starts from the shared weights. */
  join(_worker: number, state: { w: Tensor[]; mask: Tensor }): void {
    for (const t of [...state.w, state.mask]) t.free();
  }

  round(view: Tensor[] | null, input: Tensor | null): { view: Tensor[] } {
    const shared = view!;
    this.program ??= this.trace(shared.length);
    const out = this.program.run(Object.fromEntries([...shared.map((t, i) => [`w${i}`, t]), ['input', input!]])) as Tensor[];
    for (const t of shared) t.free(); // the last view was this block's
    return { view: out };
  }

  private trace(n: number): Program {
    const { rt, ranks, o } = this;
    const inputs = Object.fromEntries([...Array.from({ length: n }, (_, i) => [`w${i}`, {}]), ['input', {}]]);
    return define(rt, { name: 'masked-neurons.ranks', inputs }, (ph: Record<string, Tensor>) => {
      const shared = Array.from({ length: n }, (_, i) => ph[`w${i}`]);
      const rank = rt.call('dist_rank') as Tensor;
      const sums: (Tensor | null)[] = shared.map(() => null);
      const counts: (Tensor | null)[] = shared.map(() => null);
      const add = (a: Tensor | null, b: Tensor) => (a ? a.add(b) : b);
      for (let j = 0; j < ranks.slots(o.subnets); j++) {
        const id = rank.add(j * ranks.world); // () i64: this slot's subnet
        const valid = id.lt(o.subnets).to('f32');
        const row = ph.input.indexSelect(0, id.clamp(null, o.subnets - 1).reshape([1]));
        const { w, mask } = o.descend(shared, row);
        shared.forEach((_, i) => {
          const holds = held(i, mask, o.lay).mul(valid);
          sums[i] = add(sums[i], o.combine === 'holders' ? w[i].mul(holds) : w[i].mul(valid));
          counts[i] = add(counts[i], holds);
        });
      }
      const all = rt.call('dist_all_reduce_many', [[...sums, ...counts] as Tensor[]], { op: 'sum', check: false }, 2 * n) as Tensor[];
      return shared.map((s, i) => {
        const [sum, count] = [all[i], all[n + i]];
        const mean = o.combine === 'holders' ? sum.div(count.clamp(1)) : sum.div(o.subnets);
        return mean.where(count.gt(0), o.unheld === 'keep' ? s : 0);
      });
    });
  }

  free(): void {
    this.program?.free();
  }
}
