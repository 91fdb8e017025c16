// The momentum plugins against PyTorch's own SGD: 200 steps of a ReLU MLP on the digits,
// the same initial weights and batches on both sides (test/sgd_reference.py is the plain
// PyTorch loop), parameter for parameter at float32 tolerance — schedules and weight decay
// included, so the whole path (learningRate() → the lr placeholder → update()) is checked.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../bridge/index.js';
import { resolvePython, runtimeEnv } from '../bridge/launcher.js';
import { gd, heavyBall, nesterov } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import type { MomentumOptimizer } from '../sdk/families/momentum/types.js';
import { Model } from '../sdk/model.js';
import type { MLPSpec } from '../sdk/model-spec.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

const SPEC: MLPSpec = { kind: 'mlp', sizes: [64, 32, 32, 10] }; // a deep(ish) ReLU network, 3 layers
const BATCH = 71; // 1797 rows → 25 full batches per epoch
const EPOCHS = 8; // 200 steps

interface Run { name: string; optimizer: MomentumOptimizer; sgd: Record<string, unknown>; schedule: Record<string, unknown> | null }
const RUNS: Run[] = [
  { name: 'nesterov', optimizer: nesterov({ lr: 0.05, momentum: 0.9 }), sgd: { lr: 0.05, momentum: 0.9, nesterov: true }, schedule: null },
  {
    name: 'nesterov + weight decay + cosine',
    optimizer: nesterov({ lr: 0.08, momentum: 0.85, weightDecay: 1e-3, schedule: 'cosine', decaySteps: 200, minLr: 0.004 }),
    sgd: { lr: 0.08, momentum: 0.85, nesterov: true, weight_decay: 1e-3 }, schedule: { kind: 'cosine', T_max: 200, eta_min: 0.004 },
  },
  { name: 'heavy-ball', optimizer: heavyBall({ lr: 0.05, momentum: 0.9 }), sgd: { lr: 0.05, momentum: 0.9 }, schedule: null },
  {
    name: 'heavy-ball + dampening + weight decay + step',
    optimizer: heavyBall({ lr: 0.1, momentum: 0.8, dampening: 0.3, weightDecay: 5e-4, schedule: 'step', decaySteps: 60, gamma: 0.5 }),
    sgd: { lr: 0.1, momentum: 0.8, dampening: 0.3, weight_decay: 5e-4 }, schedule: { kind: 'step', step_size: 60, gamma: 0.5 },
  },
  { name: 'gd', optimizer: gd({ lr: 0.1 }), sgd: { lr: 0.1 }, schedule: null },
];

type Reference = Record<string, { params: Record<string, number[]>; losses: number[] }>;

let rt: Runtime;
let dir: string;
let data: Dataset;
let reference: Reference;
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'liaison-sgd-'));
  rt = await startRuntime({ fileRoot: dir }); // the runtime writes its files into this folder
  const init = join(dir, 'init.safetensors');
  const model = await Model.build(rt, SPEC, { seed: 0 });
  model.saveFile(init);
  await rt.flush();
  model.free();
  data = await Dataset.builtin(rt, 'digits');
  const job = join(dir, 'job.json');
  writeFileSync(job, JSON.stringify({ spec: SPEC, init, batch: BATCH, epochs: EPOCHS, runs: RUNS.map(({ name, sgd, schedule }) => ({ name, sgd, schedule })) }));
  const { stdout } = await promisify(execFile)(resolvePython(), [join(import.meta.dirname, 'sgd_reference.py'), job], { env: runtimeEnv({ OMP_NUM_THREADS: '1' }), encoding: 'utf8', maxBuffer: 64 << 20 });
  reference = JSON.parse(stdout) as Reference;
});
afterAll(async () => {
  await rt?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('momentum plugins match torch.optim.SGD over 200 steps, parameter for parameter', () => {
  for (const run of RUNS) {
    it(run.name, async () => {
      const model = await Model.build(rt, SPEC, { seed: 0 });
      const trainer = new Trainer({ model, optimizer: run.optimizer, batchSize: BATCH, shuffle: false, dropLast: true, loss: 'cross_entropy', progress: 'none', logEvery: 1 });
      const losses: number[] = [];
      trainer.on('progress', (p) => { losses.push(p.loss); });
      try {
        await trainer.fit(data, { epochs: EPOCHS });
        const ref = reference[run.name];
        expect(losses.length).toBe(200);
        expect(ref.losses.length).toBe(200);
        // the training really moved: a loss that fell, on both sides
        expect(ref.losses[199]).toBeLessThan(0.5 * ref.losses[0]);
        for (const info of model.params) {
          const got = Array.from((await model.param(info.name).data()).data as Float32Array);
          const want = ref.params[info.name];
          expect(got.length, info.name).toBe(want.length);
          let worst = 0;
          for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / (1e-3 + Math.abs(want[i])));
          expect(worst, `${info.name}: worst relative difference after 200 steps`).toBeLessThan(2e-4);
        }
        const lossGap = Math.max(...losses.map((l, i) => Math.abs(l - ref.losses[i]) / ref.losses[i]));
        expect(lossGap, 'worst relative loss difference over the 200 steps').toBeLessThan(1e-4);
      } finally {
        trainer.free();
        model.free();
      }
    });
  }
});
