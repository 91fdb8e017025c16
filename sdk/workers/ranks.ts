/**
 * The `ranks` placement: workers spread over the ranks of a runtime group (docs/workers.md,
 * docs/distributed.md). Worker k runs on rank k mod N, in slot ⌊k/N⌋ there, so workers that
 * join one per round (Parallel Deflation's) fill the ranks evenly.
 *
 * A group drives its ranks SPMD: every op goes to every rank with the same handles. So the
 * placement runs the spec's ranked form (`spec.ranked`, a {@link Colocated} block): the
 * same traced program on every rank, each rank computing its own slots (which workers they
 * are it learns from `dist_rank()`, inside the program), and the boundary crossed with
 * collectives — a broadcast as a `dist_all_gather` of every rank's slots put in worker
 * order, a merge as all-reduces. The view it returns is the same on every rank.
 *
 * On a plain runtime the dist ops are a group of one, so the same block runs there with
 * every worker on rank 0: the spec's tests compare that, and 2 and 4 ranks, against the
 * `batched` placement.
 *
 * Bytes: each round reports what its collectives sent, as the runtimes count it (the
 * `stats` reply's `collectives`: an all-reduce of n bytes counts n on each rank, an
 * all-gather each rank's own part), summed over the ranks, as `up`; `down` is (N − 1) × up,
 * every rank receiving every other rank's part.
 */
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import type { Colocated, Placement, PlacementRun, RankLayout, WorkerSpec } from './types.js';

/** The layout of workers over `world` ranks: worker k on rank k mod N, slot ⌊k/N⌋. */
export function rankLayout(world: number): RankLayout {
  if (!Number.isInteger(world) || world < 1) throw new LiaisonError('E_ARG', `rankLayout: world must be an integer >= 1, got ${world}`, { param: 'world' });
  const slots = (count: number) => Math.ceil(count / world);
  return {
    world,
    rankOf: (w) => w % world,
    slotOf: (w) => Math.floor(w / world),
    slots,
    gatherOrder: (count) => Array.from({ length: count }, (_, k) => (k % world) * slots(count) + Math.floor(k / world)),
  };
}

/** Collective bytes the runtime (every rank of a group) has sent so far. */
export async function collectiveBytes(rt: Runtime): Promise<number> {
  const s = await rt.stats();
  return s.collectives?.bytes ?? 0;
}

class RanksRun<State, Message, View> implements PlacementRun<State, Message, View> {
  private readonly block: Colocated<State, View>;
  readonly ranks: number;
  constructor(private readonly rt: Runtime, spec: WorkerSpec<State, Message, View>) {
    if (!spec.ranked) {
      throw new LiaisonError('E_ARG', `placement 'ranks': workers '${spec.name}' have no ranked form (spec.ranked): the ranks placement runs the SPMD form a spec gives (docs/workers.md); run them 'batched' or 'sequential'`, { param: 'placement' });
    }
    this.ranks = rt.info.group?.worldSize ?? 1;
    this.block = spec.ranked(rt, rankLayout(this.ranks));
  }
  join(worker: number, state: State): void { this.block.join(worker, state); }
  held(): null { return null; }
  round(view: View | null, input: Tensor | null): { view: View } { return { view: this.block.round(view, input) }; }
  exchanged(): Promise<number> { return collectiveBytes(this.rt); }
  free(): void { this.block.free(); }
}

/** Registered by placements.ts as `ranks`. */
export const ranksPlacement: Placement = {
  name: 'ranks',
  description: 'the workers spread over the ranks of a runtime group (worker k on rank k mod N), the spec\'s ranked form run SPMD, the boundary as collectives',
  start: (rt, spec) => new RanksRun(rt, spec),
};
