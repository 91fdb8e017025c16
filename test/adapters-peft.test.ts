// Adapters exchanged with Hugging Face PEFT, both ways, for an MLP (Linear) and a CNN (Conv2d
// + Linear): AdapterSet.exportPeft → PeftModel.from_pretrained on the same base nn.Module
// (rebuilt in plain PyTorch from the spec, base weights from a safetensors file) gives our
// outputs; PEFT's get_peft_model + save_pretrained → AdapterSet.importPeft gives PEFT's. The
// Python half is test/peft_interop.py; skipped, saying why, only when peft cannot be imported.
import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Runtime, startWithPython, type Tensor, type TensorData } from '../bridge/index.js';
import { resolvePython, runtimeEnv } from '../bridge/launcher.js';
import { AdapterSet, type LowRankFactors } from '../sdk/adapters.js';
import { Model } from '../sdk/model.js';
import { type ModelSpec, runtimeSpec } from '../sdk/model-spec.js';
import { readSafetensors, writeSafetensors } from '../sdk/safetensors.js';
import { settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
let work: string;
beforeAll(async () => {
  rt = await startRuntime();
  work = mkdtempSync(join(tmpdir(), 'liaison-peft-'));
});
afterAll(async () => {
  await rt?.close();
  rmSync(work, { recursive: true, force: true });
});

interface Case {
  spec: ModelSpec;
  x: number[]; // the input's shape
  /** Our adapters: module -> [r, gate, scale]. */
  ours: Record<string, [number, number[], number]>;
  /** What PEFT makes for the import: targets, r, alpha and the per-module patterns. */
  peft: { targets: string[]; r: number; alpha: number; rank_pattern: Record<string, number>; alpha_pattern: Record<string, number> };
}

const CASES: Record<string, Case> = {
  mlp: {
    spec: { kind: 'mlp', sizes: [6, 10, 10, 4] }, x: [5, 6],
    ours: { 'layers.0': [3, [1, 0, 0.7], 2], 'layers.1': [2, [1, -1.5], 0.25] },
    peft: { targets: ['layers.0', 'layers.2'], r: 2, alpha: 4, rank_pattern: { 'layers.2': 3 }, alpha_pattern: { 'layers.2': 1.5 } },
  },
  cnn: {
    spec: { kind: 'cnn', image: [6, 6], channels: [3, 4], hidden: 8, classes: 3 }, x: [2, 1, 6, 6],
    ours: { 'convs.0': [2, [1, 0.5], 1], 'convs.1': [3, [1, 0, 1], 0.5], fc: [2, [0.3, 1], 2] },
    peft: { targets: ['convs.1', 'fc'], r: 2, alpha: 2, rank_pattern: { fc: 4 }, alpha_pattern: { 'convs.1': 3 } },
  },
};

async function values(t: Tensor): Promise<number[]> {
  return Array.from(await t.toArray() as Float32Array);
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
  return worst;
}

describe('PEFT interop', () => {
  it('PEFT loads our exports and we load its saves: the same outputs both ways (MLP, CNN)', async (ctx) => {
    const ours: Record<string, { y: number[]; set: AdapterSet; model: Model; factors: Record<string, LowRankFactors> }> = {};
    let seed = 10;
    for (const [name, c] of Object.entries(CASES)) {
      const dir = join(work, name);
      mkdirSync(dir);
      const model = await Model.build(rt, c.spec, { seed: 0 });
      await model.save(join(dir, 'base.safetensors'));
      const x = rt.randn(c.x, { seed: 1 });
      await writeSafetensors(join(dir, 'x.safetensors'), { x: await x.data() });
      writeFileSync(join(dir, 'spec.json'), JSON.stringify({ model: runtimeSpec(c.spec, 0), peft: c.peft }));
      const factors: Record<string, LowRankFactors> = {};
      for (const [m, [r, gate, scale]] of Object.entries(c.ours)) {
        const g = model.moduleGeometry[m];
        factors[m] = {
          A: rt.randn([r, g.in, ...g.kernel], { seed: seed++ }).mul(0.3),
          B: rt.randn([g.out, r, ...g.kernel.map(() => 1)], { seed: seed++ }).mul(0.3),
          gate: rt.tensor(new Float32Array(gate), [r]),
          scale,
        };
      }
      const set = new AdapterSet(model, factors);
      set.install();
      const y = await values(model.forward(x, { train: false }));
      await set.exportPeft(join(dir, 'export'), { baseModel: `liaison-${name}` });
      // what the file holds is what rankPattern and parameterCount say
      const config = JSON.parse(readFileSync(join(dir, 'export', 'adapter_config.json'), 'utf8'));
      const file = await readSafetensors(join(dir, 'export', 'adapter_model.safetensors'));
      expect(config.rank_pattern).toEqual(await set.rankPattern());
      expect(Object.values(file.tensors).reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0)).toBe(await set.parameterCount());
      expect(config.base_model_name_or_path).toBe(`liaison-${name}`);
      ours[name] = { y, set, model, factors };
    }

    // nested names PEFT's suffix matching confuses ('0' ends '1.0'), on an adopted module:
    // anchored pattern keys, and a target_modules regex that wraps nothing we did not export
    const py = await startWithPython({ device: 'cpu' });
    const nested: Record<string, { y: number[]; modules: string[] }> = {};
    try {
      const nn = await (await py.python.import('torch')).nn;
      const variants: Record<string, Record<string, [number, number]>> = { 'nested-both': { 0: [2, 1], '1.0': [3, 3] }, 'nested-one': { 0: [2, 2] } };
      for (const [name, adapters] of Object.entries(variants)) {
        const dir = join(work, name);
        mkdirSync(dir);
        const net = await nn.Sequential(await nn.Linear(4, 4), await nn.Sequential(await nn.Linear(4, 4), await nn.Linear(4, 2)));
        const model = await Model.fromHandle(py, await py.adopt(net));
        await model.save(join(dir, 'base.safetensors'));
        const x = py.randn([3, 4], { seed: 1 });
        await writeSafetensors(join(dir, 'x.safetensors'), { x: await x.data() });
        writeFileSync(join(dir, 'spec.json'), JSON.stringify({ module: 'nested', peft: null }));
        const set = new AdapterSet(model, Object.fromEntries(Object.entries(adapters).map(([m, [r, scale]]) => {
          const g = model.moduleGeometry[m];
          return [m, { A: py.randn([r, g.in], { seed: seed++ }), B: py.randn([g.out, r], { seed: seed++ }), gate: py.ones([r]), scale }];
        })));
        set.install();
        nested[name] = { y: await values(model.forward(x, { train: false })), modules: Object.keys(adapters) };
        await set.exportPeft(join(dir, 'export'));
        set.free();
        model.free();
      }
    } finally {
      await py.close();
    }

    const { stdout } = await promisify(execFile)(resolvePython(), [join(import.meta.dirname, 'peft_interop.py'), work], { env: runtimeEnv({ OMP_NUM_THREADS: '1' }), encoding: 'utf8', timeout: 120_000 });
    const reply = JSON.parse(stdout.trim().split('\n').at(-1)!) as { skip?: string; cases?: string[] };
    if (reply.skip) {
      ctx.skip(reply.skip);
      return;
    }
    expect(reply.cases).toEqual([...Object.keys(CASES), ...Object.keys(nested)].sort());
    for (const [name, { y, modules }] of Object.entries(nested)) {
      const dir = join(work, name);
      expect(maxDiff((await readSafetensors(join(dir, 'out_export.safetensors'))).tensors.y.data as Float32Array, y)).toBeLessThanOrEqual(1e-5);
      expect(JSON.parse(readFileSync(join(dir, 'wrapped.json'), 'utf8'))).toEqual(modules);
    }

    for (const [name, c] of Object.entries(CASES)) {
      const dir = join(work, name);
      const { y, set, model } = ours[name];
      const peftOut = (await readSafetensors(join(dir, 'out_export.safetensors'))).tensors.y;
      expect(maxDiff(peftOut.data as Float32Array, y)).toBeLessThanOrEqual(1e-5);

      // the reverse: PEFT's save on our model (the same base weights), read back
      set.free();
      const imported = await AdapterSet.importPeft(model, join(dir, 'import'));
      expect(Object.keys(imported.sites)).toEqual(c.peft.targets);
      const x = rt.randn(c.x, { seed: 1 });
      const got = await values(model.forward(x, { train: false }));
      const want = (await readSafetensors(join(dir, 'out_import.safetensors'))).tensors.y;
      expect(maxDiff(want.data as Float32Array, got)).toBeLessThanOrEqual(1e-5);
      const ranks = Object.fromEntries(c.peft.targets.map((m) => [m, c.peft.rank_pattern[m] ?? c.peft.r]));
      expect(await imported.rankPattern()).toEqual(ranks);
      imported.free();
      model.free();
    }
  }, 180_000);
});

describe('PEFT files are checked before anything is uploaded or changed', () => {
  const SPEC: ModelSpec = { kind: 'mlp', sizes: [5, 6, 3] };
  const A = 'base_model.model.layers.0.lora_A.weight', B = 'base_model.model.layers.0.lora_B.weight';
  const CONFIG = { peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['layers.0'], bias: 'none', modules_to_save: null };
  const ramp = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * k) * 0.5);
  const good = (): Record<string, TensorData> => ({ [A]: { dtype: 'f32', shape: [2, 5], data: ramp(10, 1) }, [B]: { dtype: 'f32', shape: [6, 2], data: ramp(12, 2) } });
  let n = 0;
  async function folder(config: unknown, tensors: Record<string, TensorData>): Promise<string> {
    const dir = join(work, `bad-${n++}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify(config));
    await writeSafetensors(join(dir, 'adapter_model.safetensors'), tensors);
    return dir;
  }

  it('refuses, naming what is wrong, files PEFT would read differently or not at all; nothing leaks', async () => {
    const model = await Model.build(rt, SPEC, { seed: 0 });
    const before = await settledObjects(rt);
    const nan = good();
    (nan[A].data as Float32Array)[3] = Number.NaN;
    const flat = good();
    flat[A] = { dtype: 'f32', shape: [10], data: ramp(10, 1) };
    const cases: [unknown, Record<string, TensorData>, RegExp][] = [
      [null, good(), /must be a JSON object, got null/],
      [[1], good(), /must be a JSON object, got an array/],
      [{ ...CONFIG, modules_to_save: ['layers.1'] }, good(), /sets modules_to_save/],
      [{ ...CONFIG, bias: 'lora_only' }, good(), /sets bias/],
      [{ ...CONFIG, use_dora: true }, good(), /sets use_dora/],
      [{ ...CONFIG, layers_to_transform: [0] }, good(), /sets layers_to_transform/],
      [CONFIG, { ...good(), 'base_model.model.layers.1.modules_to_save.default.weight': { dtype: 'f32', shape: [3, 6], data: ramp(18, 3) } }, /not LoRA factors .*layers\.1\.modules_to_save/],
      [CONFIG, { ...good(), 'base_model.model.layers.0.lora_magnitude_vector': { dtype: 'f32', shape: [6], data: ramp(6, 3) } }, /not LoRA factors/],
      [{ ...CONFIG, rank_pattern: { 'layers.0': 7 } }, good(), /module 'layers\.0' has r = 2 in its tensors but 7 in the config/],
      [{ ...CONFIG, lora_alpha: 'abc' }, good(), /lora_alpha must be a finite number > 0, got "abc"/],
      [{ ...CONFIG, alpha_pattern: { 'layers.0': '2' } }, good(), /alpha_pattern\['layers\.0'\] must be a finite number/],
      [CONFIG, flat, /lora_A of the linear module 'layers\.0' must be \(r, in\), 2 dims/],
      [CONFIG, nan, /lora_A\.weight holds NaN at flat index 3/],
      // layers.0 is whole: before, it was uploaded (and leaked) before layers.1's lora_B was missed
      [CONFIG, { ...good(), 'base_model.model.layers.1.lora_A.weight': { dtype: 'f32', shape: [2, 6], data: ramp(12, 1) } }, /lora_A but no lora_B for module 'layers\.1'/],
    ];
    for (const [config, tensors, message] of cases) await expect(AdapterSet.importPeft(model, await folder(config, tensors))).rejects.toThrow(message);
    expect(await settledObjects(rt)).toBe(before);
    model.free();
  });

  it('a bf16 file on an f32 model: uploaded in the weight dtype, the same outputs as its values in f32', async () => {
    const model = await Model.build(rt, SPEC, { seed: 0 });
    const t = good();
    const dir = await folder(CONFIG, { [A]: { ...t[A], dtype: 'bf16' }, [B]: { ...t[B], dtype: 'bf16' } });
    const back = (await readSafetensors(join(dir, 'adapter_model.safetensors'))).tensors; // the bf16-rounded values, exactly
    const x = rt.randn([4, 5], { seed: 1 });
    const set = await AdapterSet.importPeft(model, dir);
    const got = await values(model.forward(x, { train: false }));
    set.free();
    const f32 = new AdapterSet(model, { 'layers.0': { A: rt.tensor(back[A].data as Float32Array, [2, 5]), B: rt.tensor(back[B].data as Float32Array, [6, 2]), gate: rt.ones([2]), scale: 2 } });
    f32.install();
    expect(maxDiff(got, await values(model.forward(x, { train: false })))).toBeLessThanOrEqual(1e-6);
    f32.free();
    model.free();
  });

  it('an export whose config was replaced after it (a torn pair) is refused; a failed load leaves the weights as they were', async () => {
    const model = await Model.build(rt, SPEC, { seed: 0 });
    const set = new AdapterSet(model, { 'layers.0': { A: rt.randn([2, 5], { seed: 1 }), B: rt.randn([6, 2], { seed: 2 }), gate: rt.ones([2]), scale: 1 } });
    const dir = join(work, 'torn');
    await set.exportPeft(dir);
    const cpath = join(dir, 'adapter_config.json');
    const config = JSON.parse(readFileSync(cpath, 'utf8'));
    writeFileSync(cpath, `${JSON.stringify({ ...config, lora_alpha: 7, alpha_pattern: {} }, null, 2)}\n`);
    await expect(AdapterSet.importPeft(model, dir)).rejects.toThrow(/is not the config adapter_model\.safetensors was exported with/);

    const path = join(work, 'ckpt.safetensors');
    await set.save(path);
    const file = await readSafetensors(path);
    file.tensors[A] = { dtype: 'f32', shape: [2, 4], data: ramp(8, 1) }; // a lora_A that does not fit layers.0
    await writeSafetensors(path, file.tensors, file.metadata);
    const other = await Model.build(rt, SPEC, { seed: 7 });
    const w = await values(other.param('layers.0.weight'));
    await expect(AdapterSet.load(other, path)).rejects.toThrow(/has shape \[2,4\]; module 'layers\.0'/);
    expect(await values(other.param('layers.0.weight'))).toEqual(w);
    set.free();
    other.free();
    model.free();
  });
});
