// The Pruner family's base (sdk/families/pruners/base.ts): the `every` schedule, report()
// from the weights as they are, exportMasks() to safetensors; and the `imp` plugin
// (plugins/pruners/imp.ts): rewinding, the controls, resume mid-schedule.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../bridge/index.js';
import { magnitude } from '../plugins/index.js';
import { roundsDue, sparsityOf } from '../sdk/families/pruners/base.js';
import { Model } from '../sdk/model.js';
import { readSafetensors } from '../sdk/safetensors.js';
import { settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
let dir: string;
beforeAll(async () => { rt = await startRuntime(); dir = mkdtempSync(join(tmpdir(), 'liaison-imp-')); });
afterAll(async () => { await rt?.close(); rmSync(dir, { recursive: true, force: true }); });

describe('pruner base', () => {
  it('every: round r after atEpoch + r·every epochs; every 1 is the one-round-per-epoch schedule', () => {
    const at = (c: { atEpoch: number; rounds: number; every?: number }) => Array.from({ length: 9 }, (_, e) => roundsDue(e, c));
    // the schedule before `every` existed: min(rounds, epochs − atEpoch + 1)
    const old = (c: { atEpoch: number; rounds: number }) => Array.from({ length: 9 }, (_, e) => Math.max(0, Math.min(c.rounds, e - c.atEpoch + 1)));
    for (const c of [{ atEpoch: 0, rounds: 3 }, { atEpoch: 2, rounds: 4 }, { atEpoch: 1, rounds: 1 }]) {
      expect(at(c)).toEqual(old(c));
      expect(at({ ...c, every: 1 })).toEqual(old(c));
    }
    expect(at({ atEpoch: 2, rounds: 3, every: 2 })).toEqual([0, 0, 1, 1, 2, 2, 3, 3, 3]);
    expect(at({ atEpoch: 0, rounds: 2, every: 3 })).toEqual([1, 1, 1, 2, 2, 2, 2, 2, 2]);
  });

  it('report() counts the zeros of param ⊙ mask; sparsityOf() those of the stored weights; exportMasks() round-trips and refuses to overwrite', async () => {
    const before = await settledObjects(rt);
    const model = await Model.build(rt, { kind: 'mlp', sizes: [8, 6, 4] }, { seed: 3 });
    const pruner = magnitude({ sparsity: 0.5, scope: 'layer' });
    try {
      pruner.setup(model);
      await pruner.prune(rt);
      const r = await pruner.report();
      expect(r.layers.map((l) => [l.name, l.numel, l.pruned])).toEqual([['layers.0.weight', 48, 24], ['layers.1.weight', 24, 12]]);
      expect(r.sparsity).toBeCloseTo(0.5, 12);
      // a weight revived behind the pruner's back (as momentum would) shows in sparsityOf, not in report()
      model.param('layers.0.weight').fill_(1).free();
      expect((await sparsityOf(model)).pruned).toBe(12);
      expect((await pruner.report()).pruned).toBe(36);
      expect((await sparsityOf(model, ['layers.1.weight'])).layers).toEqual([{ name: 'layers.1.weight', numel: 24, pruned: 12, sparsity: 0.5 }]);
      await expect(sparsityOf(model, ['nope'])).rejects.toThrow(/no parameter 'nope'/);

      const path = join(dir, 'masks.safetensors');
      await pruner.exportMasks(path);
      const file = await readSafetensors(path);
      expect(Object.keys(file.tensors).sort()).toEqual(['layers.0.weight', 'layers.1.weight']);
      const m0 = file.tensors['layers.0.weight'];
      expect([m0.dtype, m0.shape]).toEqual(['u8', [6, 8]]);
      const mine = Array.from((await pruner.currentMasks()['layers.0.weight'].data()).data as Float32Array);
      expect(Array.from(m0.data as Uint8Array)).toEqual(mine);
      expect(file.metadata).toMatchObject({ format: 'liaison-masks', plugin: 'pruner/magnitude@1.0.0', round: '1', sparsity: '0.5' });
      await expect(pruner.exportMasks(path)).rejects.toThrow(/exists; pass \{ overwrite: true \}/);
      await pruner.exportMasks(path, { overwrite: true });
    } finally {
      pruner.free();
      model.free();
    }
    expect(await settledObjects(rt)).toBe(before);
  });
});
