// Weight hooks with the Trainer, as a pruner of the edge-popup kind will use them: the
// plugin owns the scores (hooks.addParam), freezes the model's weights, and installs a
// straight-through top-k mask at each layer's weight hook point. The Trainer optimizes the
// scores only; the stored weights come out bit for bit what they were.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { gd } from '../plugins/index.js';
import { Dataset } from '../sdk/data.js';
import type { TrainerPlugin, TrainingHooks } from '../sdk/hooks.js';
import { Model } from '../sdk/model.js';
import { Trainer } from '../sdk/trainer.js';
import { straightThroughTopK, weightHook } from '../sdk/weight-hooks.js';
import { startRuntime } from './helpers.js';

/** Edge-popup: a learned top-`keep` mask over every layer's frozen weight. */
class EdgePopup implements TrainerPlugin {
  scores: Record<string, Tensor> = {};
  constructor(readonly model: Model, readonly keep: number) {}
  attach(h: TrainingHooks): void {
    h.freeze(this.model.params.map((p) => p.name));
    this.model.hookModules.weight.forEach((m, i) => {
      const shape = this.model.params.find((p) => p.name === `${m}.weight`)!.shape;
      this.scores[m] = h.addParam(`scores.${m}`, { shape, init: 'uniform', scale: 0.01, seed: 1 + i, module: m });
    });
    weightHook(this.model, this.model.hookModules.weight, (w, site) => w.mul(straightThroughTopK(h.rt, this.scores[site.module], this.keep)), { name: 'edge-popup' });
  }
}

const values = async (t: Tensor) => Array.from((await t.toArray()) as Float32Array);

let rt: Runtime;
beforeAll(async () => {
  rt = await startRuntime();
});
afterAll(async () => {
  await rt?.close();
});

describe('weight hooks in the Trainer', () => {
  it('train the scores of an edge-popup mask while the frozen weights stay', async () => {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 64, 10] }, { seed: 0 });
    for (const p of model.params) if (p.name.endsWith('weight')) model.param(p.name).mul_(3); // wide enough random weights
    const before = await Promise.all(model.params.map((p) => values(model.param(p.name))));
    const plugin = new EdgePopup(model, 0.5);
    const trainer = new Trainer({ model, optimizer: gd({ lr: 0.5 }), plugins: [plugin], batchSize: 64, seed: 0, progress: 'none' });
    const [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const history = await trainer.fit(train, { epochs: 3 });
    expect(history[2].loss).toBeLessThan(0.7 * history[0].loss);
    // the scores left their init range [-0.01, 0.01): they learned
    for (const s of Object.values(plugin.scores)) expect(await s.abs().amax().item()).toBeGreaterThan(0.01);
    expect(await Promise.all(model.params.map((p) => values(model.param(p.name))))).toEqual(before);
  }, 120_000);
});
