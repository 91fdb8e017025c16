/**
 * The Trainer's side of sdk/hooks.ts: what plugins attached, by point, in the order they
 * attached. The Trainer traces the traced points into its step program and awaits the
 * loop points; plugins see only the {@link TrainingHooks} surface.
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
  /** Extra loss terms, added to the training loss in this order. */
  readonly losses: { name: string; fn: (t: StepTrace) => Tensor }[] = [];
  /** Checkpointed tensors, saved as `prefix.key`. */
  readonly states: { prefix: string; fn: () => Record<string, Tensor> }[] = [];
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

  addLoss(name: string, fn: (t: StepTrace) => Tensor): void {
    if (this.losses.some((l) => l.name === name)) throw new LiaisonError('E_ARG', `hooks.addLoss: a loss named '${name}' is already added`, { param: 'name' });
    this.losses.push({ name, fn });
    this.stale = true;
  }

  addState(prefix: string, fn: () => Record<string, Tensor>): void {
    if (!prefix || /[/]/.test(prefix)) throw new LiaisonError('E_ARG', `hooks.addState: prefix must be a non-empty name without '/', got ${JSON.stringify(prefix)}`, { param: 'prefix' });
    if (prefix === 'optimizer' || this.states.some((s) => s.prefix === prefix)) throw new LiaisonError('E_ARG', `hooks.addState: the prefix '${prefix}' is already taken; give each plugin its own`, { param: 'prefix' });
    this.states.push({ prefix, fn });
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
