/**
 * Programs: tensor code traced once from TypeScript, stored in the runtime, replayed there.
 *
 * Some plugin code runs where a round trip to TypeScript per call is far too slow: an
 * optimizer step every training step, an MoE router inside every forward pass, a KV-cache
 * policy per layer per decoding step. {@link trace} runs a function once on placeholder
 * tensors, records the ops it queues, and defines them in the runtime as one program; the
 * runtime then replays it in-process — from {@link Program.run}, or at a model's hook
 * point — checking nothing twice (python-runtime/liaison_runtime/program.py).
 *
 * ```ts
 * const step = await trace(rt, {
 *   name: 'sgd',
 *   inputs: { lr: { dtype: 'f32', shape: [] } },
 *   state: { steps: rt.zeros([]) },
 * }, ({ lr }, state) => {
 *   for (const [p, g] of pairs) p.sub_(g.mul(lr));   // captured tensors, updated in place
 *   state.steps = state.steps.add(1);                  // threaded to the next run
 * });
 * step.run({ lr: rt.full([], 0.1) });                  // queued like any op
 * ```
 *
 * Inside the function every tensor is symbolic: reading a value (`item()`, `toArray()`),
 * awaiting, or branching on data cannot work, and is refused at trace time with E_TRACE.
 * Tensors made before the trace and used inside are *captured*: the program holds them
 * (parameters, optimizer buffers) and sees their in-place updates. Data uploaded inside
 * (`rt.tensor(...)`) becomes a captured constant.
 */
import { type DType, LiaisonError, type OpRecord, type OpRecorder, type Runtime, Tensor } from '../bridge/index.js';
import { type Shape, bindSizes, evalShape } from '../bridge/sizes.js';

/** What a placeholder promises: a dtype, and a shape whose strings are symbolic sizes. */
export interface PlaceholderSpec {
  dtype?: DType;
  /** e.g. `['B', 'H', 'T', 64]`: numbers are checked at every run, strings are any size. */
  shape?: readonly (number | string)[];
}

export type Placeholders = Record<string, PlaceholderSpec>;
export type TensorsOf<K extends PropertyKey> = { [P in K]: Tensor };

/** What the traced function returns: nothing, one tensor, a list, or named tensors. */
export type TraceResult = void | Tensor | readonly Tensor[] | Record<string, Tensor>;

export interface TraceSpec<I extends Placeholders, S extends Record<string, Tensor>> {
  /** Shown in errors and in `describe()`. */
  name: string;
  /** The program's inputs, in order: a run (or a hook point) passes them positionally. */
  inputs?: I;
  /**
   * State threaded from run to run: these tensors are the first state; the function gets
   * them as placeholders on its second argument, and what it assigns there becomes the
   * state of the next run. Read the current values with {@link Program.state}.
   */
  state?: S;
}

/** Outputs of a run, shaped like what the traced function returned. */
export type RunResult<R> = R extends Tensor ? Tensor : R extends readonly Tensor[] ? Tensor[] : R extends Record<string, Tensor> ? { [K in keyof R]: Tensor } : void;

class Recorder implements OpRecorder {
  readonly ops: OpRecord[] = [];
  /** Segment boundaries of each {@link traceEach} group: op indices [s0, s1, …, sn]. */
  readonly groups: number[][] = [];
  /** Inside a traceEach: groups do not nest. */
  grouping = false;
  /** [start, end) op ranges recorded inside {@link noGrad}. */
  readonly noGrad: number[][] = [];
  error: LiaisonError | null = null;
  constructor(readonly label: string) {}
  record(rec: OpRecord): void { this.ops.push(rec); }
  fail(e: LiaisonError): void { this.error ??= e; }
}

/** A program stored in the runtime. */
export class Program<I extends Placeholders = Placeholders, S extends Record<string, Tensor> = Record<string, Tensor>, R extends TraceResult = TraceResult> {
  /** @internal */
  constructor(
    readonly rt: Runtime,
    readonly name: string,
    /** The runtime object: pass it to a hook point (`model.setHook('kv', program.handle)`). */
    readonly handle: Tensor,
    readonly inputNames: readonly (keyof I & string)[],
    readonly stateNames: readonly (keyof S & string)[],
    private readonly shape: {
      kind: 'void' | 'one' | 'list' | 'named'; names: string[];
      /** The placeholders' declared shapes, and the outputs' static shapes in their terms. */
      inShapes: readonly (Shape | undefined)[]; outShapes: readonly (Shape | undefined)[]; symbolic: boolean;
    },
    /** How many ops the trace recorded. */
    readonly size: number,
  ) {}

  /** Queue one replay; the outputs come back as tensors at once, like any op's. */
  run(inputs: TensorsOf<keyof I> | readonly Tensor[] = [] as never): RunResult<R> {
    const list = Array.isArray(inputs) ? (inputs as Tensor[]) : this.inputNames.map((n) => {
      const t = (inputs as Record<string, Tensor>)[n];
      if (!(t instanceof Tensor)) throw new LiaisonError('E_ARG', `program '${this.name}': input '${n}' is missing (it takes ${this.inputNames.join(', ') || 'no inputs'})`);
      return t;
    });
    if (list.length !== this.inputNames.length) throw new LiaisonError('E_ARG', `program '${this.name}' takes ${this.inputNames.length} inputs, got ${list.length}`);
    const n = this.shape.names.length;
    const outs = this.rt.call('program_run', [this.handle, list], undefined, n);
    const arr = n === 1 ? [outs as Tensor] : (outs as Tensor[]);
    this.giveShapes(list, arr);
    switch (this.shape.kind) {
      case 'void': return undefined as RunResult<R>;
      case 'one': return arr[0] as RunResult<R>;
      case 'list': return arr as RunResult<R>;
      default: return Object.fromEntries(this.shape.names.map((k, i) => [k, arr[i]])) as RunResult<R>;
    }
  }

  /** The outputs' static shapes, their symbolic sizes replaced by what these inputs bind. */
  private giveShapes(inputs: readonly Tensor[], outs: readonly Tensor[]): void {
    const { inShapes, outShapes } = this.shape;
    const sizes = this.shape.symbolic ? bindSizes(inShapes, inputs.map((t) => t.sh)) : undefined;
    for (let i = 0; i < outs.length; i++) {
      const o = outShapes[i];
      const s = o && evalShape(o, sizes);
      outs[i].sh = s;
      outs[i].lost = s ? undefined : this.unknownOut(i);
    }
  }

  /** Why output `i` has no static shape; made once, as a program runs every step. */
  private unknownOut(i: number): string {
    const why = this.shape.outShapes[i] ? 'has a size that depends on inputs of unknown shape' : 'had no static shape when it was traced';
    return (this.whyUnknown[i] ??= `output ${this.shape.names[i]} of program '${this.name}' ${why}`);
  }
  private readonly whyUnknown: string[] = [];

  /** The current value of a state tensor (a new handle onto the program's own). */
  state(name: keyof S & string): Tensor {
    const i = this.stateNames.indexOf(name);
    if (i < 0) throw new LiaisonError('E_ARG', `program '${this.name}' has no state '${name}'; it has ${this.stateNames.join(', ') || 'none'}`);
    return this.rt.call('program_state', [this.handle, i]) as Tensor;
  }

  /** What the runtime stored: the op names, counts of inputs, outputs, state and captures. */
  async describe(): Promise<{ name: string; ops: string[]; inputs: number; outputs: number; state: number; captured: number }> {
    return (await this.handle.info()) as never;
  }

  /** Drop the program (and what only it still holds) from the runtime. */
  free(): void {
    this.handle.free();
  }
}

/**
 * Trace `fn` into a program and define it in the runtime. Resolves once the runtime has
 * checked every recorded op (an unknown op or a bad argument fails here, naming the op).
 */
export async function trace<I extends Placeholders, S extends Record<string, Tensor>, R extends TraceResult>(
  rt: Runtime,
  spec: TraceSpec<I, S>,
  fn: (inputs: TensorsOf<keyof I>, state: TensorsOf<keyof S>) => R,
): Promise<Program<I, S, R>> {
  const program = define(rt, spec, fn);
  await rt.flush();
  return program;
}

/**
 * Like {@link trace}, but queued: the definition goes out with the next batch, and a
 * definition error surfaces at the next read or flush. For hook points set up in bulk.
 */
export function define<I extends Placeholders, S extends Record<string, Tensor>, R extends TraceResult>(
  rt: Runtime,
  spec: TraceSpec<I, S>,
  fn: (inputs: TensorsOf<keyof I>, state: TensorsOf<keyof S>) => R,
): Program<I, S, R> {
  const name = spec.name;
  const inputSpecs = spec.inputs ?? ({} as I);
  const inputNames = Object.keys(inputSpecs) as (keyof I & string)[];
  const init = spec.state ?? ({} as S);
  const stateNames = Object.keys(init) as (keyof S & string)[];
  for (const k of stateNames) {
    if (!(init[k] instanceof Tensor)) throw new LiaisonError('E_ARG', `program '${name}': state '${k}' must be a tensor (its first value)`);
  }
  const rec = new Recorder(name);
  const inputs = {} as Record<string, Tensor>;
  const stateIn = {} as Record<string, Tensor>;
  for (const k of inputNames) {
    const t = inputs[k] = rt.symbolic(rec);
    const shape = inputSpecs[k].shape;
    const digits = shape?.find((d) => typeof d === 'string' && /^\s*\d+\s*$/.test(d));
    if (digits !== undefined) t.lost = `placeholder '${k}' of program '${name}' names a symbolic size '${digits}', which would read as a number; name it with a letter`;
    else if (Array.isArray(shape)) t.sh = [...shape];
    else t.lost = `placeholder '${k}' of program '${name}' declares no shape`;
  }
  for (const k of stateNames) {
    // the traced ops run again on what this run leaves, so the first value's shape proves nothing
    stateIn[k] = rt.symbolic(rec);
    stateIn[k].lost = `state '${k}' of program '${name}' may change shape from run to run, so its shape is not assumed`;
  }
  const state = { ...stateIn };
  let result: unknown;
  try {
    result = rt.recording(rec, () => fn(inputs as TensorsOf<keyof I>, state as TensorsOf<keyof S>));
  } catch (e) {
    throw rec.error ?? e;
  }
  if (result instanceof Promise) {
    result.catch(() => undefined);
    if (rec.error) throw rec.error;
    throw new LiaisonError('E_TRACE', `program '${name}': the traced function returned a promise. A program cannot await: it runs inside the runtime without coming back to TypeScript, so write it as a plain (synchronous) function of tensors`);
  }
  if (rec.error) throw rec.error;
  const shape = resultShape(name, result);
  const outputs = shape.tensors;
  const stateOut = stateNames.map((k) => {
    const t = state[k];
    if (!(t instanceof Tensor)) throw new LiaisonError('E_TRACE', `program '${name}': state '${k}' was set to something that is not a tensor`);
    return t;
  });
  // a state set under a name the spec does not declare (a typo) would be lost after the run
  const undeclared = Object.keys(state).filter((k) => !(stateNames as string[]).includes(k));
  if (undeclared.length) throw new LiaisonError('E_TRACE', `program '${name}': the traced function set state ${undeclared.map((k) => `'${k}'`).join(', ')}, which spec.state does not declare (it declares ${stateNames.map((k) => `'${k}'`).join(', ') || 'none'}); a state is threaded only under its declared name`, { param: 'state' });
  const specs = {
    inputs: inputNames.map((k) => ({ name: k, ...inputSpecs[k] })),
    state: stateNames.map((k) => ({ name: k })),
  };
  const handle = rt.call('program_define', [name, rec.ops as never, inputNames.map((k) => inputs[k].ref) as never, outputs.map((t) => t.ref) as never], {
    state_in: stateNames.map((k) => stateIn[k].ref) as never,
    state_out: stateOut.map((t) => t.ref) as never,
    state_init: stateNames.map((k) => init[k]),
    specs: specs as never,
    ...(rec.groups.length ? { groups: rec.groups as never } : {}),
    ...(rec.noGrad.length ? { no_grad: rec.noGrad as never } : {}),
  }) as Tensor;
  // a program lives until free(): an enclosing rt.scope() cannot see into a Program to spare it
  handle.keep();
  const outShapes = outputs.map((t) => t.sh);
  const inShapes = inputNames.map((k) => inputSpecs[k].shape);
  return new Program<I, S, R>(rt, name, handle, inputNames, stateNames, { kind: shape.kind, names: shape.names, inShapes, outShapes, symbolic: outShapes.some((o) => o?.some((d) => typeof d === 'string')) }, rec.ops.length);
}

function resultShape(name: string, r: unknown): { kind: 'void' | 'one' | 'list' | 'named'; names: string[]; tensors: Tensor[] } {
  const bad = (what: string) => new LiaisonError('E_TRACE', `program '${name}': the traced function must return nothing, a tensor, a list of tensors or an object of tensors; ${what}`);
  if (r === undefined || r === null) return { kind: 'void', names: [], tensors: [] };
  if (r instanceof Tensor) return { kind: 'one', names: ['0'], tensors: [r] };
  if (Array.isArray(r)) {
    r.forEach((t, i) => { if (!(t instanceof Tensor)) throw bad(`item ${i} is not a tensor`); });
    return { kind: 'list', names: r.map((_, i) => String(i)), tensors: r as Tensor[] };
  }
  if (typeof r === 'object') {
    const entries = Object.entries(r as Record<string, unknown>);
    for (const [k, t] of entries) if (!(t instanceof Tensor)) throw bad(`'${k}' is not a tensor`);
    return { kind: 'named', names: entries.map(([k]) => k), tensors: entries.map(([, t]) => t as Tensor) };
  }
  throw bad(`it returned a ${typeof r}`);
}

/**
 * Inside a traced function: call `fn` for each item, telling the runtime that the ops each
 * call records are one computation over different tensors — an optimizer's update of each
 * parameter, a mask re-applied to each weight. The runtime checks that they are (the same
 * ops, and no call's writes touched by another) and then replays them side by side, op by
 * op across the items, as multi-tensor `torch._foreach_*` ops where the op has one: one
 * dispatch for all the parameters instead of one each. The first run of the program goes
 * through the ops as written, so every op's own checks run on real tensors first. Calls
 * that turn out to differ just run one after the other, as written; outside a trace (or
 * inside another traceEach) this is a plain loop.
 *
 * ```ts
 * traceEach(rt, params, (p) => { p.grad.mul_(0.9) });
 * ```
 */
export function traceEach<T>(rt: Runtime, items: readonly T[], fn: (item: T, index: number) => void): void {
  const rec = rt.activeRecorder;
  if (!(rec instanceof Recorder) || rec.grouping) {
    items.forEach((item, i) => fn(item, i));
    return;
  }
  const bounds = [rec.ops.length];
  rec.grouping = true;
  try {
    items.forEach((item, i) => {
      fn(item, i);
      bounds.push(rec.ops.length);
    });
  } finally {
    rec.grouping = false;
  }
  // two or more non-empty segments make a group worth replaying side by side
  if (bounds.length > 2 && bounds.every((b, i) => i === 0 || b > bounds[i - 1])) rec.groups.push(bounds);
}

/**
 * Inside a traced function: the ops `fn` records run without autograd — an optimizer's
 * step, a mask re-applied after it. Nothing they compute joins a graph, so a state tensor
 * updated from a value that requires grad (weight decay's `param.mul(λ)`) is not chained
 * onto the step's graph, run after run. Outside a trace this just calls `fn`.
 */
export function noGrad<T>(rt: Runtime, fn: () => T): T {
  const rec = rt.activeRecorder;
  if (!(rec instanceof Recorder)) return fn();
  const start = rec.ops.length;
  try {
    return fn();
  } finally {
    if (rec.ops.length > start) rec.noGrad.push([start, rec.ops.length]);
  }
}
