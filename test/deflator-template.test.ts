// The fit() template of iterative deflators (IterativeDeflatorBase, sdk/families/deflators/base.ts)
// as a new plugin uses it: the plugin writes only iterate() (here: block power iteration), and
// the template checks k and the plugin's own arguments, works in float64 when asked, shows
// onRound and returns the result in the input dtype, and frees what the core made.
import { type Static, Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { hotelling } from '../plugins/index.js';
import { type IterationContext, IterativeDeflatorBase, type IterationProblem, type Iterated, knownCovariance, normalizeColumns, randomStarts, rayleigh, sortedResult } from '../sdk/families/deflators/base.js';
import { errorSummary } from '../sdk/families/deflators/errors.js';
import type { DeflationProblem } from '../sdk/families/deflators/types.js';
import { definePlugin } from '../sdk/plugin.js';
import { settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const Config = Type.Object({
  steps: Type.Integer({ minimum: 1, default: 60, description: 'steps' }),
  float64: Type.Boolean({ default: false, description: 'iterate in float64' }),
}, { additionalProperties: false });

const seenDtypes: string[] = [];

/** Orthogonal (block power) iteration: the whole plugin is its core. */
class Block extends IterativeDeflatorBase<Static<typeof Config>> {
  protected override check({ k }: DeflationProblem): void {
    if (k > 4) throw Object.assign(new Error(`${this.id}: this test plugin takes k ≤ 4, got ${k}`), { param: 'k', code: 'E_ARG' });
  }

  protected async iterate({ cov, d, k, dtype }: IterationProblem, ctx: IterationContext): Promise<Iterated> {
    seenDtypes.push(dtype);
    let v = randomStarts(ctx.rt, d, k, ctx.seed, dtype);
    for (let r = 1; r <= this.config.steps; r++) {
      const [q] = cov.matmul(v).qr();
      v = normalizeColumns(q);
      await ctx.report(r, v, r * k);
    }
    return { ...sortedResult(v, rayleigh(cov, v)), rounds: this.config.steps, matvecs: this.config.steps * k };
  }
}
const block = definePlugin({ name: 'test-block-power', version: '1.0.0', family: 'deflator', schema: Config, description: 'test: block power iteration', create: (c, m) => new Block(c, m) });

const SPECTRUM = [9, 4, 2, 1, 0.5, 0.25, 0.1, 0.05];

describe('IterativeDeflatorBase.fit', () => {
  it('a core written alone converges; float64 iterates in f64 and hands back f32, onRound included', async () => {
    const { cov, q } = knownCovariance(rt, SPECTRUM, { seed: 1 }); // f32
    for (const float64 of [false, true]) {
      const onRoundDtypes = new Set<string>();
      const r = await block({ float64 }).fit({ cov, d: 8, k: 3 }, { rt, seed: 2, onRound: async (_r, v: Tensor) => { onRoundDtypes.add((await v.info()).dtype); } });
      expect(seenDtypes.at(-1)).toBe(float64 ? 'f64' : 'f32');
      expect([...onRoundDtypes]).toEqual(['f32']);
      expect((await r.vectors.info()).dtype).toBe('f32');
      expect((await r.values.info()).dtype).toBe('f32');
      expect((await errorSummary(q.narrow(1, 0, 3), r.vectors)).max).toBeLessThan(1e-3);
      expect(r).toMatchObject({ rounds: 60, matvecs: 180 });
    }
  });

  it('k and the plugin\'s own check are refused before the core runs', async () => {
    const { cov } = knownCovariance(rt, SPECTRUM, { seed: 1 });
    const before = seenDtypes.length;
    await expect(block().fit({ cov, d: 8, k: 9 }, { rt, seed: 0 })).rejects.toMatchObject({ code: 'E_ARG', param: 'k' });
    await expect(block().fit({ cov, d: 8, k: 5 }, { rt, seed: 0 })).rejects.toThrow(/takes k ≤ 4, got 5/);
    expect(seenDtypes.length).toBe(before);
  });

  it('what the core makes is freed at the end: repeated fits leave the runtime\'s object count where it was', async () => {
    const { cov } = knownCovariance(rt, SPECTRUM, { seed: 1 });
    const fit = async () => { const r = await hotelling({ steps: 20, float64: true }).fit({ cov, d: 8, k: 3 }, { rt, seed: 0, onRound: () => {} }); r.vectors.free(); r.values.free(); };
    await fit();
    const objects = await settledObjects(rt);
    for (let i = 0; i < 3; i++) await fit();
    expect((await rt.stats()).objects).toBeLessThanOrEqual(objects); // a leak adds; only a collection takes away
  });
});
