/**
 * The coordinator: rounds, joins, the boundary, and a report per round.
 *
 * Round r: every worker whose join round is r joins (its `init` sees the view of the last
 * boundary); every joined worker runs its round (`step`: T local steps, then `publish`) on
 * the placement asked for; the messages cross the boundary (gathered for a broadcast,
 * merged into the shared state for a merge), and that view is what the next round sees.
 * Everything is queued: a run reads nothing back unless `onRound` does.
 *
 * ```ts
 * const { view } = await runWorkers(rt, spec, { rounds: 10, placement: 'batched', onRound: (r) => log(r.bytes) });
 * ```
 */
import { LiaisonError, type Runtime } from '../../bridge/index.js';
import { getPlacement } from './placements.js';
import { freeReplaced, tensorsOf, treeBytes } from './tree.js';
import { BOUNDARY_KINDS, type RoundReport, type WorkerSpec } from './types.js';

export interface RunWorkersOptions<View> {
  /** Rounds in all; every worker must have joined by the last. */
  rounds: number;
  /** A registered placement's name (sdk/workers/placements.ts); default 'batched'. */
  placement?: string;
  /**
   * Called after each round's boundary, awaited (it may read the view). Returning `'stop'`
   * ends the run after this round (a stop rule: LoFT stops when its tickets have emerged);
   * the result then says how many rounds ran.
   */
  onRound?(report: RoundReport<View>): void | 'stop' | Promise<void | 'stop'>;
}

export interface WorkersResult<State, View> {
  /** The last boundary's view: the final broadcast, or the merged shared state. */
  view: View;
  /** The workers' last states in worker order; null where the placement keeps them to itself (a co-located block). */
  states: readonly State[] | null;
  /** Rounds run: the rounds asked for, or fewer when `onRound` stopped the run. */
  rounds: number;
  /** Frees the view and the states. */
  free(): void;
}

const positiveInt = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= 1;

/** The join round of every worker, checked against the run's rounds. */
function joinRounds<State, Message, View>(spec: WorkerSpec<State, Message, View>, rounds: number): number[] {
  const id = `workers '${spec.name}'`;
  if (!positiveInt(spec.workers)) throw new LiaisonError('E_ARG', `${id}: workers (K) must be an integer ≥ 1, got ${spec.workers}`, { param: 'workers' });
  if (!positiveInt(spec.localSteps)) throw new LiaisonError('E_ARG', `${id}: localSteps (T) must be an integer ≥ 1, got ${spec.localSteps}`, { param: 'localSteps' });
  if (!positiveInt(rounds)) throw new LiaisonError('E_ARG', `${id}: rounds must be an integer ≥ 1, got ${rounds}`, { param: 'rounds' });
  const kind = (spec.boundary as { kind?: unknown } | undefined)?.kind;
  if (!BOUNDARY_KINDS.includes(kind as never)) throw new LiaisonError('E_ARG', `${id}: boundary.kind must be one of ${BOUNDARY_KINDS.map((k) => `'${k}'`).join(', ')}, got ${JSON.stringify(kind)}`, { param: 'boundary' });
  return Array.from({ length: spec.workers }, (_, w) => {
    const r = spec.joinRound ? spec.joinRound(w) : 1;
    if (!positiveInt(r) || r > rounds) {
      throw new LiaisonError('E_ARG', `${id}: worker ${w} joins at round ${r}, which must be an integer in 1..rounds (${rounds}): run more rounds or let it join earlier`, { param: 'joinRound' });
    }
    return r;
  });
}

/** Run K workers for `opts.rounds` rounds; see the module comment. */
export async function runWorkers<State, Message, View>(rt: Runtime, spec: WorkerSpec<State, Message, View>, opts: RunWorkersOptions<View>): Promise<WorkersResult<State, View>> {
  const joins = joinRounds(spec, opts.rounds);
  const placement = getPlacement(opts.placement ?? 'batched');
  const { boundary } = spec;
  const dtype = spec.dtype ?? 'f32';
  let view: View | null = boundary.kind === 'merge' ? boundary.init(rt) : null;
  const run = placement.start(rt, spec);
  let ran = 0;
  // a run across ranks counts what its collectives sent (the runtimes' counters), not the shapes
  let sent = run.exchanged ? await run.exchanged() : 0;
  try {
    for (let r = 1; r <= opts.rounds; r++) {
      ran = r;
      const joined: number[] = [];
      joins.forEach((at, w) => { if (at === r) joined.push(w); });
      const active = joins.flatMap((at, w) => (at <= r ? [w] : []));
      const round = (): { next: View; up: number | null } => {
        for (const w of joined) run.join(w, spec.init(w, { rt, view }));
        const before = run.held();
        const old = before ? [...tensorsOf(before), ...tensorsOf(view)] : [];
        const input = spec.roundInput ? spec.roundInput(r, rt) : null;
        const out = run.round(view, input);
        let next: View;
        let up: number | null;
        if ('view' in out) {
          next = out.view;
          up = boundary.kind === 'broadcast' ? treeBytes(next, dtype) : null; // a block's messages never leave it
        } else {
          next = boundary.kind === 'broadcast' ? boundary.gather(out.messages) : boundary.merge(view!, out.messages, active);
          up = treeBytes(out.messages, dtype);
        }
        input?.free();
        const after = run.held();
        // free what this round replaced: the states and the last view it no longer holds
        if (after) freeReplaced(old, [after, next]);
        return { next, up };
      };
      // before anyone has joined nothing runs and nothing crosses the boundary
      if (!active.length) continue;
      let done: { next: View; up: number | null };
      if (run.held() === null) done = round(); // a co-located block frees its own tensors
      else {
        // everything else the round made (a step's intermediates, messages not in the view) is freed with the round
        let d: { next: View; up: number | null } | null = null;
        await rt.scope(async () => {
          d = round();
          return [...tensorsOf(run.held()), ...tensorsOf(d.next)]; // what the round hands on
        });
        done = d!;
      }
      const { next, up } = done;
      view = next;
      const one = treeBytes(view, dtype);
      let bytes = up === null || one === null ? null : { up, down: one * active.length };
      if (run.exchanged) {
        const now = await run.exchanged();
        bytes = { up: now - sent, down: (now - sent) * ((run.ranks ?? 1) - 1) };
        sent = now;
      }
      if (opts.onRound && (await opts.onRound({ round: r, workers: active, joined, view, bytes })) === 'stop') break;
    }
  } finally {
    run.free();
  }
  const states = run.held();
  const final = view as View;
  return { view: final, states, rounds: ran, free: () => { for (const t of [...tensorsOf(states), ...tensorsOf(final)]) t.free(); } };
}
