// The optimizer template (sdk/families/momentum/types.ts): prepare()'s result is handed to
// every update() of the step, so an optimizer keeps nothing traced on its instance, and an
// optimizer written against the old contract (prepare() storing its values) still trains.
import { Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Runtime, Tensor } from '../bridge/index.js';
import { adam, heavyBall, nesterov } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import { MomentumOptimizerBase, OptimizerFields } from '../sdk/families/momentum/base.js';
import type { MomentumOptimizer, StepHyper } from '../sdk/families/momentum/types.js';
import type { ParamInfo } from '../sdk/hooks.js';
import { Model } from '../sdk/model.js';
import { type PluginMeta, plugins } from '../sdk/plugin.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
let data: Dataset;
beforeAll(async () => {
  rt = await startRuntime();
  data = (await Dataset.builtin(rt, 'digits')).split(0.8, 0)[1]; // 360 rows: a few steps
});
afterAll(async () => { await rt?.close(); });

const meta = (name: string): PluginMeta => Object.freeze({ name, version: '1.0.0', family: 'momentum-optimizer', schema: Type.Object({ lr: OptimizerFields.lr }), description: name });

/** Paths of the tensors reachable from the instance's own fields (plain objects and arrays followed). */
function tensorsOn(obj: object): string[] {
  const found: string[] = [];
  const walk = (v: unknown, path: string, depth: number) => {
    if (v instanceof Tensor) found.push(path);
    else if (depth < 4 && v !== null && typeof v === 'object' && (Array.isArray(v) || Object.getPrototypeOf(v) === Object.prototype)) {
      for (const [k, x] of Object.entries(v)) walk(x, `${path}.${k}`, depth + 1);
    }
  };
  for (const [k, v] of Object.entries(obj)) if (k !== 'config' && k !== 'meta') walk(v, k, 0);
  return found;
}

/** Final parameters of a one-epoch run of an MLP with `optimizer` (same seed, same batches). */
async function train(optimizer: MomentumOptimizer): Promise<number[]> {
  const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 12, 10] }, { seed: 3 });
  const trainer = new Trainer({ model, optimizer, epochs: 1, batchSize: 64, loss: 'cross_entropy', progress: 'none', logEvery: 1000 });
  try {
    await trainer.fit(data);
    const out: number[] = [];
    for (const p of model.params) out.push(...Array.from((await model.param(p.name).data()).data as Float32Array));
    return out;
  } finally {
    trainer.free();
    model.free();
  }
}

/** Adam's step written against the old contract: prepare() returns nothing and keeps its scalars on the instance. */
class OldAdam extends MomentumOptimizerBase<{ lr: number }> {
  private scalars: { size: Tensor; eps: Tensor } | null = null;
  override init(_p: Tensor, info: ParamInfo, r: Runtime): Record<string, Tensor> {
    return { m: r.zeros(info.shape), v: r.zeros(info.shape) };
  }
  override prepare({ lr, step }: StepHyper): void {
    const correction = (beta: number) => step.mul(Math.log(beta)).exp().neg().add(1);
    const root2 = correction(0.999).sqrt();
    this.scalars = { size: lr.mul(root2).div(correction(0.9)), eps: root2.mul(1e-8) };
  }
  update(param: Tensor, grad: Tensor, { m, v }: Record<string, Tensor>): void {
    m.lerp_(grad, 0.1);
    v.mul_(0.999);
    v.addcmul_(grad, grad, 0.001);
    param.sub_(m.div(v.sqrt().add(this.scalars!.eps)).mul(this.scalars!.size));
  }
}

/** Records what prepare() returned and what each update() received. */
class Recording extends MomentumOptimizerBase<{ lr: number }, { scale: Tensor }> {
  made: object[] = [];
  got: unknown[] = [];
  override prepare({ lr }: StepHyper): { scale: Tensor } {
    const p = { scale: lr.mul(1) };
    this.made.push(p);
    return p;
  }
  update(param: Tensor, grad: Tensor, _s: Record<string, Tensor>, _hp: StepHyper, prepared?: { scale: Tensor }): void {
    this.got.push(prepared);
    param.addcmul_(grad, prepared!.scale, -1);
  }
}

describe('optimizer template: prepare() → update()', () => {
  it('the Trainer passes prepare()’s result to every parameter’s update() of the step', async () => {
    const opt = new Recording({ lr: 0.1 }, meta('recording'));
    await train(opt);
    expect(opt.made).toHaveLength(1); // traced once, replayed every step
    expect(opt.got).toHaveLength(4); // two weights, two biases
    for (const g of opt.got) expect(g).toBe(opt.made[0]);
  }, 60_000);

  // every registered optimizer at its defaults, and the configs whose prepare() makes more
  const cases: [string, () => MomentumOptimizer][] = [
    ...plugins('momentum-optimizer').map((f): [string, () => MomentumOptimizer] => [f.name, () => f() as MomentumOptimizer]),
    ['heavy-ball with dampening', () => heavyBall({ lr: 0.05, momentum: 0.9, dampening: 0.3 })],
    ['nesterov from kappa', () => nesterov({ lr: 0.05, kappa: 100 })],
  ];
  for (const [name, make] of cases) {
    it(`${name}: keeps no traced tensor on the instance after training`, async () => {
      const opt = make();
      await train(opt);
      expect(tensorsOn(opt)).toEqual([]);
    }, 60_000);
  }

  it('an optimizer written against the old contract (prepare() storing its values) trains as before: the same numbers as adam', async () => {
    const [old, now] = [await train(new OldAdam({ lr: 0.01 }, meta('old-adam'))), await train(adam({ lr: 0.01 }))];
    expect(old.length).toBe(now.length);
    old.forEach((x, i) => expect(x).toBeCloseTo(now[i], 6));
  }, 60_000);
});
