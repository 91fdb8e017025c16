// The adapter base (sdk/families/adapters/base.ts) and the family's conformance suite: the suite
// fails adapters that break the contract; the base's factors, scale, head exclusion, merge
// guard, and, on adopted nn.Modules, its kept buffers and a root module's targets
// (test/adapters-family.test.ts has AdaLoRA's allocation; test/conformance.test.ts runs the
// suite over every registered adapter plugin).
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PyObject, type PythonRuntime, type Runtime, startWithPython, type Tensor } from '../bridge/index.js';
import { Lora, LoraConfig, lora } from '../plugins/adapters/lora.js';
import { gd } from '../plugins/momentum/gd.js';
import type { AdapterSite } from '../sdk/adapters.js';
import { type ConformanceReport, runConformance } from '../sdk/conformance/index.js';
import { Dataset } from '../sdk/data.js';
import { namesModule } from '../sdk/families/adapters/base.js';
import { MomentumOptimizerBase } from '../sdk/families/momentum/base.js';
import type { TrainingHooks } from '../sdk/hooks.js';
import { Model } from '../sdk/model.js';
import { type PluginFactory, type PluginMeta, validateConfig } from '../sdk/plugin.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const list = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);

/** An unregistered factory of a broken subclass (the suite's resume case needs fresh instances). */
function factoryOf<C extends object>(name: string, base: PluginFactory, make: (c: C, m: PluginMeta) => unknown): PluginFactory {
  const m: PluginMeta = Object.freeze({ name, version: '0.0.1', family: 'adapter', schema: base.schema, description: 'a deliberately broken adapter' });
  const resolve = (c: Partial<C> = {}) => validateConfig(m, c) as C;
  const f = (c?: Partial<C>) => make(resolve(c), m);
  Object.defineProperty(f, 'name', { value: name, writable: true });
  return Object.assign(f, m, { resolve }) as unknown as PluginFactory;
}

/** Never freezes the model: training moves the base weights too. */
class Unfrozen extends Lora {
  override async attach(hooks: TrainingHooks): Promise<void> {
    await super.attach(new Proxy(hooks, { get: (h, k) => (k === 'freeze' ? () => [] : Reflect.get(h, k)) }));
  }
}

/** Never trains A: only B moves. */
class FrozenA extends Lora {
  protected override join(hooks: TrainingHooks): void {
    expect(hooks.freeze(this.sites.map((s) => `${s.module}.lora_A`))).toHaveLength(this.sites.length);
  }
}

/** Counts its gates into the parameters an export holds. */
class Overcounting extends Lora {
  override async parameterCount(): Promise<number> {
    return (await super.parameterCount()) + Object.values(this.set!.factors).reduce((n, f) => n + this.config.r, 0);
  }
}

/** Decays its gates every step and leaves them out of checkpoints: a resumed run starts them at one again. */
class Unsaved extends Lora {
  protected override gateOf(_site: AdapterSite, r: number, hooks: TrainingHooks): { gate: Tensor } {
    return { gate: this.hold(hooks.rt.ones([r])) };
  }
  protected override join(hooks: TrainingHooks): void {
    hooks.on('afterOptimizerStep', () => { for (const f of Object.values(this.set!.factors)) f.gate.mul_(0.9); });
  }
}

const failed = (r: ConformanceReport, name: RegExp) => r.results.filter((x) => name.test(x.name) && x.status === 'failed').map((x) => x.error!.message);

describe('the adapter suite fails adapters that break the contract', () => {
  it('one that leaves the base trainable: the frozen check and the bit-for-bit check fail, naming a weight', async () => {
    const f = factoryOf<LoraConfig>('unfrozen', lora, (c, m) => new Unfrozen(c, m));
    const report = await runConformance(f, { rt, only: ['attached: a fresh adapter leaves the outputs unchanged, the base frozen, the head left alone', 'training moves only the adapter: every model parameter and buffer bit for bit as it was, A and B trained'] });
    expect(report.failed).toBe(2);
    expect(failed(report, /^attached/)[0]).toMatch(/must all be frozen; trainable: convs\.0\.weight/);
    expect(failed(report, /^training moves/)[0]).toMatch(/'convs\.0\.weight' changed in training/);
  });

  it('one that never trains A (B alone moves): the training case fails, naming A', async () => {
    const f = factoryOf<LoraConfig>('frozen-a', lora, (c, m) => new FrozenA(c, m));
    const report = await runConformance(f, { rt, only: ['training moves only the adapter: every model parameter and buffer bit for bit as it was, A and B trained'] });
    expect(report.failed).toBe(1);
    expect(failed(report, /^training moves/)[0]).toMatch(/every module's A is as it started/);
  });

  it('one whose parameter count is not what its export holds', async () => {
    const f = factoryOf<LoraConfig>('overcounting', lora, (c, m) => new Overcounting(c, m));
    const report = await runConformance(f, { rt, only: ["PEFT tensors: a lora_A / lora_B pair per module with components, shaped by rankPattern(); parameterCount() is their size"] });
    expect(report.failed).toBe(1);
    expect(failed(report, /^PEFT/)[0]).toMatch(/parameterCount\(\) is \d+; the exported tensors hold \d+ entries/);
  });

  it('one whose evolving state is not checkpointed: the resumed run differs from the straight run', async () => {
    const f = factoryOf<LoraConfig>('unsaved', lora, (c, m) => new Unsaved(c, m));
    const report = await runConformance(f, { rt, only: ['resumed from a checkpoint mid-run: the same factors and outputs as a straight run'] });
    expect(report.failed).toBe(1);
    expect(failed(report, /^resumed/)[0]).toMatch(/(A|B|gate) of the resumed run against the straight run's/);
  });
});

/** Attaches its plugins and changes nothing: the factors as they start. */
class Still extends MomentumOptimizerBase<{ lr: number }> {
  static readonly meta: PluginMeta = Object.freeze({ name: 'still', version: '0.0.1', family: 'momentum-optimizer', schema: Type.Object({ lr: Type.Number({ default: 1, description: 'unused' }) }), description: 'no step' });
  update(): void {}
}

describe('the adapter base', () => {
  it('names the head only by an alternative equal to its name', () => {
    expect(namesModule('head', 'head')).toBe(true);
    expect(namesModule('layers\\.0|layers\\.2', 'layers.2')).toBe(true);
    expect(namesModule('^fc$|(head|x)', 'head')).toBe(false); // inside a group: a pattern, not the name
    expect(namesModule('.*', 'head')).toBe(false);
    expect(namesModule('layers\\.\\d+', 'layers.2')).toBe(false);
  });

  it("lora's factors: A within PEFT's Kaiming-uniform bound 1/√fan_in, B zeros, gate ones; scale alpha/r, alpha/√r with rslora, alpha defaulting to r (√r with rslora)", async () => {
    const data = await Dataset.builtin(rt, 'digits');
    const model = await Model.build(rt, { kind: 'cnn', image: [8, 8], channels: [4], hidden: 16, classes: 10 }, { seed: 0 });
    try {
      // rslora's alpha defaults to √r: scale 1, whatever r
      for (const [cfg, scale] of [[{ r: 4 }, 1], [{ r: 4, alpha: 8 }, 2], [{ r: 4, rslora: true }, 1], [{ r: 4, alpha: 4, rslora: true }, 2]] as const) {
        const adapter = lora(cfg);
        const trainer = new Trainer({ model, optimizer: new Still({ lr: 1 }, Still.meta), plugins: [adapter], epochs: 1, batchSize: 2048, progress: 'none' });
        try {
          await trainer.fit(data);
          const f = adapter.set!.factors;
          expect(Object.keys(f)).toEqual(['convs.0', 'fc']);
          for (const [m, fanIn] of [['convs.0', 9], ['fc', 64]] as const) {
            expect(f[m].scale, `${JSON.stringify(cfg)} ${m}`).toBeCloseTo(scale, 12);
            const a = await list(f[m].A);
            expect(Math.max(...a.map(Math.abs))).toBeLessThanOrEqual(1 / Math.sqrt(fanIn));
            expect(Math.max(...a.map(Math.abs))).toBeGreaterThan(0.5 / Math.sqrt(fanIn));
            expect((await list(f[m].B)).every((v) => v === 0)).toBe(true);
            expect(await list(f[m].gate)).toEqual([1, 1, 1, 1]);
          }
          expect(await adapter.rankPattern()).toEqual({ 'convs.0': 4, fc: 4 });
          expect(await adapter.parameterCount()).toBe(4 * (9 + 4) + 4 * (64 + 16));
        } finally { trainer.free(); adapter.free(); }
      }
    } finally { data.free(); model.free(); }
  });

  it('refuses targets that match only the head, and a fit or a checkpoint after a merge until unmerged', async () => {
    const data = await Dataset.builtin(rt, 'digits');
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 10] }, { seed: 0 });
    const alone = lora({ r: 2 });
    const t0 = new Trainer({ model, optimizer: gd({ lr: 0.1 }), plugins: [alone], epochs: 1, batchSize: 512, progress: 'none' });
    try {
      await expect(t0.fit(data)).rejects.toMatchObject({ code: 'E_ARG', param: 'targets', message: expect.stringMatching(/only the model's output layer 'layers\.0'/) });
    } finally { t0.free(); alone.free(); model.free(); }
    const mlp = await Model.build(rt, { kind: 'mlp', sizes: [64, 16, 10] }, { seed: 0 });
    const adapter = lora({ r: 2, merge: true });
    const trainer = new Trainer({ model: mlp, optimizer: gd({ lr: 0.1 }), plugins: [adapter], epochs: 1, batchSize: 512, progress: 'none' });
    try {
      await trainer.fit(data);
      expect(adapter.excluded).toBe('layers.1'); // the head, matched by '.*' and left out
      expect(adapter.set!.merged).toBe(true);
      await expect(trainer.fit(data)).rejects.toMatchObject({ code: 'E_ARG', message: expect.stringMatching(/merged into the weights .*unmerge\(\) before training again/) });
      await expect(trainer.save(join(tmpdir(), 'liaison-never-written.safetensors'))).rejects.toMatchObject({ code: 'E_ARG', param: 'merge' });
      await adapter.set!.unmerge();
      await trainer.fit(data); // trains the side paths again, and merges at its end
      expect(adapter.set!.merged).toBe(true);
    } finally { trainer.free(); adapter.free(); data.free(); mlp.free(); }
  });
});

describe('the adapter base on adopted modules', () => {
  let py: PythonRuntime;
  let nn: PyObject;
  beforeAll(async () => {
    py = await startWithPython({ device: 'cpu' });
    const torch = await py.python.import('torch');
    await torch.manual_seed(0);
    nn = await torch.nn;
  });
  afterAll(async () => { await py?.close(); });

  it("keeps a BatchNorm's running statistics as they were: the whole state_dict bit for bit after training", async () => {
    const net = await nn.Sequential(await nn.Linear(64, 16), await nn.BatchNorm1d(16), await nn.ReLU(), await nn.Linear(16, 10));
    const model = await Model.fromHandle(py, await py.adopt(net));
    const data = await Dataset.builtin(py, 'digits');
    const before = Object.fromEntries(Object.entries(model.state()).map(([k, t]) => [k, t.clone().keep()]));
    expect(Object.keys(before)).toContain('1.running_mean');
    const adapter = lora({ r: 2 });
    const trainer = new Trainer({ model, optimizer: gd({ lr: 0.1 }), plugins: [adapter], epochs: 1, batchSize: 512, progress: 'none' });
    try {
      await trainer.fit(data);
      expect(Object.keys(adapter.set!.sites)).toEqual(['0']); // the head '3' left out
      for (const [k, t] of Object.entries(model.state())) expect(await t.eq(before[k]).all().item(), k).toBe(1);
    } finally { trainer.free(); adapter.free(); data.free(); model.free(); for (const t of Object.values(before)) t.free(); }
  });

  it("an adopted nn.Linear is its own head: the error suggests targets '^$', which adapts it", async () => {
    const model = await Model.fromHandle(py, await py.adopt(await nn.Linear(64, 10)));
    const data = await Dataset.builtin(py, 'digits');
    try {
      for (const [cfg, refused] of [[{}, true], [{ targets: '^$' }, false]] as const) {
        const adapter = lora({ r: 2, ...cfg });
        const trainer = new Trainer({ model, optimizer: gd({ lr: 0.1 }), plugins: [adapter], epochs: 1, batchSize: 512, progress: 'none' });
        try {
          if (refused) await expect(trainer.fit(data)).rejects.toMatchObject({ code: 'E_ARG', param: 'targets', message: expect.stringContaining("(targets: '^$')") });
          else { await trainer.fit(data); expect(Object.keys(adapter.set!.sites)).toEqual(['']); }
        } finally { trainer.free(); adapter.free(); }
      }
    } finally { data.free(); model.free(); }
  });
});
