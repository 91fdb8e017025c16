/**
 * Where a round's workers run. A placement turns "every joined worker runs its round against
 * the last view" into runtime work; the coordinator (run.ts) does the rest, so a new way of
 * placing workers — one per process of a runtime group — is one more {@link Placement}
 * registered here, and every worker spec runs on it unchanged.
 *
 * - `sequential`: one worker at a time, each its own ops on its own state (the reference,
 *   and what a worker in a process of its own would run).
 * - `batched`: the joined workers of one runtime as one traced program per round — no
 *   round trip, one dispatch. A spec with a co-located form (`colocated`) runs as that
 *   block; otherwise every worker's `step` and `publish` are traced side by side into one
 *   program, retraced only when the set of workers or the shapes change.
 * - `ranks` (sdk/workers/ranks.ts): the workers spread over the ranks of a runtime group,
 *   the spec's ranked form run on every rank, the boundary crossed with collectives.
 */
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { define, type Program } from '../program.js';
import { ranksPlacement } from './ranks.js';
import { rebuild, skeleton, tensorsOf } from './tree.js';
import type { Placement, PlacementRun, WorkerContext, WorkerSpec } from './types.js';

const context = (rt: Runtime, worker: number, localSteps: number, input: Tensor | null): WorkerContext => ({ rt, worker, localSteps, input });

/** Joined workers in worker order, with their states. */
class Members<State> {
  readonly ids: number[] = [];
  states: State[] = [];
  add(worker: number, state: State): void {
    let i = this.ids.findIndex((w) => w > worker);
    if (i < 0) i = this.ids.length;
    this.ids.splice(i, 0, worker);
    this.states.splice(i, 0, state);
  }
}

class SequentialRun<State, Message, View> implements PlacementRun<State, Message, View> {
  private readonly m = new Members<State>();
  constructor(private readonly rt: Runtime, private readonly spec: WorkerSpec<State, Message, View>) {}
  join(worker: number, state: State): void { this.m.add(worker, state); }
  held(): readonly State[] { return this.m.states; }
  round(view: View | null, input: Tensor | null): { messages: Message[] } {
    const { spec, m } = this;
    const messages: Message[] = [];
    m.states = m.states.map((s, i) => {
      const ctx = context(this.rt, m.ids[i], spec.localSteps, input);
      const next = spec.step(s, view, ctx);
      messages.push(spec.publish(next, ctx));
      return next;
    });
    return { messages };
  }
  free(): void {}
}

/** Programs kept per batched run: one per (worker set, shapes) seen, the oldest dropped past this. */
const PROGRAMS_KEPT = 8;

interface Traced { program: Program; outs: unknown; /** per output leaf: ['out', i] a program output, ['in', i] an input passed through, ['const', t] a tensor from outside */ map: Array<['out' | 'in', number] | ['const', Tensor]> }

class BatchedRun<State, Message, View> implements PlacementRun<State, Message, View> {
  private readonly m = new Members<State>();
  private readonly programs = new Map<string, Traced>();
  constructor(private readonly rt: Runtime, private readonly spec: WorkerSpec<State, Message, View>) {}
  join(worker: number, state: State): void { this.m.add(worker, state); }
  held(): readonly State[] { return this.m.states; }

  round(view: View | null, input: Tensor | null): { messages: Message[] } {
    const { m } = this;
    const args = { states: m.states, view, input };
    const key = `${m.ids.join(',')}|${skeleton(args, `workers '${this.spec.name}'`)}`;
    const traced = this.programs.get(key) ?? this.trace(key, args);
    const real = tensorsOf(args);
    const ran = real.length || traced.map.some(([k]) => k === 'out') ? traced.program.run(real) as Tensor[] | Tensor | undefined : undefined;
    const outs = ran === undefined ? [] : Array.isArray(ran) ? ran : [ran];
    let i = 0;
    const result = rebuild(traced.outs, () => {
      const [kind, at] = traced.map[i++];
      return kind === 'const' ? at : kind === 'in' ? real[at] : outs[at];
    }) as { states: State[]; messages: Message[] };
    m.states = result.states;
    return { messages: result.messages };
  }

  /** Every joined worker's step and publish, traced side by side into one program. */
  private trace(key: string, args: { states: State[]; view: View | null; input: Tensor | null }): Traced {
    const { rt, spec, m } = this;
    const real = tensorsOf(args);
    const inputs = Object.fromEntries(real.map((t, i) => [`t${i}`, t.shape && t.shape.every((d) => typeof d === 'number') ? { shape: t.shape } : {}]));
    let outs: unknown = null;
    const map: Traced['map'] = [];
    const program = define(rt, { name: `workers.${spec.name}.round`, inputs }, (ph) => {
      const placeholders = real.map((_, i) => ph[`t${i}`]);
      let j = 0;
      const a = rebuild(args, () => placeholders[j++]);
      const states: State[] = [];
      const messages: Message[] = [];
      a.states.forEach((s, i) => {
        const ctx = context(rt, m.ids[i], spec.localSteps, a.input);
        const next = spec.step(s, a.view, ctx);
        states.push(next);
        messages.push(spec.publish(next, ctx));
      });
      outs = { states, messages };
      // an output may be an input handed back unchanged, a tensor from outside, or the same tensor twice
      const returned: Tensor[] = [];
      for (const t of tensorsOf(outs)) {
        const p = placeholders.indexOf(t);
        if (p >= 0) map.push(['in', p]);
        else if (!t.traced) map.push(['const', t]);
        else {
          let o = returned.indexOf(t);
          if (o < 0) o = returned.push(t) - 1;
          map.push(['out', o]);
        }
      }
      return returned;
    });
    if (this.programs.size >= PROGRAMS_KEPT) {
      const [oldest, t] = this.programs.entries().next().value as [string, Traced];
      t.program.free();
      this.programs.delete(oldest);
    }
    const traced = { program, outs, map }; // outs: the skeleton, its (symbolic) tensors marking where outputs go
    this.programs.set(key, traced);
    return traced;
  }

  free(): void {
    for (const t of this.programs.values()) t.program.free();
    this.programs.clear();
  }
}

/** A spec's co-located block (`spec.colocated`), run by the `batched` placement. */
class ColocatedRun<State, Message, View> implements PlacementRun<State, Message, View> {
  private readonly block;
  constructor(rt: Runtime, spec: WorkerSpec<State, Message, View>) { this.block = spec.colocated!(rt); }
  join(worker: number, state: State): void { this.block.join(worker, state); }
  held(): null { return null; }
  round(view: View | null, input: Tensor | null): { view: View } { return { view: this.block.round(view, input) }; }
  free(): void { this.block.free(); }
}

const registry = new Map<string, Placement>();

/** Add a placement; its name becomes a value of a run's `placement`. */
export function registerPlacement(p: Placement): void {
  if (registry.has(p.name)) throw new LiaisonError('E_ARG', `placement '${p.name}' is already registered; pick another name`, { param: 'name' });
  registry.set(p.name, p);
}

/** The registered placement called `name`; E_ARG listing the names there are otherwise. */
export function getPlacement(name: string): Placement {
  const p = registry.get(name);
  if (!p) throw new LiaisonError('E_ARG', `placement '${name}' is not registered; the placements are ${[...registry.keys()].map((k) => `'${k}'`).join(', ')} (registerPlacement adds one)`, { param: 'placement' });
  return p;
}

/** Names of the registered placements. */
export function placements(): string[] {
  return [...registry.keys()];
}

registerPlacement({
  name: 'sequential',
  description: 'one worker at a time, each its own ops on its own state (the reference)',
  start: (rt, spec) => new SequentialRun(rt, spec),
});

registerPlacement({
  name: 'batched',
  description: 'the joined workers of one runtime as one traced program per round (the spec\'s co-located form when it has one)',
  start: (rt, spec) => (spec.colocated ? new ColocatedRun(rt, spec) : new BatchedRun(rt, spec)),
});

registerPlacement(ranksPlacement);
