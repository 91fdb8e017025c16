// Weight hooks on an nn.Module adopted through the pythonia hatch (not built from a spec):
// its nn.Conv2d and nn.Linear are chosen by a name pattern, a delta W + B·A trains through
// autograd into B and A, and the module's own weights stay as they were.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startWithPython, type PyObject, type PythonRuntime, type Tensor } from '../bridge/index.js';
import { Model } from '../sdk/model.js';
import { weightHook } from '../sdk/weight-hooks.js';

let rt: PythonRuntime;
let torch: PyObject;
beforeAll(async () => {
  rt = await startWithPython({ device: 'cpu' });
  torch = await rt.python.import('torch');
});
afterAll(async () => {
  await rt?.close();
});

async function flat(t: Tensor): Promise<number[]> {
  return Array.from(await t.toArray() as Float32Array);
}

describe('weight hooks on an adopted module', () => {
  it('choose its convolution and linear layers by pattern and train a low-rank delta over them', async () => {
    await torch.manual_seed(0);
    const nn = await torch.nn;
    const net = await nn.Sequential(await nn.Conv2d(1, 4, 3), await nn.ReLU(), await nn.Flatten(), await nn.Linear(144, 3));
    const model = await Model.fromHandle(rt, await rt.adopt(net));
    expect(model.hookModules.weight).toEqual(['0', '3']);
    const before = await Promise.all(model.params.map((p) => flat(model.param(p.name))));
    for (const p of model.params) rt.call('set_requires_grad', [model.param(p.name), false], undefined, 0);

    const x = rt.randn([16, 1, 8, 8], { seed: 0 });
    const y = rt.randint(0, 3, [16], { seed: 1 });
    const loss = () => rt.call('cross_entropy', [model.forward(x), y]) as Tensor;
    const plain = await loss().item();
    // the conv's weight (4, 1, 3, 3) gets a per-filter scale; the linear's (3, 144) a rank-2 delta
    const scale = rt.zeros([4, 1, 1, 1]);
    const a = rt.randn([2, 144], { seed: 2 }).mul(0.1);
    const b = rt.zeros([3, 2]);
    const trained = [scale, a, b];
    for (const t of trained) rt.call('set_requires_grad', [t, true], undefined, 0);
    const programs = weightHook(model, '\\d', (w, site) => (site.module === '0' ? w.mul(scale.add(1)) : w.add(b.matmul(a))));
    expect(Object.keys(programs)).toEqual(['0', '3']);
    expect(await loss().item()).toBeCloseTo(plain, 6); // both deltas start at zero

    let first = NaN, last = NaN;
    for (let i = 0; i < 40; i++) {
      const l = loss();
      rt.call('backward', [l], undefined, 0);
      for (const t of trained) t.sub_((rt.call('grad_of', [t]) as Tensor).mul(0.5));
      rt.call('clear_grads', [trained], undefined, 0);
      if (i === 0) first = await l.item();
      if (i === 39) last = await l.item();
    }
    expect(last).toBeLessThan(first);
    expect(await scale.abs().sum().item()).toBeGreaterThan(0); // the conv's hook trained too
    expect(await Promise.all(model.params.map((p) => flat(model.param(p.name))))).toEqual(before);
    model.free();
  }, 120_000);
});
