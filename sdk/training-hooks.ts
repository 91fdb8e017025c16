/**
 * The Trainer's side of sdk/hooks.ts: what plugins attached, by point, in the order they
 * attached. The Trainer traces the traced points into its step program and awaits the
 * loop points; plugins see only the {@link TrainingHooks} surface, one view per plugin
 * ({@link HookRegistry.forPlugin}).
 *
 * Names are per plugin. Two plugins of one kind (two pruners) ask for the same state
 * prefix (`pruner`) and loss name; the first plugin in the Trainer's list to ask keeps the
 * name as it asked, and a later one at position i (from 0) gets `<name>#<i>`: checkpoint
 * entries `pruner.layers.0.weight` and `pruner#1.layers.2.weight`. The list is the same
 * on resume (checked), so the names are too. One plugin asking twice for a name is an error.
 */
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import {
  LOOP_POINTS, type LoopInfo, type LoopPoint, type ModelLike, type StepTrace, TRACED_POINTS, type TracedPoint, type TrainingHooks,
} from './hooks.js';

type TracedFn = (t: StepTrace) => void;
type LoopFn = (info: LoopInfo) => Promise<void> | void;

/** Hooks collected from plugins' `attach()`. */
export class HookRegistry implements TrainingHooks {
  readonly traced: Record<TracedPoint, TracedFn[]> = { beforeStep: [], afterBackward: [], afterOptimizerStep: [] };
  readonly loop: Record<LoopPoint, LoopFn[]> = { epochEnd: [], evaluation: [] };
  /** Extra loss terms, added to the training loss in this order; `owner` is the plugin's position (-1: added directly). */
  readonly losses: { name: string; owner: number; fn: (t: StepTrace) => Tensor }[] = [];
  /** Checkpointed tensors, saved as `prefix.key` (the prefix as made unique here). */
  readonly states: { prefix: string; owner: number; fn: () => Record<string, Tensor> }[] = [];
  /** Set by retrace(): the step program must be traced again before the next step. */
  stale = false;

  constructor(readonly rt: Runtime, readonly model: ModelLike) {}

  on(point: TracedPoint, fn: TracedFn): void;
  on(point: LoopPoint, fn: LoopFn): void;
  on(point: TracedPoint | LoopPoint, fn: TracedFn | LoopFn): void {
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `hooks.on('${point}'): the hook must be a function`, { param: 'fn' });
    if ((TRACED_POINTS as readonly string[]).includes(point)) {
      this.traced[point as TracedPoint].push(fn as TracedFn);
      this.stale = true; // a program traced before this hook does not run it
    } else if ((LOOP_POINTS as readonly string[]).includes(point)) {
      this.loop[point as LoopPoint].push(fn as LoopFn);
    } else {
      throw new LiaisonError('E_ARG', `hooks.on: no hook point '${String(point)}'; there are ${[...TRACED_POINTS, ...LOOP_POINTS].join(', ')}`, { param: 'point' });
    }
  }

  /** Add a loss term; `owner` is the plugin's position in the Trainer's list (see the file's comment on names). */
  addLoss(name: string, fn: (t: StepTrace) => Tensor, owner = -1): void {
    if (typeof name !== 'string' || !name) throw new LiaisonError('E_ARG', `hooks.addLoss: name must be a non-empty string, got ${JSON.stringify(name)}`, { param: 'name' });
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `hooks.addLoss('${name}'): the loss must be a function`, { param: 'fn' });
    this.losses.push({ name: unique('addLoss', 'a loss named', name, owner, this.losses.map((l) => ({ name: l.name, owner: l.owner }))), owner, fn });
    this.stale = true;
  }

  /** Add checkpointed state; `owner` as for {@link addLoss}. */
  addState(prefix: string, fn: () => Record<string, Tensor>, owner = -1): void {
    if (typeof prefix !== 'string' || !prefix || /[/]/.test(prefix)) throw new LiaisonError('E_ARG', `hooks.addState: prefix must be a non-empty name without '/', got ${JSON.stringify(prefix)}`, { param: 'prefix' });
    if (prefix === 'optimizer') throw new LiaisonError('E_ARG', "hooks.addState: the prefix 'optimizer' is the optimizer's; choose another", { param: 'prefix' });
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', `hooks.addState('${prefix}'): the state must be a function returning tensors by key`, { param: 'fn' });
    this.states.push({ prefix: unique('addState', 'the prefix', prefix, owner, this.states.map((s) => ({ name: s.prefix, owner: s.owner }))), owner, fn });
  }

  /** The hooks plugin number `index` of the Trainer's list attaches through: names it adds are its own. */
  forPlugin(index: number): TrainingHooks {
    return {
      rt: this.rt,
      model: this.model,
      on: (point: TracedPoint | LoopPoint, fn: TracedFn | LoopFn) => this.on(point as TracedPoint, fn as TracedFn),
      addLoss: (name, fn) => this.addLoss(name, fn, index),
      addState: (prefix, fn) => this.addState(prefix, fn, index),
      retrace: () => this.retrace(),
    };
  }

  retrace(): void {
    this.stale = true;
  }

  /** Run every hook at a loop point, in attach order, waiting for each. */
  async runLoop(point: LoopPoint, info: LoopInfo): Promise<void> {
    for (const fn of this.loop[point]) await fn(info);
  }

  /** The state tensors of every plugin, as checkpoint names `prefix.key`. */
  stateTensors(): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    for (const { prefix, fn } of this.states) {
      for (const [k, t] of Object.entries(fn())) out[`${prefix}.${k}`] = t;
    }
    return out;
  }
}

/**
 * `name` as plugin `owner` gets it: as asked when free, `name#owner` when an earlier plugin
 * holds it. Taken by the same owner (or by anyone, for an owner of -1): E_ARG.
 */
function unique(method: string, what: string, name: string, owner: number, taken: { name: string; owner: number }[]): string {
  const holder = taken.find((t) => t.name === name);
  if (!holder) return name;
  const refuse = () => new LiaisonError('E_ARG', `hooks.${method}: ${what} '${name}' is already added${owner >= 0 && holder.owner === owner ? ' by this plugin' : ''}`, { param: method === 'addState' ? 'prefix' : 'name' });
  if (owner < 0 || holder.owner === owner) throw refuse();
  const own = `${name}#${owner}`;
  if (taken.some((t) => t.name === own)) throw refuse();
  return own;
}
