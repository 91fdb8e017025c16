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
import type { Runtime, Tensor } from '../bridge/index.js';
import { resolvePython, runtimeEnv } from '../bridge/launcher.js';
import { AdapterSet, type LowRankFactors } from '../sdk/adapters.js';
import { Model } from '../sdk/model.js';
import { type ModelSpec, runtimeSpec } from '../sdk/model-spec.js';
import { readSafetensors, writeSafetensors } from '../sdk/safetensors.js';
import { startRuntime } from './helpers.js';

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

    const { stdout } = await promisify(execFile)(resolvePython(), [join(import.meta.dirname, 'peft_interop.py'), work], { env: runtimeEnv({ OMP_NUM_THREADS: '1' }), encoding: 'utf8', timeout: 120_000 });
    const reply = JSON.parse(stdout.trim().split('\n').at(-1)!) as { skip?: string; cases?: string[] };
    if (reply.skip) {
      ctx.skip(reply.skip);
      return;
    }
    expect(reply.cases).toEqual(Object.keys(CASES).sort());

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
