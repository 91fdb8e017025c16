/**
 * The `ranks` placement: workers spread over the ranks of a runtime group (docs/workers.md,
 * docs/distributed.md). Worker k runs on rank k mod N, in slot ⌊k/N⌋ there, so workers that
 * join one per round (Parallel Deflation's) fill the ranks evenly.
 *
 * A group drives its ranks SPMD: every op goes to every rank with the same handles. So the
 * placement runs the spec's ranked form (`spec.ranked`, a {@link Ranked} block): the same
 * traced program on every rank, each rank computing its own slots (which workers they are
 * it learns from `dist_rank()`, inside the program), and the boundary crossed with
 * collectives — a broadcast as a `dist_all_gather` of every rank's slots put in worker
 * order, a merge as all-reduces — or every worker's message gathered to every rank, for
 * the coordinator to merge as on one runtime. The view is the same on every rank.
 *
 * The blocks' collectives skip the ranks' shape meeting (`check: false`, a small
 * collective less each): one program on every rank gives every rank the same shapes.
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
import { define, type Program } from '../program.js';
import { rebuild, tensorsOf } from './tree.js';
import type { Placement, PlacementRun, Ranked, RankLayout, WorkerSpec } from './types.js';

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

/**
 * A ranked form for workers whose messages have one shape (a merge boundary usually): rank
 * r runs its slots' `work(slot, worker, input)` — `worker` the slot's worker as a () i64
 * tensor, j·N + r, clamped to K − 1 on a padding slot (its message is dropped) — all traced
 * into one program, replayed every round; every tensor of the messages is stacked over the
 * slots, gathered from every rank (`dist_all_gather`) and put in worker order, so the
 * coordinator merges the K messages on every rank exactly as on one runtime. Scoped: what a
 * round makes is freed with it.
 */
export function gatheredRanked<State, Message, View>(rt: Runtime, ranks: RankLayout, workers: number, work: (slot: number, worker: Tensor, input: Tensor | null) => Message): Ranked<State, Message, View> {
  const slots = ranks.slots(workers);
  let program: Program | null = null;
  let shape: Message | null = null; // slot 0's message: where each output goes
  const order = rt.tensor(ranks.gatherOrder(workers), [workers], 'i64').keep();
  return {
    scoped: true,
    join: () => {},
    round: (_view, input) => {
      program ??= define(rt, { name: 'workers.ranks.round', inputs: input ? { input: {} } : {} }, (ph: Record<string, Tensor>) => {
        const rank = rt.call('dist_rank') as Tensor;
        const messages = Array.from({ length: slots }, (_, j) => work(j, rank.add(j * ranks.world).clamp(null, workers - 1), ph.input ?? null));
        shape = messages[0];
        const leaves = messages.map((m) => tensorsOf(m));
        return leaves[0].map((_, l) => (rt.call('dist_all_gather', [rt.stack(leaves.map((ls) => ls[l]))], { dim: 0, check: false }) as Tensor).indexSelect(0, order));
      });
      const out = program.run(input ? { input } : {}) as Tensor | Tensor[];
      const all = Array.isArray(out) ? out : [out];
      const messages = Array.from({ length: workers }, (_, k) => {
        let l = 0;
        return rebuild(shape!, () => all[l++].narrow(0, k, 1).squeeze(0));
      });
      return { messages };
    },
    free: () => { program?.free(); order.free(); },
  };
}

class RanksRun<State, Message, View> implements PlacementRun<State, Message, View> {
  private readonly block: Ranked<State, Message, View>;
  readonly ranks: number;
  constructor(private readonly rt: Runtime, spec: WorkerSpec<State, Message, View>) {
    if (!spec.ranked) {
      throw new LiaisonError('E_ARG', `placement 'ranks': workers '${spec.name}' have no ranked form (spec.ranked): the ranks placement runs the SPMD form a spec gives (docs/workers.md); run them 'batched' or 'sequential'`, { param: 'placement' });
    }
    this.ranks = rt.info.group?.worldSize ?? 1;
    this.block = spec.ranked(rt, rankLayout(this.ranks));
  }
  join(worker: number, state: State): void { this.block.join(worker, state); }
  /** A scoped block's rounds run in the coordinator's scope (its held states: none). */
  held(): readonly State[] | null { return this.block.scoped ? [] : null; }
  round(view: View | null, input: Tensor | null): { view: View } | { messages: Message[] } { return this.block.round(view, input); }
  exchanged(): Promise<number> { return collectiveBytes(this.rt); }
  free(): void { this.block.free(); }
}

/** Registered by placements.ts as `ranks`. */
export const ranksPlacement: Placement = {
  name: 'ranks',
  description: 'the workers spread over the ranks of a runtime group (worker k on rank k mod N), the spec\'s ranked form run SPMD, the boundary as collectives',
  start: (rt, spec) => new RanksRun(rt, spec),
};
