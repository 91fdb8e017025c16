// Groups of runtimes on torch.distributed (bridge/group.ts): torchrun starts the ranks on
// this machine (gloo, one torch thread each), and the group drives them as one runtime.
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Group, LiaisonError, type Tensor } from '../bridge/index.js';
import { alive } from '../bridge/group-launcher.js';
import { checkAgreement } from '../bridge/group-ranks.js';
import { HandleRef } from '../bridge/protocol.js';
import { trace } from '../sdk/program.js';
import { startRuntime } from '../examples/env.js';

const CHILD = fileURLToPath(new URL('./fixtures/group-child.ts', import.meta.url));
const values = (d: { data: ArrayLike<number | bigint> }) => Array.from(d.data, Number);

/** Poll `cond` until it holds or `ms` pass (a generous deadline, never a sleep). */
async function until(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  return cond();
}

async function expectCode(p: Promise<unknown> | (() => unknown), code: string, text?: RegExp): Promise<LiaisonError> {
  let err: unknown;
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(LiaisonError);
  expect((err as LiaisonError).code).toBe(code);
  if (text) expect((err as LiaisonError).message).toMatch(text);
  return err as LiaisonError;
}

// Every start runs from the file's first moment, side by side (much of a start is waiting:
// torchrun's rendezvous, gloo's, a timeout); each describe awaits the one it uses.
let orphan: { child: ChildProcess; output: () => string };
let unreachable: Promise<unknown>;
let four: Promise<Group>;
beforeAll(() => {
  four = Group.start({ ranks: 4, device: 'cpu', threads: 1 });
  four.catch(() => undefined);
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  orphan = { child, output: () => out };
  unreachable = Group.start({ ranks: 2, nnodes: 2, rdzvEndpoint: '192.0.2.1:29400', rdzvTimeoutS: 2, key: 'k', threads: 1 });
  unreachable.catch(() => undefined);
});
afterAll(async () => {
  orphan.child.kill('SIGKILL');
  await (await four.catch(() => null))?.close();
});

describe('a group of 2 ranks', () => {
  let g: Group;
  beforeAll(async () => { g = await Group.start({ ranks: 2, device: 'cpu', threads: 1 }); }, 120_000);
  afterAll(async () => { await g?.close(); });

  it('reports its ranks in the handshake', () => {
    expect(g.size).toBe(2);
    expect(g.info.group).toMatchObject({ rank: 0, worldSize: 2, backend: 'gloo' });
    expect(g.ranks.map((r) => r.info.group!.rank)).toEqual([0, 1]);
    expect(g.info.group!.endpoints).toEqual(g.ranks.map((r) => r.endpoint));
  });

  it('runs every op on every rank: the same values on each', async () => {
    const a = g.randn([3, 3], { seed: 7 });
    const b = a.matmul(a).tanh().add(g.tensor([1, 2, 3], [3]));
    const [r0, r1] = await g.readEach(b);
    expect(values(r0)).toEqual(values(r1));
    expect(values(await b.data())).toEqual(values(r0));
  });

  it('gives each rank its own part (shard, tensorEach) and reduces across them', async () => {
    const x = g.shard(new Float32Array([1, 2, 3, 4, 5]), [5]); // tensor_split: [1, 2, 3] | [4, 5]
    expect((await g.readEach(x)).map(values)).toEqual([[1, 2, 3], [4, 5]]);
    expect(x.shape).toBeUndefined();
    const y = g.tensorEach([[1, 10], [2, 20]], [2]);
    expect((await g.readEach(y)).map(values)).toEqual([[1, 10], [2, 20]]);
    const total = g.call('dist_all_reduce', [x.sum()]) as Tensor;
    expect((await g.readEach(total)).map(values)).toEqual([[15], [15]]);
    const gathered = g.call('dist_all_gather', [x]) as Tensor;
    expect((await g.readEach(gathered)).map(values)).toEqual([[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]);
    const rank = g.call('dist_rank') as Tensor;
    expect((await g.readEach(rank)).map(values)).toEqual([[0], [1]]);
  });

  it('replays a program with a collective on every rank', async () => {
    const step = await trace(g, { name: 'mean_of_squares', inputs: { x: { dtype: 'f32', shape: [2] } } },
      ({ x }) => g.call('dist_all_reduce', [x.mul(x)], { op: 'mean' }) as Tensor);
    const x = g.tensorEach([[1, 2], [3, 4]], [2]);
    for (let i = 0; i < 2; i++) {
      const y = step.run({ x });
      expect((await g.readEach(y)).map(values)).toEqual([[5, 10], [5, 10]]);
    }
    step.free();
  });

  it('runs rank-addressed work on one rank, and refuses a collective there', async () => {
    const one = g.rank(1);
    const t = one.tensor([1, 2, 3]).mul(2);
    expect(values(await t.data())).toEqual([2, 4, 6]);
    const y = g.tensorEach([[1], [5]], [1]);
    expect(values(await (one.call('add', [y, 1]) as Tensor).data())).toEqual([6]); // rank 1's part of a group tensor
    await expectCode(() => g.call('add', [t, 1]), 'E_HANDLE', /rank 1 alone/);
    await expectCode(() => one.call('dist_all_reduce', [t]), 'E_ARG', /every rank/);
    await expectCode(() => g.rank(2), 'E_ARG');
  });

  it('sums its ranks\' stats, collectives included', async () => {
    const before = await g.stats();
    const each = await Promise.all(g.ranks.map((r) => r.stats()));
    expect(before.ops_run).toBe(each[0].ops_run + each[1].ops_run);
    await (g.call('dist_all_reduce', [g.ones([4])]) as Tensor).data();
    const after = await g.stats();
    expect(after.collectives!.calls - before.collectives!.calls).toBe(2); // one call on each rank
    expect(after.collectives!.bytes - before.collectives!.bytes).toBe(2 * 16);
  });

  it('connects to rank 0 alone and finds the others', async () => {
    const h = await Group.connect(g.endpoint);
    try {
      expect(h.size).toBe(2);
      expect(h.ranks.map((r) => r.info.pid)).toEqual(g.ranks.map((r) => r.info.pid));
      const s = h.call('dist_all_reduce', [h.shard([1, 2], [2])]) as Tensor;
      expect((await h.readEach(s)).map(values)).toEqual([[3], [3]]);
    } finally {
      await h.close();
    }
    expect(values(await g.ones([1]).data())).toEqual([1]); // closing a connected group leaves the ranks running
  });

  it('is what the examples run on when LIAISON_GROUP_ENDPOINT is set', async () => {
    const keep = process.env.LIAISON_GROUP_ENDPOINT;
    process.env.LIAISON_GROUP_ENDPOINT = g.endpoint;
    try {
      const rt = await startRuntime();
      expect(rt).toBeInstanceOf(Group);
      expect(rt.info.group?.worldSize).toBe(2);
      await rt.close();
    } finally {
      if (keep === undefined) delete process.env.LIAISON_GROUP_ENDPOINT;
      else process.env.LIAISON_GROUP_ENDPOINT = keep;
    }
  });
});

describe('starting a group', () => {
  it('refuses a wrong number of ranks before starting anything', async () => {
    for (const ranks of [0, 1.5, -2, Number.NaN]) await expectCode(Group.start({ ranks }), 'E_ARG', /ranks/);
    await expectCode(Group.start({ ranks: 3, nnodes: 2, rdzvEndpoint: 'x:1' }), 'E_ARG', /nnodes/);
  });

  it('refuses ranks that disagree about the group', async () => {
    const rank = (r: number, world: number, ep = `ipc://r${r}`) => ({ endpoint: ep, info: { group: { rank: r, worldSize: world, localRank: r, backend: 'gloo', endpoints: [] } } }) as never;
    expect(() => checkAgreement([rank(0, 2), rank(1, 2)], 2)).not.toThrow();
    await expectCode(() => checkAgreement([rank(0, 2), rank(1, 3)]), 'E_GROUP', /disagree about the world size: ipc:\/\/r0 says 2, ipc:\/\/r1 says 3/);
    await expectCode(() => checkAgreement([rank(0, 2), rank(0, 2)]), 'E_GROUP', /rank 1 .* answered as rank 0/);
    await expectCode(() => checkAgreement([rank(0, 3), rank(1, 3)]), 'E_GROUP', /world of 3 ranks, 2 answered/);
    await expectCode(() => checkAgreement([rank(0, 2), rank(1, 2)], 4), 'E_GROUP', /4 ranks was asked for/);
    await expectCode(() => checkAgreement([rank(0, 2), { endpoint: 'ipc://plain', info: {} } as never]), 'E_GROUP', /ipc:\/\/plain is not a rank of a group/);
  });

  it('reads LIAISON_GROUP', async () => {
    const keep = { g: process.env.LIAISON_GROUP, e: process.env.LIAISON_GROUP_ENDPOINT };
    try {
      delete process.env.LIAISON_GROUP;
      delete process.env.LIAISON_GROUP_ENDPOINT;
      expect(await Group.fromEnv()).toBeNull();
      process.env.LIAISON_GROUP = 'two';
      await expectCode(Group.fromEnv(), 'E_ARG', /LIAISON_GROUP/);
    } finally {
      for (const [k, v] of [['LIAISON_GROUP', keep.g], ['LIAISON_GROUP_ENDPOINT', keep.e]] as const) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});

describe('a group of 4 ranks', () => {
  let g: Group;
  beforeAll(async () => { g = await four; }, 120_000);

  it('gathers every rank\'s part', async () => {
    const parts = [[0], [1, 1], [2], [3, 3]];
    const x = g.tensorEach(parts, parts.map((p) => [p.length]));
    const all = g.call('dist_all_gather', [x]) as Tensor;
    for (const d of await g.readEach(all)) expect(values(d)).toEqual([0, 1, 1, 2, 3, 3]);
  });

  it('fails every pending request with E_GROUP naming a rank killed mid-request, and leaves no process', async () => {
    const { agent, ranks } = g.pids;
    // ranks 0-2 wait in an all-reduce that rank 3 never joins: pending until something dies
    const x = g.ones([2]);
    await x.data();
    const pending = [0, 1, 2].map((r) => {
      const q = g.ranks[r].opQueue;
      q.push({ op: 'dist_all_reduce', out: [new HandleRef(1_000_000)], args: [x.ref] });
      return q.flush();
    });
    const settled = pending.map((p) => p.then(() => null, (e: unknown) => e));
    const t0 = Date.now();
    process.kill(ranks[1], 'SIGKILL');
    const errors = await Promise.all(settled);
    const took = Date.now() - t0;
    for (const e of errors) {
      expect(e).toBeInstanceOf(LiaisonError);
      expect((e as LiaisonError).code).toBe('E_GROUP');
      expect((e as LiaisonError).message).toMatch(new RegExp(`rank 1 \\(pid ${ranks[1]}\\) died`));
    }
    expect(took).toBeLessThan(15_000); // "within a few seconds", with room for a loaded machine
    expect(g.closed).toBe(true);
    await expectCode(() => g.ones([1]), 'E_GROUP', /rank 1/);
    await g.close();
    expect(await until(() => ![agent!, ...ranks].some(alive), 10_000)).toBe(true);
  }, 60_000);
});

describe('a SIGKILLed Node', () => {
  it('leaves no rank and no torchrun behind (--watch-pid)', async () => {
    const { child, output } = orphan;
    let pids: number[] = [];
    try {
      expect(await until(() => /^READY /m.test(output()) || child.exitCode !== null, 120_000), output()).toBe(true);
      const ready = JSON.parse(/^READY (.*)$/m.exec(output())![1]) as { agent: number; ranks: number[] };
      pids = [ready.agent, ...ready.ranks];
      expect(pids.every(alive)).toBe(true);
      child.kill('SIGKILL');
      expect(await until(() => !pids.some(alive), 30_000)).toBe(true);
    } finally {
      child.kill('SIGKILL');
      for (const p of pids) if (alive(p)) process.kill(p, 'SIGKILL');
    }
  }, 150_000);
});

describe('a group on several machines', () => {
  it('fails with E_SPAWN naming a rendezvous it cannot reach, within its timeout', async () => {
    const e = await expectCode(unreachable, 'E_SPAWN', /192\.0\.2\.1:29400/);
    expect(e.message).toMatch(/Rendezvous\w*Error/);
  }, 120_000);
});
