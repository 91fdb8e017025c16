/**
 * Workers: K workers that each run T local steps a round and exchange something across a
 * boundary between rounds — Parallel Deflation's workers (one eigenvector each), LoFT's
 * (filters partitioned across workers), independent subnetwork training, AdaPaD's rank-1
 * components joining at round k. docs/workers.md has the contract; sdk/workers/run.ts the
 * coordinator; sdk/workers/placements.ts where the workers run.
 *
 * A spec says what one worker does, written once; a {@link Placement} decides how the
 * joined workers of a round are run (batched into one traced program, one at a time, or —
 * later — one per process of a runtime group). The boundary is the only thing workers
 * share, so a placement may put them anywhere.
 */
import type { DType, Runtime, Tensor } from '../../bridge/index.js';

/** What a worker's code is told besides its state: never a value that changes per round (a batched placement traces it). */
export interface WorkerContext {
  rt: Runtime;
  /** This worker's index, 0..K−1. */
  worker: number;
  /** T, the spec's local steps per round. */
  localSteps: number;
  /** The round's input from {@link WorkerSpec.roundInput} (null when the spec has none): per-round data as tensors, so that a traced round sees it. */
  input: Tensor | null;
}

/**
 * What crosses the boundary after every round, and what each worker sees in the next one
 * (`View`; null before the first boundary of a broadcast).
 *
 * - `broadcast`: every worker sees all joined workers' last messages, gathered by `gather`
 *   (messages in worker order; a Parallel Deflation worker reads its predecessors' part).
 * - `merge`: the workers' messages are combined into shared state (`merge`: averaging,
 *   copying partitions back), which every worker sees next round; `init` is the shared
 *   state of round 1.
 */
export type Boundary<Message, View> =
  | { kind: 'broadcast'; gather(messages: readonly Message[]): View }
  | { kind: 'merge'; init(rt: Runtime): View; merge(shared: View, messages: readonly Message[], workers: readonly number[]): View };

/** Every boundary kind, for errors and docs. */
export const BOUNDARY_KINDS = ['broadcast', 'merge'] as const;

/**
 * One kind of worker, K of them. Tensor code only (no reads: a batched placement traces
 * `step` and `publish`). The coordinator owns every tensor in states, messages and views,
 * and frees those the next round no longer holds: keep tensors the run must not free
 * (the data, a covariance) in the spec's closure, not in a state.
 */
export interface WorkerSpec<State, Message, View = readonly Message[]> {
  /** Shown in errors and reports. */
  name: string;
  /** K: how many workers. */
  workers: number;
  /** The round (1-based) at which worker `w` joins; default 1 for every worker. */
  joinRound?(worker: number): number;
  /** T: local steps a worker runs per round (passed to `step` as `ctx.localSteps`). */
  localSteps: number;
  /** A worker's state when it joins (queued ops; it may read the view of the round it joins in). */
  init(worker: number, ctx: { rt: Runtime; view: View | null }): State;
  /** One round of one worker: T local steps from its state, seeing the last boundary's view. */
  step(state: State, view: View | null, ctx: WorkerContext): State;
  /** What the worker sends across the boundary after its round. */
  publish(state: State, ctx: WorkerContext): Message;
  boundary: Boundary<Message, View>;
  /** Per-round data shared by all workers of the round (a minibatch's row indices), freed after the round. */
  roundInput?(round: number, rt: Runtime): Tensor;
  /** Element type of messages and views, for the bytes reported per round; default f32. */
  dtype?: DType;
  /**
   * Optional: the co-located form, workers of one runtime run as one block (e.g. their
   * vectors as the columns of one matrix, their T steps as matrix–matrix products). The
   * `batched` placement uses it when present; it must compute what `step` computes per
   * worker (a test of the spec should check that the two placements agree).
   */
  colocated?(rt: Runtime): Colocated<State, View>;
  /**
   * Optional: the SPMD form, for the `ranks` placement (sdk/workers/ranks.ts): the workers
   * spread over the ranks of a runtime group (worker k on rank k mod N, in slot ⌊k/N⌋),
   * every rank running the same ops on its own slots, the boundary crossed with
   * collectives (a broadcast as a `dist_all_gather`, a merge as `dist_all_reduce`s). The
   * block is told every join and returns the view, the same on every rank. It must compute
   * what the workers compute on one runtime (a test should compare, on 1, 2 and 4 ranks).
   */
  ranked?(rt: Runtime, ranks: RankLayout): Ranked<State, Message, View>;
}

/**
 * A spec's workers on the ranks of a group (see {@link WorkerSpec.ranked}): every rank runs
 * the same ops on its own slots. A round returns either the view (the block crossed the
 * boundary itself, with collectives) or every worker's message, gathered to every rank in
 * worker order — then the coordinator crosses the boundary with the spec's own `gather` or
 * `merge`, on every rank, as on one runtime.
 */
export interface Ranked<State, Message, View> {
  join(worker: number, state: State): void;
  round(view: View | null, input: Tensor | null): { view: View } | { messages: Message[] };
  /**
   * True: the block holds no tensor between rounds, and each round runs inside the
   * coordinator's scope (what it made and did not hand on is freed with it). Otherwise the
   * block frees its own tensors, and the views it returns are its own, as a co-located block's.
   */
  readonly scoped?: boolean;
  free(): void;
}

/** Where the `ranks` placement puts the workers: worker k on rank k mod N, slot ⌊k/N⌋ there. */
export interface RankLayout {
  /** N: ranks of the group (1 on a plain runtime, where the dist ops are a group of one). */
  readonly world: number;
  /** The rank worker `worker` runs on. */
  rankOf(worker: number): number;
  /** Its slot on that rank. */
  slotOf(worker: number): number;
  /** Slots every rank holds when workers 0..count−1 are placed: ⌈count/N⌉ (on some ranks the last is padding). */
  slots(count: number): number;
  /**
   * Where each of workers 0..count−1 lands in a `dist_all_gather` of every rank's `slots`
   * (rank-major: rank·slots + slot): index_select with it puts the gathered slots in worker order.
   */
  gatherOrder(count: number): number[];
}

/** A block of co-located workers, run a round at a time; see {@link WorkerSpec.colocated}. */
export interface Colocated<State, View> {
  /** Worker `worker` joins the block with its initial state, before the next round. */
  join(worker: number, state: State): void;
  /** All joined workers' round at once; returns the view their messages give (the gathered broadcast, or the merged shared state). */
  round(view: View | null, input: Tensor | null): View;
  free(): void;
}

/** One round, as the coordinator reports it to `onRound`. */
export interface RoundReport<View> {
  round: number;
  /** Workers that ran this round, in order. */
  workers: readonly number[];
  /** Workers that joined this round. */
  joined: readonly number[];
  /** The boundary's view after this round (valid during the call: clone to keep). */
  view: View;
  /**
   * Bytes that crossed the boundary this round, from the tensors' static shapes and the
   * spec's dtype: `up` the workers' messages (for a broadcast, the gathered view), `down`
   * what the workers receive (the view, once per worker). Null when a shape is not known
   * client-side.
   */
  bytes: { up: number; down: number } | null;
}

/** A run of one placement, created per coordinator run. */
export interface PlacementRun<State, Message, View> {
  /** Worker `worker` joins with its initial state. */
  join(worker: number, state: State): void;
  /**
   * One round of every joined worker against `view`. Returns either the messages (worker
   * order) for the coordinator to cross the boundary with, or the view directly when the
   * placement computed it (a co-located block).
   */
  round(view: View | null, input: Tensor | null): { messages: Message[] } | { view: View };
  /**
   * The joined workers' states now, so that the coordinator can free what a round replaced;
   * null when the placement frees its tensors itself (a co-located block: then the views
   * it returns are its own too).
   */
  held(): readonly State[] | null;
  /**
   * Optional: bytes the collectives of the run have sent so far (all ranks together, the
   * runtimes' own counts); the coordinator reports each round's difference as its `up`.
   */
  exchanged?(): Promise<number>;
  /** Ranks the run spans (default 1): a round's `down` is then (ranks − 1) × `up`. */
  readonly ranks?: number;
  free(): void;
}

/** Where the joined workers of a round run. Added to the registry with `registerPlacement`. */
export interface Placement {
  /** The name a run asks for (`placement: 'batched'`). */
  readonly name: string;
  readonly description: string;
  start<State, Message, View>(rt: Runtime, spec: WorkerSpec<State, Message, View>): PlacementRun<State, Message, View>;
}
