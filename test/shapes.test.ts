// Static shapes (bridge/shapes.ts): every rule against what the runtime really returns, and
// symbolic sizes carried through a trace.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, Tensor } from '../bridge/index.js';
import { MULTI_RULES, RULES } from '../bridge/shapes.js';
import { Model } from '../sdk/model.js';
import { trace } from '../sdk/program.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

type Out = Tensor | Tensor[];
/** [op whose rule it checks, what it calls]: a few argument sets per op. */
type Case = [op: string, make: () => Out];

function cases(): Case[] {
  const r = (...shape: number[]) => rt.randn(shape, { seed: shape.length + 1 });
  const pos = (...shape: number[]) => rt.rand(shape, { seed: 7 }).add(0.5);
  const mask = (...shape: number[]) => r(...shape).gt(0);
  const idx = (high: number, ...shape: number[]) => rt.randint(0, high, shape, { seed: 3 });
  const spd = (n: number) => { const a = r(n, n); return a.matmul(a.T).add(rt.eye(n).mul(n)); };
  const call = (op: string, args: unknown[], kw?: Record<string, unknown>, n = 1) => rt.call(op, args as never, kw as never, n);
  const out: Case[] = [];
  const add = (op: string, ...makes: (() => Out)[]) => { for (const m of makes) out.push([op, m]); };

  for (const op of ['add', 'sub', 'mul', 'div', 'pow', 'remainder', 'maximum', 'minimum', 'atan2', 'floor_divide',
    'eq', 'ne', 'lt', 'le', 'gt', 'ge', 'logical_and', 'logical_or', 'logical_xor']) {
    add(op, () => call(op, [r(3, 4), r(4)]), () => call(op, [r(2, 1, 4), pos(3, 1)]), () => call(op, [r(3), op === 'atan2' || op.startsWith('logical') ? pos() : 2]), () => call(op, [r(), pos(2, 3)]));
  }
  for (const op of ['abs', 'ceil', 'cos', 'exp', 'expm1', 'floor', 'gelu', 'isfinite', 'isnan', 'log', 'log1p', 'logical_not', 'neg',
    'reciprocal', 'relu', 'round', 'rsqrt', 'sigmoid', 'sign', 'silu', 'sin', 'sqrt', 'square', 'tanh', 'clone', 'contiguous',
    'zeros_like', 'ones_like', 'rand_like', 'randn_like', 'inv', 'argsort']) {
    add(op, () => call(op, [op === 'inv' ? spd(3) : r(2, 3, 3)]));
  }
  add('clamp', () => r(2, 3).clamp(0, 1));
  add('to', () => r(2, 3).to('f64'), () => r().to('i64'));
  add('full_like', () => call('full_like', [r(4, 1), 3]));
  add('bernoulli', () => call('bernoulli', [rt.rand([3, 2], { seed: 1 })]));
  add('dropout', () => call('dropout', [r(5, 2)], { p: 0.5, seed: 1 }));
  add('cumsum', () => r(2, 3).cumsum(1));
  add('flip', () => r(2, 3).flip([0, 1]));
  add('roll', () => call('roll', [r(2, 3), [1]]));
  add('tril', () => r(3, 4).tril(1));
  add('triu', () => r(2, 3, 4).triu());
  add('softmax', () => r(2, 3).softmax(0));
  add('log_softmax', () => r(2, 3).logSoftmax());
  add('layer_norm', () => call('layer_norm', [r(2, 3, 4), [4]]));
  add('scatter', () => r(3, 4).scatter(1, idx(4, 3, 2), 1));
  add('scatter_add', () => r(3, 4).scatterAdd(1, idx(4, 3, 2), r(3, 2)));
  add('scatter_reduce', () => call('scatter_reduce', [r(3, 4), 0, idx(3, 2, 4), r(2, 4), 'amax']));
  add('cholesky', () => spd(3).cholesky());
  add('add_', () => r(3, 4).add_(r(4), 2));
  add('sub_', () => r(3, 4).sub_(1));
  add('mul_', () => r(2).mul_(r(2)));
  add('div_', () => r(2, 2).div_(pos(2, 1)));
  add('addcmul_', () => r(2, 3).addcmul_(r(3), r(2, 3)));
  add('addcdiv_', () => r(2, 3).addcdiv_(r(3), pos(2, 3)));
  add('lerp_', () => r(2, 3).lerp_(r(2, 3), 0.5));
  add('zero_', () => r(4).zero_());
  add('fill_', () => r(4, 1).fill_(2));
  add('copy_', () => r(3, 4).copy_(r(4)));
  add('clamp_', () => call('clamp_', [r(2, 3)], { min: 0 }));
  add('masked_fill_', () => call('masked_fill_', [r(3, 4), mask(4), 0]));
  add('index_copy_', () => call('index_copy_', [r(5, 3), 0, rt.tensor([0, 2], [2], 'i64'), r(2, 3)]));
  add('where', () => rt.where(mask(3, 1), r(4), r()), () => rt.where(mask(2, 3, 1), 1, r(3, 4)), () => r(2, 3).where(mask(3), 0));
  add('masked_fill', () => r(3, 4).maskedFill(mask(4), 0), () => r(2, 3).maskedFill(mask(2, 1), 1));

  add('upload', () => rt.tensor([1, 2, 3, 4, 5, 6], [2, 3]), () => rt.tensor(new Int32Array(4)), () => rt.tensor([7], []));
  add('zeros', () => rt.zeros([2, 3]), () => rt.zeros([]));
  add('ones', () => rt.ones([0, 2]));
  add('full', () => rt.full([2], 1));
  add('rand', () => rt.rand([3, 1]));
  add('randn', () => rt.randn([2, 1, 2]));
  add('randint', () => rt.randint(0, 5, [4]));
  add('normal', () => call('normal', [0, 1, [2, 2]]));
  add('eye', () => rt.eye(3), () => rt.eye(2, 4));
  add('randperm', () => call('randperm', [5]));
  add('linspace', () => rt.linspace(0, 1, 7));
  add('arange', () => rt.arange(5), () => rt.arange(1, 10, 3), () => rt.arange(0, 1, 0.3), () => rt.arange(5, 0, -1), () => rt.arange(3, 3));

  for (const op of ['sum', 'mean', 'prod', 'amax', 'amin', 'logsumexp']) {
    add(op, () => call(op, [r(2, 3, 4)], { dim: 1 }), () => call(op, [r(2, 3, 4)], { dim: -1, keepdim: true }));
  }
  add('sum', () => r(2, 3, 4).sum(), () => r(2, 3, 4).sum([0, 2], true), () => r(2, 3, 4).sum(undefined, true), () => r().sum(0));
  add('mean', () => r(2, 3).mean([-1, 0]));
  for (const op of ['all', 'any']) add(op, () => call(op, [mask(2, 3)]), () => call(op, [mask(2, 3)], { dim: 1, keepdim: true }));
  for (const op of ['argmax', 'argmin']) add(op, () => call(op, [r(2, 3)]), () => call(op, [r(2, 3)], { dim: 0 }), () => call(op, [r(2, 3)], { dim: 1, keepdim: true }), () => call(op, [r(2, 3)], { keepdim: true }));
  add('std', () => r(2, 3, 4).std(1), () => r(2, 3).std([0, 1], true), () => r(5).std());
  add('var', () => r(2, 3, 4).var(-1, true));
  add('norm', () => r(2, 3).norm(), () => r(2, 3, 4).norm(1, [1, 2]), () => r(2, 3).norm(2, 0, true));
  add('vector_norm', () => call('vector_norm', [r(2, 3)], { dim: 1 }));
  add('matrix_norm', () => call('matrix_norm', [r(2, 3, 4)]), () => call('matrix_norm', [r(3, 4)], { keepdim: true }));

  add('matmul', () => r(3, 4).matmul(r(4, 5)), () => r(4).matmul(r(4, 5)), () => r(3, 4).matmul(r(4)), () => r(4).matmul(r(4)),
    () => r(2, 1, 3, 4).matmul(r(5, 4, 2)), () => r(4).matmul(r(2, 4, 3)));
  add('dot', () => call('dot', [r(3), r(3)]));
  add('outer', () => call('outer', [r(3), r(2)]));
  add('einsum', () => rt.einsum('ij,jk->ik', r(2, 3), r(3, 4)), () => rt.einsum('bij,bjk->bik', r(5, 2, 3), r(5, 3, 4)),
    () => rt.einsum('ii->i', r(3, 3)), () => rt.einsum('ij->', r(2, 3)), () => rt.einsum('ij,kj', r(2, 3), r(4, 3)),
    () => rt.einsum('i,j->ji', r(2), r(3)), () => rt.einsum('bi,bi->b', r(1, 3), r(4, 3)));
  add('det', () => spd(3).det(), () => r(2, 3, 3).det());
  add('svdvals', () => call('svdvals', [r(4, 3)]), () => call('svdvals', [r(2, 3, 5)]));
  add('solve', () => call('solve', [spd(3).unsqueeze(0).expand([2, 3, 3]), r(2, 3, 2)]));
  add('conv', () => call('conv', [r(2, 3, 9, 8), r(4, 3, 3, 3), null, [2, 1], [1, 0], 1, 1]), () => call('conv', [r(2, 3, 8), r(4, 3, 3), null, 1, 'same', 2, 1]));
  add('linear', () => call('linear', [r(2, 5, 3), r(4, 3), r(4)]), () => call('linear', [r(3), r(2, 3)]));
  add('mse_loss', () => call('mse_loss', [r(2, 3), r(2, 3)]), () => call('mse_loss', [r(2, 3), r(2, 3)], { reduction: 'none' }));
  add('cross_entropy', () => call('cross_entropy', [r(4, 5), idx(5, 4)]), () => call('cross_entropy', [r(4, 5), idx(5, 4)], { reduction: 'none' }),
    () => call('cross_entropy', [r(2, 5, 3), idx(5, 2, 3)], { reduction: 'none' }), () => call('cross_entropy', [r(2, 5, 3), idx(5, 2, 3)], { reduction: 'sum' }));
  add('accuracy', () => call('accuracy', [r(4, 5), idx(5, 4)]));

  add('reshape', () => r(2, 3, 4).reshape([3, -1]), () => r(2, 3, 4).reshape([24]), () => r(2, 3, 4).reshape([-1]), () => r().reshape([1, 1]), () => r(0, 3).reshape([-1, 3]));
  add('expand', () => r(3, 1).expand([2, -1, 4]), () => r(1).expand([3]));
  add('permute', () => r(2, 3, 4).permute([2, 0, 1]), () => r(2, 3).permute([-1, 0]));
  add('transpose', () => r(2, 3, 4).transpose(0, 2), () => r(2, 3).T, () => r(3).transpose(0, -1));
  add('unsqueeze', () => r(2, 3).unsqueeze(-1), () => r(2, 3).unsqueeze(0), () => r().unsqueeze(0));
  add('squeeze', () => r(1, 3, 1).squeeze(), () => r(1, 3, 1).squeeze(0), () => r(1, 3, 1).squeeze([0, 2]), () => r(1, 3, 1).squeeze(1));
  add('flatten', () => r(2, 3, 4).flatten(), () => r(2, 3, 4).flatten(1), () => r(2, 3, 4).flatten(0, 1), () => r().flatten());
  add('slice', () => r(3, 4).slice(1, 1), () => r(5, 2).slice(0, -2), () => r(3, 7).slice(1, 0, 10, 2), () => r(5).slice(0, 3, 1), () => r(5).slice(0, -10, -2));
  add('narrow', () => r(3, 5).narrow(1, 1, 3));
  add('repeat', () => call('repeat', [r(2, 3), [2, 1, 2]]), () => call('repeat', [r(3), [2]]));
  add('diag', () => call('diag', [r(3)]), () => call('diag', [r(3)], { diagonal: 1 }), () => call('diag', [r(3, 4)]),
    () => call('diag', [r(3, 4)], { diagonal: 2 }), () => call('diag', [r(3, 4)], { diagonal: -1 }));
  add('cat', () => rt.cat([r(2, 3), r(4, 3)]), () => rt.cat([r(2, 3), r(2, 1), r(2, 2)], -1));
  add('stack', () => rt.stack([r(2, 3), r(2, 3)]), () => rt.stack([r(2, 3), r(2, 3), r(2, 3)], -1));

  add('gather', () => r(3, 4).gather(1, idx(4, 3, 2)), () => r(3, 4).gather(0, idx(3, 2, 4)));
  add('index_select', () => r(3, 4).indexSelect(1, idx(4, 5)), () => r(3, 4).indexSelect(0, idx(3)));
  add('one_hot', () => call('one_hot', [idx(5, 3), 5]), () => call('one_hot', [idx(4, 2, 3), 6]));

  add('max_dim', () => r(2, 3).maxDim(1), () => r(2, 3).maxDim(0, true));
  add('min_dim', () => r(2, 3, 4).minDim(-1));
  add('sort', () => r(2, 3).sort(0));
  add('topk', () => r(2, 5).topk(3), () => r(4, 5).topk(2, 0, false));
  add('topk_mask', () => r(2, 5).topkMask(3), () => r(2, 3, 4).topkMask(24, false));
  add('qr', () => r(5, 3).qr(), () => r(5, 3).qr('complete'), () => r(2, 3, 5).qr());
  add('eigh', () => spd(4).eigh(), () => r(2, 3, 3).eigh());
  add('svd', () => r(5, 3).svd(), () => r(5, 3).svd(true), () => r(2, 4, 6).svd());
  add('split', () => r(6, 2).split([1, 2, 3]), () => call('split', [r(5, 2), 2], undefined, 3), () => r(2, 4).split([4], 1));
  add('chunk', () => r(6, 2).chunk(3), () => r(2, 5).chunk(2, 1), () => r(7).chunk(3));
  add('unbind', () => call('unbind', [r(3, 2)], undefined, 3), () => call('unbind', [r(2, 4)], { dim: 1 }, 4));
  return out;
}

describe('static shapes', () => {
  it('every shape rule agrees with the shape the runtime returns (several argument sets per op)', async () => {
    const all = cases();
    const covered = new Set(all.map(([op]) => op));
    const untested = [...RULES.keys(), ...MULTI_RULES.keys()].filter((op) => !covered.has(op));
    expect(untested, 'ops with a shape rule but no case here').toEqual([]);
    const made = all.map(([op, make]) => ({ op, outs: ([] as Tensor[]).concat(make()) }));
    // one batch: every info() below is read in the same round trip
    const infos = await Promise.all(made.flatMap(({ outs }) => outs.map((t) => t.info())));
    let k = 0;
    const wrong: string[] = [];
    for (const { op, outs } of made) {
      for (const t of outs) {
        const actual = infos[k++].shape;
        if (JSON.stringify(t.shape) !== JSON.stringify(actual)) wrong.push(`${op}: inferred ${JSON.stringify(t.shape)}, runtime ${JSON.stringify(actual)}`);
      }
    }
    expect(wrong).toEqual([]);
    expect(k).toBeGreaterThan(300);
  });

  it('size() and dim read the static shape; an unknown one is E_SHAPE naming the op that lost it', async () => {
    const x = rt.zeros([2, 3, 4]);
    expect(x.shape).toEqual([2, 3, 4]);
    expect(x.dim).toBe(3);
    expect(x.size(-1)).toBe(4);
    expect(x.size(0)).toBe(2);
    expect(() => x.size(3)).toThrow(/size\(3\) is out of range for shape \[2, 3, 4\]/);
    const picked = rt.call('masked_select', [x, x.gt(0)]) as Tensor; // data-dependent: no rule
    const y = picked.relu().mul(2);
    expect(y.shape).toBeUndefined();
    expect(() => y.size(0)).toThrow(LiaisonError);
    expect(() => y.dim).toThrow(/op 'masked_select' has no shape rule/);
    await rt.flush();
  });

  it("a model's parameters, gradients and state entries carry the shapes its description gives", async () => {
    const m = await Model.build(rt, { kind: 'mlp', sizes: [5, 4, 3] }, { seed: 0 });
    const ts = [...m.params.flatMap((p) => [m.param(p.name), m.grad(p.name)]), ...Object.values(m.state())];
    expect(ts.every((t) => t.shape !== undefined)).toBe(true);
    const infos = await Promise.all(ts.map((t) => t.info()));
    expect(ts.map((t) => t.shape)).toEqual(infos.map((i) => i.shape));
    expect(m.param(m.params[0].name).T.matmul(rt.zeros([4])).shape).toEqual([5]);
    m.handle.free();
  });

  it('eager code leaves a certain mismatch to the runtime: the op queues, its shape is unknown, the read fails', async () => {
    const bad = rt.zeros([3, 4]).matmul(rt.zeros([5, 6]));
    expect(bad.shape).toBeUndefined();
    expect(() => bad.dim).toThrow(/matmul: inner sizes differ: \[3, 4\] @ \[5, 6\] \(4 vs 5\), so the op fails in the runtime/);
    await expect(bad.data()).rejects.toThrow(LiaisonError);
  });
});

describe('static shapes inside trace()', () => {
  it('placeholders give symbolic sizes that propagate by name', async () => {
    const w = rt.randn([16, 8]);
    const seen: Record<string, unknown> = {};
    const prog = await trace(rt, {
      name: 'sym',
      inputs: { x: { shape: ['B', 'T', 16] }, bias: { shape: ['B', 1, 16] }, kv: { shape: ['B', 'H', 'T', 8] }, one: { shape: ['B', 'H', 1, 8] } },
    }, ({ x, bias, kv, one }) => {
      seen.x = x.shape;
      seen.sizes = [x.size(0), x.size(-1), x.dim];
      const h = x.add(bias);
      seen.h = h.shape;
      seen.flat = h.reshape([-1, 16]).shape;
      seen.flatten = h.flatten(0, 1).shape;
      seen.back = h.reshape([-1, 16]).reshape([-1, 4, 4]).shape;
      seen.split = h.reshape([2, -1]).shape; // B*T*16/2 = 8*B*T
      seen.proj = h.matmul(w).shape;
      seen.sum = h.matmul(w).sum(-1).shape;
      seen.scores = h.matmul(h.transpose(1, 2)).softmax(-1).shape;
      seen.cat = rt.cat([kv, one], 2).shape;
      seen.perm = kv.permute([0, 2, 1, 3]).reshape([-1, 8]).shape;
      seen.squeeze = one.squeeze(2).shape; // a number 1: dropped
      const mixed = x.sum(-1).add(kv.sum([1, 3])); // (B, T) + (B, T)
      seen.mixed = mixed.shape;
      return { y: h.matmul(w), flat: h.reshape([-1]) };
    });
    expect(seen.x).toEqual(['B', 'T', 16]);
    expect(seen.sizes).toEqual(['B', 16, 3]);
    expect(seen.h).toEqual(['B', 'T', 16]);
    expect(seen.flat).toEqual(['B*T', 16]);
    expect(seen.flatten).toEqual(['B*T', 16]);
    expect(seen.back).toEqual(['B*T', 4, 4]);
    expect(seen.split).toEqual([2, '8*B*T']);
    expect(seen.proj).toEqual(['B', 'T', 8]);
    expect(seen.sum).toEqual(['B', 'T']);
    expect(seen.scores).toEqual(['B', 'T', 'T']);
    expect(seen.cat).toEqual(['B', 'H', 'T+1', 8]);
    expect(seen.perm).toEqual(['B*H*T', 8]);
    expect(seen.squeeze).toEqual(['B', 'H', 8]);
    expect(seen.mixed).toEqual(['B', 'T']);
    // a run binds the names from its inputs: the outputs' shapes are numbers again, and right
    const x = rt.randn([2, 5, 16]);
    const out = prog.run({ x, bias: rt.randn([2, 1, 16]), kv: rt.randn([2, 3, 5, 8]), one: rt.randn([2, 3, 1, 8]) });
    expect(out.y.shape).toEqual([2, 5, 8]);
    expect(out.flat.shape).toEqual([160]);
    expect((await out.y.info()).shape).toEqual([2, 5, 8]);
    expect((await out.flat.info()).shape).toEqual([160]);
  });

  it('gives undefined, never a guess, where symbolic sizes leave the shape open', async () => {
    const seen: Record<string, unknown> = {};
    let why = '';
    await trace(rt, { name: 'open', inputs: { a: { shape: ['B'] }, b: { shape: ['T'] }, c: { shape: ['B', 'T'] }, d: {}, e: { shape: ['3', 4] } } }, ({ a, b, c, d, e }) => {
      seen.ab = a.add(b).shape; // B vs T: either may be 1
      seen.squeeze = c.squeeze().shape; // B or T may be 1
      seen.quarter = c.reshape([-1, 4]).shape; // B*T/4 cannot be told
      seen.slice = c.slice(1, 0, 2).shape; // min(2, T)
      seen.d = d.relu().shape;
      seen.e = e.shape; // '3' is a name (any size) to the runtime, not the number 3
      try { a.add(b).size(0); } catch (e) { why = (e as Error).message; }
      expect(() => d.relu().dim).toThrow(/placeholder 'd' of program 'open' declares no shape/);
      return a;
    });
    expect(seen).toEqual({ ab: undefined, squeeze: undefined, quarter: undefined, slice: undefined, d: undefined, e: undefined });
    expect(why).toMatch(/op 'add' could not tell its result's shape/);
  });

  it('reports a certain mismatch at trace time as E_SHAPE naming the op and the shapes', async () => {
    const a = rt.zeros([3, 4]), b = rt.zeros([5, 6]);
    const err = await trace(rt, { name: 'mm', inputs: {} }, () => a.matmul(b)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_SHAPE');
    expect((err as Error).message).toMatch(/matmul: inner sizes differ: \[3, 4\] @ \[5, 6\] \(4 vs 5\)/);
    const bc = await trace(rt, { name: 'bc', inputs: { x: { shape: ['N', 3] } } }, ({ x }) => x.add(rt.zeros([4]))).catch((e: unknown) => e);
    expect((bc as LiaisonError).code).toBe('E_SHAPE');
    expect((bc as Error).message).toMatch(/add: shapes \[N, 3\] and \[4\] do not broadcast \(3 vs 4\)/);
    // a symbolic size against a number is not certain: no error, the number wins
    const ok = await trace(rt, { name: 'sym-ok', inputs: { x: { shape: ['N', 'K'] } } }, ({ x }) => x.matmul(rt.zeros([4, 2])));
    ok.free();
  });

  it("a run's outputs are unknown where its inputs leave a symbolic size unbound or bind it twice", async () => {
    const prog = await trace(rt, { name: 'bind', inputs: { x: { shape: ['B', 4] }, y: { shape: ['B'] } } }, ({ x, y }) => [x.reshape([-1]), y.add(1), x.sum(0)]);
    const known = prog.run({ x: rt.zeros([3, 4]), y: rt.zeros([3]) });
    expect(known.map((t) => t.shape)).toEqual([[12], [3], [4]]);
    const twice = prog.run({ x: rt.zeros([3, 4]), y: rt.zeros([2]) }); // B is 3 and 2: nothing is concluded about B
    expect(twice.map((t) => t.shape)).toEqual([undefined, undefined, [4]]);
    const picked = (rt.call('masked_select', [rt.zeros([8]), rt.zeros([8]).ge(0)]) as Tensor).reshape([-1, 4]);
    const unbound = prog.run({ x: picked, y: picked.sum(1) });
    expect(unbound[0].shape).toBeUndefined();
    expect(() => unbound[0].size(0)).toThrow(/output 0 of program 'bind' has a size that depends on inputs of unknown shape/);
    expect((await unbound[0].info()).shape).toEqual([8]);
    prog.free();
  });

  it('state placeholders have no assumed shape (a state may change shape between runs)', async () => {
    let msg = '';
    const p = await trace(rt, { name: 'grow', state: { s: rt.zeros([1]) } }, (_, state) => {
      try { state.s.size(0); } catch (e) { msg = (e as Error).message; }
      state.s = rt.cat([state.s, rt.zeros([1])]);
    });
    expect(msg).toMatch(/state 's' of program 'grow' may change shape/);
    p.free();
  });
});
