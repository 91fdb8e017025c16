/**
 * Conformance suite of the MomentumOptimizer family (sdk/families/momentum/types.ts).
 *
 * Every case drives the optimizer the way the Trainer does: `init()` once per parameter,
 * then `update()` traced once into a program whose runs are the steps, with `hp.lr` from
 * `learningRate(step)`. The objective is a separable quadratic ½·Σ a·x², so the gradient
 * is `a·x` and every claim is checkable without a model.
 */
import { LiaisonError, type Runtime, Tensor } from '../../bridge/index.js';
import { traceUpdate } from '../families/momentum/base.js';
import type { MomentumOptimizer } from '../families/momentum/types.js';
import type { ParamInfo } from '../hooks.js';
import { type Program, trace } from '../program.js';
import { type CaseDef, check, ConformanceFailure, registrationCases, values } from './suite.js';

type M = MomentumOptimizer;

const SHAPE = [4, 3];
const INFO: ParamInfo = { name: 'w', shape: SHAPE, dtype: 'f32', numel: 12 };

/** x in [1, 2] (away from the minimum at 0), curvature a in (0, 1/lr] so a plain step cannot overshoot. */
function quadratic(rt: Runtime, lr: number): { x: Tensor; a: Tensor; loss: (p: Tensor) => Tensor } {
  const x = rt.linspace(1, 2, 12).reshape(SHAPE);
  const a = rt.linspace(0.5, 1, 12).reshape(SHAPE).mul(Math.min(1, 1 / lr));
  return { x, a, loss: (p) => p.square().mul(a).sum().mul(0.5) };
}

/** The optimizer's step over one parameter, traced as the Trainer traces it. */
async function stepper(rt: Runtime, opt: M, param: Tensor, state: Record<string, Tensor>, grad: (p: Tensor) => Tensor): Promise<Program> {
  try {
    return await trace(rt, { name: `${opt.meta.name}-conformance`, inputs: { lr: { dtype: 'f32', shape: [] }, step: { dtype: 'f32', shape: [] } } },
      ({ lr, step }) => { const hp = { lr, step }; traceUpdate(opt, 'x', param, grad(param), state, hp, opt.prepare?.(hp)); });
  } catch (e) {
    // a replaced or unknown state entry is named as such (sdk/families/contract.ts)
    if (e instanceof LiaisonError && e.code === 'E_TRACE' && e.param === 'state') throw new ConformanceFailure(e.message);
    if (e instanceof LiaisonError && e.code === 'E_TRACE') throw new ConformanceFailure(`update() cannot be traced (tensor ops only, no reads or awaits): ${e.message}`);
    throw e;
  }
}

function run(rt: Runtime, opt: M, prog: Program, step: number): void {
  prog.run({ lr: rt.full([], opt.learningRate(step)), step: rt.full([], step) } as never);
}

const close = (a: number[], b: number[], tol: number) => a.length === b.length && a.every((v, i) => Math.abs(v - b[i]) <= tol * (1 + Math.abs(b[i])));

/** A config field that moves parameters without a gradient (weight decay), when set. */
function decay(opt: M): number {
  for (const [k, v] of Object.entries(opt.config as Record<string, unknown>)) {
    if (/^weight_?decay$/i.test(k) && typeof v === 'number' && v !== 0) return v;
  }
  return 0;
}

/** The MomentumOptimizer cases. */
export function momentumCases(): CaseDef<M>[] {
  return [
    ...registrationCases<M>(),
    {
      name: 'update() traces (tensor ops only, no E_TRACE) and keeps the parameter finite and its shape',
      async run({ rt, plugin }) {
        const opt = plugin();
        const { x, a } = quadratic(rt, opt.learningRate(1));
        const p = x.clone();
        const state = opt.init(p, INFO, rt);
        const prog = await stepper(rt, opt, p, state, (q) => q.mul(a));
        try {
          for (let s = 1; s <= 3; s++) run(rt, opt, prog, s);
          const info = await p.info();
          check(info.shape.join() === SHAPE.join(), `the parameter's shape became [${info.shape}] (was [${SHAPE}]): update() must change it in place`);
          check((await values(p)).every(Number.isFinite), 'the parameter is not finite after three steps on a quadratic');
        } finally {
          prog.free(); // a program outlives the case's scope unless freed
        }
      },
    },
    {
      name: 'one step on a quadratic loss lowers it',
      async run({ rt, plugin }) {
        const opt = plugin();
        const { x, a, loss } = quadratic(rt, opt.learningRate(1));
        const p = x.clone();
        const prog = await stepper(rt, opt, p, opt.init(p, INFO, rt), (q) => q.mul(a));
        try {
          const before = await loss(p).item();
          run(rt, opt, prog, 1);
          const after = await loss(p).item();
          check(after < before, `loss ${before} -> ${after} after one step at learning rate ${opt.learningRate(1)} (curvature ≤ 1/lr)`);
        } finally {
          prog.free(); // a program outlives the case's scope unless freed
        }
      },
    },
    {
      name: 'state: tensors keep their shapes, change in place, and a checkpoint round trip restores the trajectory',
      async run({ rt, plugin, skip }) {
        const opt = plugin();
        // judged before anything else is made: a skip is a throw, and what a case made before
        // throwing is left to the backstop (the finalizer), not freed at once
        const stateless = await rt.scope(() => Object.keys(opt.init(rt.zeros(SHAPE), INFO, rt)).length === 0);
        if (stateless) skip('stateless: init() returns no state tensors, so there is nothing to checkpoint');
        const { x, a } = quadratic(rt, opt.learningRate(1));
        const p = x.clone();
        const state = opt.init(p, INFO, rt);
        const names = Object.keys(state);
        for (const n of names) check(state[n] instanceof Tensor, `state '${n}' from init() is not a tensor`);
        const first = await Promise.all(names.map((n) => state[n].data()));
        // the program gets a copy of the record: what update() assigns there stays out of ours
        const prog = await stepper(rt, opt, p, { ...state }, (q) => q.mul(a));
        try {
          run(rt, opt, prog, 1);
          run(rt, opt, prog, 2);
          // a checkpoint: the values, read out, as the Trainer saves them
          const saved = { p: await p.data(), state: await Promise.all(names.map((n) => state[n].data())) };
          names.forEach((n, i) => check(saved.state[i].shape.join() === first[i].shape.join(), `state '${n}' changed shape from [${first[i].shape}] to [${saved.state[i].shape}]`));
          const moved = names.some((_, i) => !close(Array.from(saved.state[i].data as ArrayLike<number>, Number), Array.from(first[i].data as ArrayLike<number>, Number), 0));
          check(moved, 'no state tensor changed over two steps with nonzero gradients: update() must change state in place (state.v.mul_(β).add_(g)); a reassigned state is lost after the step');
          const onward = async () => {
            run(rt, opt, prog, 3);
            run(rt, opt, prog, 4);
            return [await values(p), ...(await Promise.all(names.map((n) => values(state[n]))))];
          };
          const once = await onward();
          // resume: copy the saved values back into the same (captured) tensors
          p.copy_(rt.tensor(saved.p.data as never, saved.p.shape, saved.p.dtype));
          names.forEach((n, i) => state[n].copy_(rt.tensor(saved.state[i].data as never, saved.state[i].shape, saved.state[i].dtype)));
          const again = await onward();
          once.forEach((v, i) => check(close(again[i], v, 1e-5), () => `after restoring ${i === 0 ? 'the parameter' : `state '${names[i - 1]}'`} from the checkpoint, steps 3–4 gave ${again[i].slice(0, 4)}… instead of ${v.slice(0, 4)}…: the optimizer keeps state outside its state tensors`));
        } finally {
          prog.free(); // a program outlives the case's scope unless freed
        }
      },
    },
    {
      name: 'a zero gradient with zero state leaves the parameters unchanged',
      skipFor: (opt) => (decay(opt) ? `weight decay ${decay(opt)} moves parameters without a gradient` : undefined),
      async run({ rt, plugin }) {
        const opt = plugin();
        const { x } = quadratic(rt, opt.learningRate(1));
        const p = x.clone();
        const state = opt.init(p, INFO, rt);
        for (const t of Object.values(state)) t.zero_();
        const prog = await stepper(rt, opt, p, state, (q) => q.mul(0));
        try {
          run(rt, opt, prog, 1);
          const [got, want] = [await values(p), await values(x)];
          check(close(got, want, 1e-7), () => `parameters moved from ${want.slice(0, 3)}… to ${got.slice(0, 3)}… with a zero gradient and zero state`);
        } finally {
          prog.free(); // a program outlives the case's scope unless freed
        }
      },
    },
    {
      name: 'learningRate(step) is positive and finite',
      async run({ plugin }) {
        const opt = plugin();
        for (const s of [1, 2, 10, 1000, 100000]) {
          const lr = opt.learningRate(s);
          check(typeof lr === 'number' && Number.isFinite(lr) && lr > 0, `learningRate(${s}) = ${lr}`);
        }
      },
    },
  ];
}
