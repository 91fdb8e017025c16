// The Pruner family's base (sdk/families/pruners/base.ts): the `every` schedule, report()
// from the weights as they are, exportMasks() to safetensors; and the `imp` plugin
// (plugins/pruners/imp.ts): rewinding, the controls, resume mid-schedule.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { heavyBall, imp, magnitude } from '../plugins/index.js';
import type { Imp, ImpConfig } from '../plugins/pruners/imp.js';
import { Dataset } from '../sdk/data.js';
import { roundsDue, sparsityOf } from '../sdk/families/pruners/base.js';
import { Model } from '../sdk/model.js';
import { readSafetensors } from '../sdk/safetensors.js';
import { Trainer } from '../sdk/trainer.js';
import { runExample, settledObjects, startRuntime } from './helpers.js';

let rt: Runtime;
let dir: string;
let data: Dataset;
beforeAll(async () => {
  rt = await startRuntime();
  dir = mkdtempSync(join(tmpdir(), 'liaison-imp-'));
  data = await Dataset.builtin(rt, 'digits');
});
afterAll(async () => { data?.free(); await rt?.close(); rmSync(dir, { recursive: true, force: true }); });

const SPEC = { kind: 'mlp' as const, sizes: [64, 24, 10] };
const values = async (t: Tensor) => Array.from((await t.data()).data as ArrayLike<number>, Number);

/**
 * A model, an IMP pruner of `cfg` and a Trainer (heavy-ball, 256 rows a batch: 8 steps an
 * epoch on the digits), all freed by `done()`.
 */
async function setup(cfg: Partial<ImpConfig>, extra: { seed?: number; checkpointDir?: string; checkpointSnapshots?: boolean; resume?: string; follow?: Imp } = {}) {
  const model = await Model.build(rt, SPEC, { seed: extra.seed ?? 1 });
  const pruner = imp(cfg) as Imp;
  if (extra.follow) pruner.followTicket(extra.follow);
  const opts = { model, optimizer: heavyBall({ lr: 0.05 }), plugins: [pruner], epochs: 1, batchSize: 256, loss: 'cross_entropy' as const, progress: 'none' as const, logEvery: 1000, seed: 0, checkpointSnapshots: extra.checkpointSnapshots };
  const trainer = extra.resume ? await Trainer.resume(extra.resume, opts) : new Trainer({ ...opts, checkpointDir: extra.checkpointDir });
  return { model, pruner, trainer, done: () => { trainer.free(); pruner.free(); model.free(); } };
}

/** The model's parameters' values by name. */
async function weightsOf(model: Model): Promise<Record<string, number[]>> {
  return Object.fromEntries(await Promise.all(model.params.map(async (p) => [p.name, await values(model.param(p.name))] as const)));
}

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

describe('imp', () => {
  it('rewinds the survivors to the initialization after each round, at 1 − (1 − rate)^(r+1), and records each level', async () => {
    const init = await Model.build(rt, SPEC, { seed: 1 });
    const w0 = await weightsOf(init);
    init.free();
    const before = await settledObjects(rt);
    const { model, pruner, trainer, done } = await setup({ rate: 0.2, rounds: 2, atEpoch: 1, every: 1 });
    try {
      pruner.onLevelEnd(async () => ({ accuracy: (await trainer.evaluate(data)).accuracy! }));
      await trainer.fit(data, { epochs: 2 });
      // the last round ran after epoch 2: every parameter is its initial value, masked
      const w = await weightsOf(model);
      const masks = pruner.currentMasks();
      for (const p of model.params) {
        const m = masks[p.name] ? await values(masks[p.name]) : null;
        expect(w[p.name]).toEqual(w0[p.name].map((v, i) => (m ? v * m[i] : v)));
      }
      const r = await pruner.report();
      expect(r.pruned).toBe(Math.round(0.36 * r.numel));
      expect(pruner.levels.map((l) => [l.level, l.epoch, l.step])).toEqual([[0, 1, 8], [1, 2, 16]]);
      expect(pruner.levels[0].sparsity).toBe(0);
      expect(pruner.levels[1].sparsity).toBeCloseTo(Math.round(0.2 * r.numel) / r.numel, 12);
      for (const l of pruner.levels) expect(Object.keys(l.metrics).sort()).toEqual(['accuracy', 'loss']);
      // a level's accuracy is the trained model's, before its round rewinds it
      const rewound = (await trainer.evaluate(data)).accuracy!;
      expect(pruner.levels[1].metrics.accuracy).toBeGreaterThan(rewound + 0.05);
    } finally {
      done();
    }
    expect(await settledObjects(rt)).toBe(before);
  });

  it('rewindTo k: the survivors go back to the weights after step k', async () => {
    const ref = await setup({ rounds: 1, atEpoch: 5 }); // never prunes within one epoch: plain training
    const { model, pruner, trainer, done } = await setup({ rate: 0.5, rounds: 1, atEpoch: 2, rewindTo: 8 });
    try {
      await ref.trainer.fit(data, { epochs: 1 }); // 8 steps
      const wk = await weightsOf(ref.model);
      await trainer.fit(data, { epochs: 2 });
      const w = await weightsOf(model);
      const masks = pruner.currentMasks();
      for (const p of model.params) {
        const m = masks[p.name] ? await values(masks[p.name]) : null;
        expect(w[p.name]).toEqual(wk[p.name].map((v, i) => (m ? v * m[i] : v)));
      }
    } finally {
      ref.done();
      done();
    }
  });

  /**
   * A ticket (control 'none', 2 rounds over 2 epochs: the second round at the end) trained
   * first, kept; the masks in force at each level's end and after the last round (round r's
   * masks at index r), the weights at the end (just rewound), those trained at level 1's
   * end (before round 1) and the per-weight kept counts.
   */
  async function masksByRound(cfg: Partial<ImpConfig>, follow?: Imp) {
    const run = await setup({ rate: 0.3, rounds: 2, atEpoch: 1, every: 1, seed: 3, ...cfg }, { follow });
    const seen: number[][][] = [];
    let trained: Record<string, number[]> = {};
    const grab = async () => { seen.push(await Promise.all(Object.values(run.pruner.currentMasks()).map(values))); };
    run.pruner.onLevelEnd(async (l) => { if (l.level > 0) [, trained] = await Promise.all([grab(), weightsOf(run.model)]); });
    await run.trainer.fit(data, { epochs: 2 });
    await grab();
    const w = await weightsOf(run.model);
    return { ...run, seen, w, trained, counts: seen.map((ms) => ms.map((m) => m.reduce((a, b) => a + b, 0))) };
  }

  it("controls follow the ticket: 'reinit' takes its masks of every round on re-initialized weights; 'random' its per-layer counts with other entries", async () => {
    const init = await Model.build(rt, SPEC, { seed: 1 });
    const w0 = await weightsOf(init);
    init.free();
    const before = await settledObjects(rt);
    const ticket = await masksByRound({});
    ticket.trainer.free();
    ticket.model.free();
    try {
      const reinit = await masksByRound({ control: 'reinit' }, ticket.pruner);
      reinit.done();
      const random = await masksByRound({ control: 'random' }, ticket.pruner);
      random.done();
      expect(ticket.seen).toHaveLength(2);
      expect(reinit.seen).toEqual(ticket.seen); // exactly, at every round
      // not what its own training would give: the global top-|w| of its level-1 weights among the round-0 survivors
      const names = ['layers.0.weight', 'layers.1.weight'];
      const live = names.flatMap((n, l) => reinit.trained[n].map((v, i) => ({ l, i, a: ticket.seen[0][l][i] ? Math.abs(v) : -1 })));
      const top = live.sort((x, y) => y.a - x.a).slice(0, ticket.counts[1][0] + ticket.counts[1][1]);
      const own = names.map((n) => reinit.trained[n].map(() => 0));
      for (const e of top) own[e.l][e.i] = 1;
      expect(own).not.toEqual(ticket.seen[1]);
      expect(random.counts).toEqual(ticket.counts);
      for (const r of [0, 1]) expect(random.seen[r][0]).not.toEqual(ticket.seen[r][0]);
      // global scope: the layers are pruned unevenly, and the random masks follow the ticket's split
      expect(ticket.counts[1][0] / 1536).not.toBeCloseTo(ticket.counts[1][1] / 240, 2);
      for (const [name, v0] of Object.entries(w0)) {
        const pool = new Set(v0);
        const got = reinit.w[name].filter((v) => v !== 0);
        expect(got.every((v) => pool.has(v)), name).toBe(true); // drawn from the init's values
        expect(reinit.w[name]).not.toEqual(ticket.w[name]); // not the rewound ones
      }
      // the random arm is rewound: its survivors hold their initial values
      const m = random.seen[1];
      expect(random.w['layers.0.weight']).toEqual(w0['layers.0.weight'].map((v, i) => v * m[0][i]));
    } finally {
      ticket.pruner.free();
    }
    expect(await settledObjects(rt)).toBe(before);
  });

  it('controls refuse to run without a ticket, past its rounds, or after it was freed; followTicket takes only a ticket', async () => {
    expect(() => (imp({}) as Imp).followTicket(imp({}) as Imp)).toThrow(/control is 'none'/);
    expect(() => (imp({ control: 'random' }) as Imp).followTicket(imp({ control: 'reinit' }) as Imp)).toThrow(/needs an imp pruner with control 'none'/);
    const alone = await setup({ control: 'reinit', atEpoch: 1 });
    try {
      await expect(alone.trainer.fit(data, { epochs: 1 })).rejects.toThrow(/control 'reinit' uses a ticket's masks: call followTicket/);
    } finally {
      alone.done();
    }
    const ticket = await setup({ rate: 0.3, rounds: 1, atEpoch: 1 });
    await ticket.trainer.fit(data, { epochs: 1 });
    const ahead = await setup({ rate: 0.3, rounds: 2, atEpoch: 1, control: 'random' }, { follow: ticket.pruner });
    try {
      await expect(ahead.trainer.fit(data, { epochs: 2 })).rejects.toThrow(/round 1 needs the followed ticket's round-1 masks, and it has run 1 rounds/);
    } finally {
      ahead.done();
      ticket.done();
    }
    const late = await setup({ rate: 0.3, rounds: 1, atEpoch: 1, control: 'reinit' }, { follow: ticket.pruner });
    try {
      await expect(late.trainer.fit(data, { epochs: 1 })).rejects.toThrow(/freed or never set up/);
    } finally {
      late.done();
    }
  });

  it('resumed from a mid-schedule checkpoint: the same masks and weights as a straight run; with another ticket or without the snapshot, a clear error', async () => {
    const tickets = await Promise.all([1, 9].map(async (seed) => {
      const t = await setup({ rate: 0.3, rounds: 3, atEpoch: 1 }, { seed });
      await t.trainer.fit(data, { epochs: 3 });
      return t;
    }));
    const cfg = { rate: 0.3, rounds: 3, atEpoch: 1, every: 1, control: 'reinit' as const, seed: 2 };
    const ckpt = join(dir, 'resume');
    const straight = await setup(cfg, { checkpointDir: ckpt, checkpointSnapshots: true, follow: tickets[0].pruner });
    await straight.trainer.fit(data, { epochs: 4 });
    const resumed = await setup(cfg, { resume: join(ckpt, 'epoch-2.safetensors'), checkpointSnapshots: true, follow: tickets[0].pruner });
    const other = await setup(cfg, { resume: join(ckpt, 'epoch-2.safetensors'), checkpointSnapshots: true, follow: tickets[1].pruner });
    try {
      await resumed.trainer.fit(data, { epochs: 2 }); // round 2 after the third epoch
      expect(await weightsOf(resumed.model)).toEqual(await weightsOf(straight.model));
      const [a, b] = [straight.pruner.currentMasks(), resumed.pruner.currentMasks()];
      for (const k of Object.keys(a)) expect(await values(b[k])).toEqual(await values(a[k]));
      expect(resumed.pruner.levels.map((l) => l.level)).toEqual([2, 3]);
      await expect(other.trainer.fit(data, { epochs: 2 })).rejects.toThrow(/masks up to round 1 are not those this run used.*resume a control with the ticket it followed/);
    } finally {
      for (const r of [straight, resumed, other, ...tickets]) r.done();
    }
    // saved without snapshots, resumed into a model of another init: the rewind would go elsewhere
    const bare = join(dir, 'bare');
    const more = { rate: 0.3, rounds: 3, atEpoch: 1, every: 1 }; // a round still to come after the checkpoint
    const first = await setup(more, { checkpointDir: bare });
    try {
      await first.trainer.fit(data, { epochs: 2 });
    } finally {
      first.done();
    }
    const seeded = await setup(more, { seed: 9, resume: join(bare, 'epoch-2.safetensors') });
    try {
      await expect(seeded.trainer.fit(data, { epochs: 1 })).rejects.toThrow(/not the one this run took at step 0.*checkpointSnapshots: true/);
    } finally {
      seeded.done();
    }
  });
});

describe('examples/lottery-tickets.ts', () => {
  it('runs a short schedule: the tables of the three arms (end of each level, after its first epoch), the last ticket per layer, the PNG and the masks', async () => {
    const out = join(dir, 'example');
    const { code, out: stdout, err } = await runExample(['examples/lottery-tickets.ts', '--out', out], { LIAISON_LTH_SEEDS: '1', LIAISON_LTH_ROUNDS: '2', LIAISON_LTH_EPOCHS: '2' });
    expect(code, err).toBe(0);
    expect(stdout).toMatch(/\| % of weights left \| IMP, rewound \(ticket\) \| ticket's masks, re-init \| random masks, rewound \|/);
    expect(stdout).toMatch(/after the first epoch \(24 steps\) of each level/);
    // each row twice: at the end of its level and after its first epoch
    for (const left of ['100.00', '80.00', '64.00']) expect(stdout.match(new RegExp(`\\| ${left} \\| \\d+\\.\\d ± 0\\.0 \\| \\d+\\.\\d ± 0\\.0 \\| \\d+\\.\\d ± 0\\.0 \\|`, 'g'))).toHaveLength(2);
    expect(stdout).toMatch(/\| all \| 50200 \| 18072 \| 36\.00% \|/); // 0.64 · 50200 kept after two rounds
    expect(existsSync(join(out, 'lottery-tickets.png'))).toBe(true);
    const masks = await readSafetensors(join(out, 'lottery-ticket-masks.safetensors'));
    expect(masks.metadata).toMatchObject({ plugin: 'pruner/imp@1.0.0', round: '2' });
  }, 120_000);
});
