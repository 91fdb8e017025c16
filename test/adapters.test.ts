// The adapters' mechanism (sdk/adapters.ts): a low-rank side path on a Linear and on a Conv2d
// through the `output` hook point, checked against the same sum computed here by hand; merge
// and unmerge; the ghost term; rank pattern and parameter count; save and load; the errors.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type PyObject, type PythonRuntime, type Runtime, startWithPython, type Tensor } from '../bridge/index.js';
import { AdapterSet, adapterSites, type LowRankFactors } from '../sdk/adapters.js';
import { Model } from '../sdk/model.js';
import type { ModelSpec } from '../sdk/model-spec.js';
import { weightHook } from '../sdk/weight-hooks.js';
import { settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
let dir: string;
beforeAll(async () => {
  rt = await startRuntime();
  dir = mkdtempSync(join(tmpdir(), 'liaison-adapters-'));
});
afterAll(async () => {
  await rt?.close();
  rmSync(dir, { recursive: true, force: true });
});

const MLP: ModelSpec = { kind: 'mlp', sizes: [5, 6, 3] };
const CNN: ModelSpec = { kind: 'cnn', image: [6, 6], channels: [4], hidden: 8, classes: 3 };

async function arr(t: Tensor): Promise<number[]> {
  return Array.from(await t.to('f32').toArray() as Float32Array);
}

function close(got: number[], want: number[], tol = 1e-5): void {
  expect(got.length).toBe(want.length);
  const scale = Math.max(1, ...want.map(Math.abs));
  const worst = Math.max(...got.map((g, i) => Math.abs(g - want[i])));
  expect(worst).toBeLessThanOrEqual(tol * scale);
}

/** The named module's output in an eval forward. */
async function layerOut(model: Model, name: string, x: Tensor): Promise<number[]> {
  model.capture([name]);
  model.forward(x, { train: false }).free();
  const out = await arr(model.activation(name));
  model.capture([]);
  return out;
}

describe('AdapterSet on a Linear', () => {
  it('adds scale·B·diag(gate)·A x to the output, merges, unmerges and round-trips a checkpoint', async () => {
    const model = await Model.build(rt, MLP, { seed: 0 });
    const [site] = adapterSites(model, 'layers\\.0');
    expect(site).toEqual({ module: 'layers.0', kind: 'linear', in: 5, out: 6, kernel: [], stride: [], padding: [], dilation: [] });
    const x = rt.randn([4, 5], { seed: 1 });
    const A = rt.randn([3, 5], { seed: 2 }), B = rt.randn([6, 3], { seed: 3 });
    const gate = rt.tensor(new Float32Array([1, 0, 0.5]), [3]);
    const base = await layerOut(model, 'layers.0', x);
    const set = new AdapterSet(model, { 'layers.0': { A, B, gate, scale: 2 } });
    set.install();
    const got = await layerOut(model, 'layers.0', x);
    const [xs, as, bs, gs] = await Promise.all([arr(x), arr(A), arr(B), arr(gate)]);
    const want = base.map((v, i) => {
      const n = Math.floor(i / 6), o = i % 6;
      let side = 0;
      for (let k = 0; k < 3; k++) {
        let h = 0;
        for (let j = 0; j < 5; j++) h += as[k * 5 + j] * xs[n * 5 + j];
        side += gs[k] * bs[o * 3 + k] * h;
      }
      return v + 2 * side;
    });
    close(got, want);
    expect(await set.rankPattern()).toEqual({ 'layers.0': 2 });
    expect(await set.parameterCount()).toBe(2 * (5 + 6));

    const logits = await arr(model.forward(x, { train: false }));
    const w0 = await arr(model.param('layers.0.weight'));
    await set.merge();
    await set.merge(); // idempotent
    expect(set.merged).toBe(true);
    close(await arr(model.forward(x, { train: false })), logits);
    expect(() => set.install()).toThrow(/merged into the weights/);
    expect(() => set.remove()).toThrow(/unmerge\(\) first/);
    await expect(set.save(join(dir, 'merged.safetensors'))).rejects.toThrow(/merged/);
    await set.unmerge();
    const w1 = await arr(model.param('layers.0.weight'));
    const norm = Math.hypot(...w0);
    expect(Math.hypot(...w1.map((v, i) => v - w0[i])) / norm).toBeLessThanOrEqual(1e-6);
    close(await arr(model.forward(x, { train: false })), logits); // the side path is back on

    const path = join(dir, 'mlp.safetensors');
    await set.save(path);
    const other = await Model.build(rt, MLP, { seed: 7 }); // other weights: load brings the saved ones
    const loaded = await AdapterSet.load(other, path);
    expect(await loaded.rankPattern()).toEqual({ 'layers.0': 2 }); // compacted to the active components
    close(await arr(other.forward(x, { train: false })), logits);
    loaded.remove();
    set.remove();
    close(await arr(other.forward(x, { train: false })), await arr(model.forward(x, { train: false })));
    loaded.free();
    set.free();
    model.free();
    other.free();
  });

  it('a ghost component adds nothing to the output but gets the gradient it would get in the sum', async () => {
    const model = await Model.build(rt, MLP, { seed: 0 });
    const x = rt.randn([4, 5], { seed: 1 });
    const c = rt.randn([4, 3], { seed: 4 }); // a loss linear in the output: its gradient does not depend on it
    const grads = async (gate: number[], ghost?: number[]): Promise<{ out: number[]; a: number[]; b: number[] }> => {
      const A = rt.randn([2, 6], { seed: 2 }), B = rt.randn([3, 2], { seed: 3 });
      for (const t of [A, B]) rt.call('set_requires_grad', [t, true], undefined, 0);
      const set = new AdapterSet(model, { 'layers.1': { A, B, gate: rt.tensor(new Float32Array(gate), [2]), ghost: ghost && rt.tensor(new Float32Array(ghost), [2]), scale: 0.5 } });
      set.install();
      const out = model.forward(x);
      rt.call('backward', [out.mul(c).sum()], undefined, 0);
      const r = { out: await arr(out), a: await arr(rt.call('grad_of', [A]) as Tensor), b: await arr(rt.call('grad_of', [B]) as Tensor) };
      set.free();
      return r;
    };
    const alone = await grads([1, 0]);
    const ghosted = await grads([1, 0], [0, 1]);
    const both = await grads([1, 1]);
    close(ghosted.out, alone.out);
    close(ghosted.a, both.a);
    close(ghosted.b, both.b);
    expect(Math.max(...alone.b.slice(0).filter((_, i) => i % 2 === 1).map(Math.abs))).toBe(0); // without the ghost: none
    model.free();
  });

  it("a ghost's gradient reaches its own A and B only: an adapter upstream gets the gradient of the forward as computed", async () => {
    const model = await Model.build(rt, MLP, { seed: 0 });
    const x = rt.randn([4, 5], { seed: 1 });
    const upstream = async (ghost?: number[]): Promise<{ out: number[]; a: number[]; b: number[] }> => {
      const A0 = rt.randn([2, 5], { seed: 5 }), B0 = rt.randn([6, 2], { seed: 6 });
      const A1 = rt.randn([2, 6], { seed: 2 }), B1 = rt.randn([3, 2], { seed: 3 });
      for (const t of [A0, B0, A1, B1]) rt.call('set_requires_grad', [t, true], undefined, 0);
      const set = new AdapterSet(model, {
        'layers.0': { A: A0, B: B0, gate: rt.ones([2]), scale: 1 },
        'layers.1': { A: A1, B: B1, gate: rt.tensor(new Float32Array([1, 0]), [2]), ghost: ghost && rt.tensor(new Float32Array(ghost), [2]), scale: 0.5 },
      });
      set.install();
      const out = model.forward(x);
      rt.call('backward', [out.square().sum()], undefined, 0);
      const r = { out: await arr(out), a: await arr(rt.call('grad_of', [A0]) as Tensor), b: await arr(rt.call('grad_of', [B0]) as Tensor) };
      set.free();
      return r;
    };
    const plain = await upstream();
    const ghosted = await upstream([0, 1]);
    expect(ghosted.out).toEqual(plain.out); // t − sg(t) is exactly zero
    close(ghosted.a, plain.a, 1e-6);
    close(ghosted.b, plain.b, 1e-6);
    model.free();
  });
});

describe('AdapterSet merge with trainable factors', () => {
  it('writes ΔW without autograd: the merged model trains step after step, and no gradient reaches the factors', async () => {
    const model = await Model.build(rt, MLP, { seed: 0 });
    rt.call('set_requires_grad', [model.param('layers.0.weight'), false], undefined, 0); // frozen under the adapter
    const A = rt.randn([2, 5], { seed: 2 }), B = rt.randn([6, 2], { seed: 3 });
    for (const t of [A, B]) rt.call('set_requires_grad', [t, true], undefined, 0);
    const set = new AdapterSet(model, { 'layers.0': { A, B, gate: rt.ones([2]), scale: 1 } });
    set.install();
    await set.merge();
    const x = rt.randn([4, 5], { seed: 1 });
    for (let i = 0; i < 2; i++) rt.call('backward', [model.forward(x).square().sum()], undefined, 0); // a ΔW in a graph fails the second
    await rt.flush();
    expect((await arr(rt.call('grad_of', [A]) as Tensor)).every((v) => v === 0)).toBe(true); // merged: A is in no graph
    await set.unmerge();
    set.free();
    model.free();
  });
});

describe('AdapterSet on a Conv2d', () => {
  it("adds a conv side path of the module's geometry and merges it exactly", async () => {
    const model = await Model.build(rt, CNN, { seed: 0 });
    const [site] = adapterSites(model, ['convs.0']);
    expect(site).toMatchObject({ kind: 'conv2d', in: 1, out: 4, kernel: [3, 3], stride: [1, 1], padding: [1, 1], dilation: [1, 1] });
    const x = rt.randn([2, 1, 6, 6], { seed: 1 });
    const A = rt.randn([2, 1, 3, 3], { seed: 2 }), B = rt.randn([4, 2, 1, 1], { seed: 3 });
    const gate = rt.tensor(new Float32Array([0.5, 1]), [2]);
    const base = await layerOut(model, 'convs.0', x);
    const set = new AdapterSet(model, { 'convs.0': { A, B, gate, scale: 1.5 } });
    set.install();
    const got = await layerOut(model, 'convs.0', x);
    const [xs, as, bs, gs] = await Promise.all([arr(x), arr(A), arr(B), arr(gate)]);
    const px = (n: number, r: number, c: number) => (r < 0 || r >= 6 || c < 0 || c >= 6 ? 0 : xs[n * 36 + r * 6 + c]);
    const want = base.map((v, i) => {
      const n = Math.floor(i / 144), o = Math.floor(i / 36) % 4, r = Math.floor(i / 6) % 6, c = i % 6;
      let side = 0;
      for (let k = 0; k < 2; k++) {
        let h = 0;
        for (let dr = 0; dr < 3; dr++) for (let dc = 0; dc < 3; dc++) h += as[k * 9 + dr * 3 + dc] * px(n, r + dr - 1, c + dc - 1);
        side += gs[k] * bs[o * 2 + k] * h;
      }
      return v + 1.5 * side;
    });
    close(got, want);
    expect(await set.parameterCount()).toBe(2 * (9 + 4));
    const logits = await arr(model.forward(x, { train: false }));
    const w0 = await arr(model.param('convs.0.weight'));
    await set.merge();
    close(await arr(model.forward(x, { train: false })), logits);
    await set.unmerge();
    const w1 = await arr(model.param('convs.0.weight'));
    expect(Math.hypot(...w1.map((v, i) => v - w0[i])) / Math.hypot(...w0)).toBeLessThanOrEqual(1e-6);
    close(await arr(model.forward(x, { train: false })), logits);
    set.free();
    model.free();
  });
});

describe('AdapterSet ownership and state', () => {
  const f = (seed: number): LowRankFactors => ({ A: rt.randn([2, 5], { seed }), B: rt.randn([6, 2], { seed: seed + 1 }), gate: rt.ones([2]), scale: 1 });

  it('a second set on the same module is refused, and a set takes off only its own hooks', async () => {
    const model = await Model.build(rt, MLP, { seed: 0 });
    const x = rt.randn([4, 5], { seed: 1 });
    const base = await arr(model.forward(x, { train: false }));
    const s1 = new AdapterSet(model, { 'layers.0': f(2) });
    const s2 = new AdapterSet(model, { 'layers.0': f(4) });
    s1.install();
    const one = await arr(model.forward(x, { train: false }));
    expect(() => s2.install()).toThrow(/'layers\.0' already has an output hook/);
    const path = join(dir, 'owned.safetensors');
    await s1.save(path);
    await expect(AdapterSet.load(model, path)).rejects.toThrow(/already has an output hook/);
    close(await arr(model.forward(x, { train: false })), one); // s1 still computes
    s1.remove();
    s2.install();
    const two = await arr(model.forward(x, { train: false }));
    s1.free(); // s1 is off: s2's hook stays
    close(await arr(model.forward(x, { train: false })), two);
    expect(s2.installed).toBe(true);
    s2.free();
    close(await arr(model.forward(x, { train: false })), base);
    model.free();
  });

  it('merge refuses a module with a weight hook; unmerge restores the state merge found (not installed stays so)', async () => {
    const model = await Model.build(rt, MLP, { seed: 0 });
    const x = rt.randn([4, 5], { seed: 1 });
    const set = new AdapterSet(model, { 'layers.0': f(2) });
    set.install();
    const hooks = weightHook(model, ['layers.0'], (w) => w.mul(0.5));
    await expect(set.merge()).rejects.toThrow(/'layers\.0' has a weight hook/);
    expect(set.merged).toBe(false);
    model.setWeightHook(['layers.0'], null);
    for (const p of Object.values(hooks)) p.free();
    set.remove();
    const base = await arr(model.forward(x, { train: false }));
    await set.merge(); // never installed here: the weights change, unmerge puts them back and nothing else
    await set.unmerge();
    expect(set.installed).toBe(false);
    close(await arr(model.forward(x, { train: false })), base);
    set.free();
    model.free();
  });

  it('a non-finite gate is refused at export, naming the module and component; the reads leak nothing', async () => {
    const model = await Model.build(rt, MLP, { seed: 0 });
    const set = new AdapterSet(model, { 'layers.0': { ...f(2), gate: rt.tensor(new Float32Array([1, Number.NaN]), [2]) } });
    const before = await settledObjects(rt);
    await expect(set.rankPattern()).rejects.toThrow(/module 'layers\.0': gate\[1\] is NaN/);
    await expect(set.exportPeft(join(dir, 'nan'))).rejects.toThrow(/gate\[1\] is NaN/);
    expect(await settledObjects(rt)).toBe(before);
    set.free();
    model.free();
  });
});

describe('AdapterSet errors', () => {
  it('name the module and the field', async () => {
    const model = await Model.build(rt, MLP, { seed: 0 });
    const f = () => ({ A: rt.zeros([2, 5]), B: rt.zeros([6, 2]), gate: rt.ones([2]), scale: 1 });
    expect(() => adapterSites(model, 'blocks\\..*')).toThrow(/matches no module; the mlp model's nn.Linear \/ nn.Conv\*d modules are layers\.0, layers\.1/);
    expect(() => adapterSites(model, '(')).toThrow(LiaisonError);
    expect(() => new AdapterSet(model, { head: f() })).toThrow(/'head' is not a module an adapter can sit on/);
    expect(() => new AdapterSet(model, { 'layers.0': { ...f(), A: rt.zeros([2, 6]) } })).toThrow(/module 'layers\.0': A has shape \[2,6\]; the linear site \(in 5, out 6\) with r = 2 needs \[2,5\]/);
    expect(() => new AdapterSet(model, { 'layers.0': { ...f(), B: rt.zeros([6, 3]) } })).toThrow(/module 'layers\.0': B has shape/);
    expect(() => new AdapterSet(model, { 'layers.0': { ...f(), gate: rt.ones([3]) } })).toThrow(/module 'layers\.0': gate has shape/);
    expect(() => new AdapterSet(model, { 'layers.0': { ...f(), scale: Number.NaN } })).toThrow(/module 'layers\.0': scale must be a finite number/);
    expect(() => new AdapterSet(model, {})).toThrow(/at least one module/);
    model.free();
  });
});

describe('AdapterSet on an adopted nn.Module', () => {
  let py: PythonRuntime;
  let nn: PyObject;
  let torch: PyObject;
  beforeAll(async () => {
    py = await startWithPython({ device: 'cpu' });
    torch = await py.python.import('torch');
    await torch.manual_seed(0);
    nn = await torch.nn;
  });
  afterAll(async () => {
    await py?.close();
  });

  it('puts side paths on its Conv2d and Linear, and merging gives the same function', async () => {
    const net = await nn.Sequential(await nn.Conv2d$(1, 4, 3, { stride: 2, padding: 1 }), await nn.ReLU(), await nn.Flatten(), await nn.Linear(64, 3));
    const model = await Model.fromHandle(py, await py.adopt(net));
    expect(model.hookModules.output).toEqual(['0', '3']);
    const sites = adapterSites(model, '\\d');
    expect(sites[0]).toMatchObject({ kind: 'conv2d', in: 1, out: 4, kernel: [3, 3], stride: [2, 2], padding: [1, 1] });
    const set = new AdapterSet(model, {
      0: { A: py.randn([2, 1, 3, 3], { seed: 1 }), B: py.randn([4, 2, 1, 1], { seed: 2 }), gate: py.ones([2]), scale: 0.5 },
      3: { A: py.randn([2, 64], { seed: 3 }), B: py.randn([3, 2], { seed: 4 }), gate: py.ones([2]), scale: 0.5 },
    });
    const x = py.randn([2, 1, 8, 8], { seed: 5 });
    const plain = await arr(model.forward(x, { train: false }));
    set.install();
    const adapted = await arr(model.forward(x, { train: false }));
    expect(Math.max(...adapted.map((v, i) => Math.abs(v - plain[i])))).toBeGreaterThan(1e-3);
    await set.merge();
    close(await arr(model.forward(x, { train: false })), adapted);
    await set.unmerge();
    set.remove();
    close(await arr(model.forward(x, { train: false })), plain);
    set.free();
    model.free();
  }, 60_000);

  it('a strided Conv1d and a Conv3d: side paths of their geometry, merged to the same function, unmerged back to the weights', async () => {
    const cases: [PyObject, number[], number[], number[]][] = [
      [await nn.Conv1d$(2, 3, 3, { stride: 2, padding: 1 }), [2, 2, 3], [3, 2, 1], [2, 2, 7]],
      [await nn.Conv3d$(1, 2, [1, 3, 3], { padding: [0, 1, 1] }), [2, 1, 1, 3, 3], [2, 2, 1, 1, 1], [1, 1, 2, 4, 4]],
    ];
    for (const [conv, a, b, xs] of cases) {
      const model = await Model.fromHandle(py, await py.adopt(conv));
      const set = new AdapterSet(model, { '': { A: py.randn(a, { seed: 1 }), B: py.randn(b, { seed: 2 }), gate: py.ones([2]), scale: 0.5 } });
      const x = py.randn(xs, { seed: 3 });
      const plain = await arr(model.forward(x, { train: false }));
      const w0 = await arr(model.param('weight'));
      set.install();
      const adapted = await arr(model.forward(x, { train: false }));
      expect(Math.max(...adapted.map((v, i) => Math.abs(v - plain[i])))).toBeGreaterThan(1e-3);
      await set.merge();
      close(await arr(model.forward(x, { train: false })), adapted);
      await set.unmerge();
      const w1 = await arr(model.param('weight'));
      expect(Math.hypot(...w1.map((v, i) => v - w0[i])) / Math.hypot(...w0)).toBeLessThanOrEqual(1e-6);
      set.free();
      close(await arr(model.forward(x, { train: false })), plain);
      model.free();
    }
  }, 60_000);

  it('works on a bf16 module with f32 factors and gate: the side path in bf16, merge and unmerge in place', async () => {
    const lin = await (await nn.Linear(4, 3)).to(await torch.bfloat16);
    const model = await Model.fromHandle(py, await py.adopt(lin));
    const A = py.randn([2, 4], { seed: 1 }), B = py.randn([3, 2], { seed: 2 });
    const set = new AdapterSet(model, { '': { A, B, gate: py.tensor(new Float32Array([1, 0.5]), [2]), scale: 2 } });
    const x = py.randn([5, 4], { seed: 3 }).to('bf16');
    const base = await arr(model.forward(x, { train: false }));
    set.install();
    const got = await arr(model.forward(x, { train: false }));
    const [xs, as, bs] = await Promise.all([arr(x), arr(A), arr(B)]);
    const want = base.map((v, i) => {
      const n = Math.floor(i / 3), o = i % 3;
      let side = 0;
      for (let k = 0; k < 2; k++) {
        let h = 0;
        for (let j = 0; j < 4; j++) h += as[k * 4 + j] * xs[n * 4 + j];
        side += [1, 0.5][k] * bs[o * 2 + k] * h;
      }
      return v + 2 * side;
    });
    close(got, want, 3e-2); // bf16: 8 bits of mantissa
    await set.merge();
    close(await arr(model.forward(x, { train: false })), got, 3e-2);
    await set.unmerge();
    set.free();
    model.free();
  }, 60_000);

  it('exports nested names PEFT would confuse anchored, and refuses what PEFT cannot compute', async () => {
    // '0' ends '1.0': PEFT reads pattern keys as (.*\.)?(key)$, so '0' must be written ^0$
    const net = await nn.Sequential(await nn.Linear(4, 4), await nn.Sequential(await nn.Linear(4, 4), await nn.Linear(4, 2)));
    const model = await Model.fromHandle(py, await py.adopt(net));
    const f = (i: number, o: number, r: number, s: number): LowRankFactors => ({ A: py.randn([r, i], { seed: s }), B: py.randn([o, r], { seed: s + 1 }), gate: py.ones([r]), scale: s });
    const set = new AdapterSet(model, { 0: f(4, 4, 2, 1), '1.0': f(4, 4, 3, 3) });
    set.install();
    const x = py.randn([3, 4], { seed: 9 });
    const want = await arr(model.forward(x, { train: false }));
    const { tensors, config } = await set.peftTensors();
    for (const t of Object.values(tensors)) t.free();
    expect(config.rank_pattern).toEqual({ '^0$': 2, '1.0': 3 });
    expect(config.alpha_pattern).toEqual({ '^0$': 2, '1.0': 9 });
    await set.exportPeft(join(dir, 'nested'));
    set.free();
    const back = await AdapterSet.importPeft(model, join(dir, 'nested'));
    close(await arr(model.forward(x, { train: false })), want);
    back.free();
    model.free();

    const dilated = await Model.fromHandle(py, await py.adopt(await nn.Conv2d$(1, 2, 3, { dilation: 2 })));
    const d = new AdapterSet(dilated, { '': { A: py.randn([1, 1, 3, 3]), B: py.randn([2, 1, 1, 1]), gate: py.ones([1]), scale: 1 } });
    await expect(d.peftTensors()).rejects.toThrow(/dilated convolution .*PEFT's LoRA convolution ignores dilation/);
    d.free();
    dilated.free();
  }, 60_000);
});
