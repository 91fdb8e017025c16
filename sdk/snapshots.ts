/**
 * Named weight snapshots of a Trainer (sdk/trainer.ts): copies of every parameter it holds
 * (the model's and the plugins', sdk/trainer-params.ts), cloned in the runtime and kept by
 * the session, taken now or right after a chosen step, and copied back into chosen
 * parameters on `rewind`. The lottery-ticket loop: snapshot 'init' (or at step k), train,
 * prune by magnitude, rewind the surviving weights, reset the optimizer, train again.
 *
 * A snapshot due at step k is queued right behind step k's program in the same batch (ops
 * run in order), so it costs no round trip and sees exactly the weights step k left.
 * Checkpoints hold snapshots when asked (`save(path, { snapshots: true })`), as
 * `snapshot/<name>/<param>`, their steps in the metadata.
 */
import { LiaisonError, type Tensor } from '../bridge/index.js';
import type { ParamControl, Selector } from './hooks.js';
import { select, type ParamSet } from './trainer-params.js';

interface Held { step: number; tensors: Map<string, Tensor> }

/** The checkpoint name of one snapshot entry. */
export const snapshotKey = (snap: string, param: string): string => `snapshot/${snap}/${param}`;

export class Snapshots {
  private readonly held = new Map<string, Held>();
  /** Snapshots to take after a step: step → names. */
  private readonly due = new Map<number, string[]>();

  constructor(private readonly params: ParamSet, private readonly steps: () => number) {}

  /** Names held, with the step each was taken at. */
  list(): Record<string, number> {
    return Object.fromEntries([...this.held].map(([k, h]) => [k, h.step]));
  }

  /** Take snapshot `name` now, or schedule it right after step `at` (one already past: E_ARG). */
  take(name: string, at?: number): void {
    if (typeof name !== 'string' || !name || name.includes('/')) throw new LiaisonError('E_ARG', `snapshot: name must be a non-empty name without '/', got ${JSON.stringify(name)}`, { param: 'name' });
    if (at === undefined || at === this.steps()) return this.takeNow(name);
    if (!Number.isInteger(at) || at < this.steps()) throw new LiaisonError('E_ARG', `snapshot('${name}'): at must be an integer step >= the steps done (${this.steps()}), got ${at}`, { param: 'at' });
    this.due.set(at, [...(this.due.get(at) ?? []), name]);
  }

  /** Called by the loop after queueing step `step`: takes the snapshots due then. */
  after(step: number): void {
    const names = this.due.get(step);
    if (!names) return;
    this.due.delete(step);
    for (const n of names) this.takeNow(n);
  }

  private takeNow(name: string): void {
    const tensors = new Map(this.params.all().map((e) => [e.info.name, e.param.clone().keep()]));
    this.drop(name);
    this.held.set(name, { step: this.steps(), tensors });
  }

  /**
   * Copy snapshot `name` back into the chosen parameters (default: every one it holds).
   * `keepZeros`: only the entries that are not 0 now are rewound (a pruned weight's survivors:
   * the lottery ticket's rewind), the zeros stay.
   */
  rewind(name: string, sel?: Selector, opts: { keepZeros?: boolean } = {}): string[] {
    const h = this.get(name, 'rewind');
    const names = select(sel, [...h.tensors.keys()], `rewind('${name}')`);
    for (const n of names) {
      const p = this.params.get(n, `rewind('${name}')`).param;
      const snap = h.tensors.get(n)!;
      if (!opts.keepZeros) { p.copy_(snap); continue; }
      const alive = p.ne(0);
      const kept = snap.where(alive, 0);
      p.copy_(kept);
      alive.free();
      kept.free();
    }
    return names;
  }

  private get(name: string, what: string): Held {
    const h = this.held.get(name);
    if (!h) throw new LiaisonError('E_ARG', `${what}: no snapshot '${name}'; there are ${[...this.held.keys()].join(', ') || 'none'}${this.pending(name) ? ` ('${name}' is due after a later step)` : ''}`, { param: 'name' });
    return h;
  }

  private pending(name: string): boolean {
    return [...this.due.values()].some((ns) => ns.includes(name));
  }

  /** Free snapshot `name` (nothing when there is none). */
  drop(name: string): void {
    for (const t of this.held.get(name)?.tensors.values() ?? []) t.free();
    this.held.delete(name);
  }

  /** Every snapshot under its checkpoint names. */
  checkpointTensors(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const [s, h] of this.held) for (const [p, t] of h.tensors) out[snapshotKey(s, p)] = t;
    return out;
  }

  /** Install snapshots read from a checkpoint (tensors already made and kept), replacing those of the same names. */
  install(snaps: Record<string, { step: number; tensors: Map<string, Tensor> }>): void {
    for (const [name, h] of Object.entries(snaps)) {
      this.drop(name);
      this.held.set(name, h);
    }
  }

  free(): void {
    for (const name of [...this.held.keys()]) this.drop(name);
    this.due.clear();
  }
}

/** The parameter and snapshot surface a Trainer gives its hooks (sdk/hooks.ts ParamControl). */
export function paramControl(params: ParamSet, snaps: Snapshots, steps: () => number): ParamControl {
  return {
    addParam: (name, spec) => params.declare(spec, name),
    freeze: (sel) => params.setTrainable(select(sel, params.names(), 'freeze'), false),
    unfreeze: (sel) => params.setTrainable(select(sel, params.names(), 'unfreeze'), true),
    params: () => params.views(),
    get step() { return steps(); },
    optimizerState: (name) => Object.freeze({ ...(params.get(name, 'optimizerState').state ?? {}) }),
    snapshot: (name, opts) => snaps.take(name, opts?.at),
    rewind: (name, sel, opts) => { snaps.rewind(name, sel, opts); },
    resetOptimizer: (sel) => params.resetState(select(sel, params.names(), 'resetOptimizer')),
  };
}
