// Models end to end through a real runtime: specs, parameters and gradients by name,
// activations, checkpoints (and their interop with Python's safetensors), factory models.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor, type TensorData } from '../bridge/index.js';
import { resolvePython, runtimeEnv } from '../bridge/launcher.js';
import { topk } from '../plugins/index.js';
import { META_SPEC, Model } from '../sdk/model.js';
import { GPT_DEFAULT_DIM, type GPTSpec, type ModelSpec, moeDims, runtimeSpec } from '../sdk/model-spec.js';
import { parseSafetensors, readSafetensors, writeSafetensors } from '../sdk/safetensors.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
let dir: string;
beforeAll(async () => {
  // one intra-op thread: these models are tiny, and two test files share two cores
  // (more threads than cores make torch's workers spin against each other)
  dir = mkdtempSync(join(tmpdir(), 'liaison-model-'));
  rt = await startRuntime({ fileRoot: dir }); // the runtime writes its files into this folder
});
afterAll(async () => {
  await rt?.close();
  rmSync(dir, { recursive: true, force: true });
});

const MLP: ModelSpec = { kind: 'mlp', sizes: [4, 8, 3] };

function caught(fn: () => unknown): LiaisonError {
  try {
    fn();
  } catch (e) {
    return e as LiaisonError;
  }
  throw new Error('expected a throw');
}

async function rejected(p: Promise<unknown>): Promise<LiaisonError> {
  return p.then(() => { throw new Error('expected a rejection'); }, (e: LiaisonError) => e);
}

type Described = { tensors: Record<string, { dtype: string; shape: number[]; values: unknown[] }>; metadata: Record<string, string> };

/** Run test/safetensors_interop.py: Python writes `out` and reads `into`, and says what each holds. */
async function python(out: string, into: string): Promise<{ written: Described; read: Described }> {
  const { stdout } = await promisify(execFile)(resolvePython(), [join(import.meta.dirname, 'safetensors_interop.py'), out, into], { env: runtimeEnv({ OMP_NUM_THREADS: '1' }), encoding: 'utf8' });
  return JSON.parse(stdout);
}

/** A TensorData in the interop script's JSON form. */
function described(t: TensorData): { dtype: string; shape: number[]; values: unknown[] } {
  const values = Array.from(t.data as ArrayLike<number | bigint>, (v) => (typeof v === 'bigint' ? v.toString() : v));
  return { dtype: t.dtype, shape: t.shape, values };
}

describe('models', () => {
  it('builds an MLP whose parameters are reachable by name', async () => {
    const m = await Model.build(rt, MLP, { seed: 0 });
    expect(m.kind).toBe('mlp');
    expect(m.params.map((p) => [p.name, p.shape])).toEqual([
      ['layers.0.weight', [8, 4]], ['layers.0.bias', [8]], ['layers.1.weight', [3, 8]], ['layers.1.bias', [3]],
    ]);
    expect(m.stateInfo.map((s) => s.name)).toEqual(m.params.map((p) => p.name));
    expect(m.hookPoints).toEqual({ kv: 0, router: 0 });
    // the parameter is the model's own: an in-place change shows in the forward
    const x = rt.tensor([1, 2, 3, 4], [1, 4]);
    const before = await m.forward(x, { train: false }).tolist() as number[][];
    m.param('layers.1.bias').add_(1);
    const after = await m.forward(x, { train: false }).tolist() as number[][];
    after[0].forEach((v, i) => expect(v).toBeCloseTo(before[0][i] + 1, 5));
    // the same seed gives the same weights
    const twin = await Model.build(rt, MLP, { seed: 0 });
    expect(await twin.param('layers.0.weight').tolist()).toEqual(await m.param('layers.0.weight').tolist());
  });

  it('refuses an unknown parameter name at once, listing the names', () => {
    return Model.build(rt, MLP).then((m) => {
      const e = caught(() => m.param('layers.2.weight'));
      expect(e).toBeInstanceOf(LiaisonError);
      expect(e.code).toBe('E_ARG');
      expect(e.message).toMatch(/no parameter 'layers\.2\.weight'; it has layers\.0\.weight, layers\.0\.bias, layers\.1\.weight, layers\.1\.bias/);
      expect(caught(() => m.grad('nope')).code).toBe('E_ARG');
    });
  });

  it('refuses bad specs with the field named', async () => {
    const typo = await rejected(Model.build(rt, { kind: 'mlp', sizes: [2, 2], activaton: 'relu' } as never));
    expect(typo.code).toBe('E_ARG');
    expect(typo.message).toMatch(/'activaton' is not known; allowed: kind, sizes, activation/);
    const value = await rejected(Model.build(rt, { kind: 'gpt', vocab: 16, context: 8, dim: 10, heads: 4 }));
    expect(value.code).toBe('E_ARG');
    expect(value.message).toMatch(/heads/);
  });

  it('computes gradients by name after backward', async () => {
    const m = await Model.build(rt, MLP, { seed: 1 });
    const x = rt.randn([5, 4], { seed: 2 });
    expect(await m.grad('layers.1.bias').tolist()).toEqual([0, 0, 0]); // none yet
    rt.call('backward', [m.forward(x).sum()], undefined, 0);
    // d(sum of outputs)/d(output bias) is the batch size, for every output
    expect(await m.grad('layers.1.bias').tolist()).toEqual([5, 5, 5]);
    const g0 = await m.grad('layers.0.weight').toArray() as Float32Array;
    expect(g0.some((v) => v !== 0)).toBe(true);
    rt.call('zero_grad', [m.handle], undefined, 0);
    expect(await m.grad('layers.1.bias').tolist()).toEqual([0, 0, 0]);
  });

  it('captures activations by submodule name', async () => {
    const m = await Model.build(rt, MLP, { seed: 3 });
    m.capture(['acts.0', 'layers.1']);
    const x = rt.randn([2, 4], { seed: 4 });
    const y = m.forward(x, { train: false });
    const hidden = x.matmul(m.param('layers.0.weight').T).add(m.param('layers.0.bias')).relu();
    const got = await m.activation('acts.0').toArray() as Float32Array;
    const want = await hidden.toArray() as Float32Array;
    got.forEach((v, i) => expect(v).toBeCloseTo(want[i], 6));
    expect(await m.activation('layers.1').tolist()).toEqual(await y.tolist());
    const e = caught(() => m.activation('layers.0'));
    expect(e.message).toMatch(/'layers\.0' is not captured.*captured: acts\.0, layers\.1/);
  });

  it('builds a CNN that classifies digits-shaped inputs', async () => {
    const m = await Model.build(rt, { kind: 'cnn', image: [8, 8], channels: [4, 8], hidden: 16, classes: 10 }, { seed: 0 });
    expect(m.params.map((p) => p.name)).toEqual(['convs.0.weight', 'convs.0.bias', 'convs.1.weight', 'convs.1.bias', 'fc.weight', 'fc.bias', 'head.weight', 'head.bias']);
    const [X] = rt.call('dataset', ['digits'], undefined, 2) as Tensor[];
    const batch = X.slice(0, 0, 32); // (32, 64) flat 8x8 images
    expect((await m.forward(batch).info()).shape).toEqual([32, 10]);
    expect((await m.forward(batch.reshape([32, 1, 8, 8])).info()).shape).toEqual([32, 10]);
  });

  it('builds a GPT with one KV hook point per layer', async () => {
    const m = await Model.build(rt, { kind: 'gpt', vocab: 32, context: 16, dim: 16, layers: 3, heads: 2 }, { seed: 0 });
    expect(m.kind).toBe('gpt');
    expect(m.hookPoints).toEqual({ kv: 3, router: 0 });
    const tokens = rt.randint(0, 32, [2, 10], { seed: 1 });
    expect((await m.forward(tokens).info()).shape).toEqual([2, 10, 32]);
    expect(caught(() => m.setRouter(null as never)).code).toBe('E_ARG');
  });

  it('builds any nn.Module from a factory reference', async () => {
    const m = await Model.build(rt, { kind: 'factory', ref: 'torch.nn:Linear', kwargs: { in_features: 4, out_features: 2 } }, { seed: 5 });
    expect(m.kind).toBe('factory');
    expect(m.params.map((p) => [p.name, p.shape])).toEqual([['weight', [2, 4]], ['bias', [2]]]);
    const x = rt.randn([3, 4], { seed: 6 });
    const got = await m.forward(x, { train: false }).toArray() as Float32Array;
    const want = await x.matmul(m.param('weight').T).add(m.param('bias')).toArray() as Float32Array;
    got.forEach((v, i) => expect(v).toBeCloseTo(want[i], 6));
    const bad = await rejected(Model.build(rt, { kind: 'factory', ref: 'torch.nn:NoSuchLayer' }));
    expect(bad.message).toMatch(/ref.*NoSuchLayer/);
  });

  it('outlives an enclosing rt.scope(), router program included', async () => {
    const m = await rt.scope(async () => Model.build(rt, MLP, { seed: 0 }));
    expect((await m.forward(rt.ones([1, 4])).info()).shape).toEqual([1, 3]); // 'tensor #… was freed' before
    const spec: GPTSpec = { kind: 'gpt', vocab: 16, context: 8, dim: 8, layers: 1, heads: 2, moe: { experts: 2, hidden: 8, router: topk() } };
    const g = await rt.scope(async () => Model.build(rt, spec, { seed: 0 }));
    expect((await g.forward(rt.randint(0, 16, [1, 5], { seed: 1 })).info()).shape).toEqual([1, 5, 16]);
    g.free();
  });

  it('checks the MoE sizes before asking the router, naming the field', async () => {
    const gpt = (moe: object): GPTSpec => ({ kind: 'gpt', vocab: 16, context: 8, dim: 8, heads: 2, moe: { experts: 2, hidden: 8, router: topk(), ...moe } });
    // experts 0 used to reach topk's params() and come back as 'k is more than 0 experts'
    const e = await rejected(Model.build(rt, gpt({ experts: 0 })));
    expect(e.code).toBe('E_ARG');
    expect(e.message).toMatch(/spec field 'moe\.experts' must be a positive integer, got 0/);
    expect((await rejected(Model.build(rt, gpt({ hidden: 2.5 })))).message).toMatch(/'moe\.hidden' must be a positive integer, got 2\.5/);
    expect((await rejected(Model.build(rt, { ...gpt({}), dim: -8 }))).message).toMatch(/'dim' must be a positive integer, got -8/);
  });

  it('resolves a GPT\'s width in one place: the router\'s dims are the built model\'s', async () => {
    const spec: GPTSpec = { kind: 'gpt', vocab: 16, context: 8, heads: 2, layers: 1, moe: { experts: 3, hidden: 8, router: topk() } };
    const dims = moeDims(spec)!;
    expect(dims).toEqual({ dim: GPT_DEFAULT_DIM, experts: 3 });
    expect(runtimeSpec(spec).dim).toBe(dims.dim); // sent, not left to the runtime's own default
    const m = await Model.build(rt, spec, { seed: 0 });
    expect(m.params.find((p) => p.name.endsWith('moe.router.gate'))?.shape).toEqual([dims.dim, dims.experts]);
    m.free();
  });

  it('wraps a handle the runtime already holds', async () => {
    const m = await Model.build(rt, MLP, { seed: 7 });
    const same = await Model.fromHandle(rt, m.handle);
    expect(same.params).toEqual(m.params);
    expect(await same.param('layers.0.bias').tolist()).toEqual(await m.param('layers.0.bias').tolist());
    const e = await rejected(Model.fromHandle(rt, rt.zeros([2])));
    expect(e.code).toBe('E_ARG');
    expect(e.message).toMatch(/not a model/);
  });
});

describe('checkpoints', () => {
  it('round-trips a model and extra tensors through save and load', async () => {
    const a = await Model.build(rt, MLP, { seed: 10 });
    const path = join(dir, 'mlp.safetensors');
    await a.save(path, { tensors: { 'optimizer.step': rt.tensor(BigInt64Array.from([42n]), []) }, metadata: { note: 'hello' } });
    const b = await Model.build(rt, MLP, { seed: 11 });
    expect(await b.param('layers.0.weight').tolist()).not.toEqual(await a.param('layers.0.weight').tolist());
    const { tensors, metadata } = await b.load(path);
    for (const p of a.params) expect(await b.param(p.name).tolist()).toEqual(await a.param(p.name).tolist());
    expect(Object.keys(tensors)).toEqual(['optimizer.step']);
    expect(await tensors['optimizer.step'].item()).toBe(42);
    expect(metadata.note).toBe('hello');
    expect(metadata.format).toBe('pt');
    expect(JSON.parse(metadata[META_SPEC])).toEqual(MLP);
    // the spec in the metadata is enough to build the model again
    const { model: c } = await Model.fromCheckpoint(rt, path);
    const x = rt.randn([2, 4], { seed: 12 });
    expect(await c.forward(x, { train: false }).tolist()).toEqual(await a.forward(x, { train: false }).tolist());
  });

  it('names the missing entries when a strict load does not match', async () => {
    const m = await Model.build(rt, MLP, { seed: 13 });
    const state = m.state();
    const partial = Object.fromEntries(await Promise.all(Object.entries(state).filter(([k]) => k !== 'layers.1.bias').map(async ([k, t]) => [k, await t.data()] as const)));
    const path = join(dir, 'partial.safetensors');
    await writeSafetensors(path, partial);
    const other = await Model.build(rt, MLP, { seed: 14 });
    const e = await rejected(other.load(path));
    expect(e.code).toBe('E_ARG');
    expect(e.message).toMatch(/missing layers\.1\.bias/);
    const bias = await other.param('layers.1.bias').tolist();
    await other.load(path, { strict: false }); // loads what is there
    expect(await other.param('layers.0.weight').tolist()).toEqual(await m.param('layers.0.weight').tolist());
    expect(await other.param('layers.1.bias').tolist()).toEqual(bias);
    const e2 = caught(() => other.loadState({ 'layers.0.weight': state['layers.0.weight'], extra: state['layers.0.bias'] }));
    expect(e2.message).toMatch(/missing layers\.0\.bias, layers\.1\.weight, layers\.1\.bias; unexpected extra/);
    // a model of another width: the shapes are refused before anything is uploaded
    const wide = await Model.build(rt, { kind: 'mlp', sizes: [4, 6, 3] });
    const e3 = await rejected(wide.load(join(dir, 'mlp.safetensors')));
    expect(e3.code).toBe('E_SHAPE');
    expect(e3.message).toMatch(/layers\.0\.weight is \[8,4\] in the file, \[6,4\] in the model/);
  });

  it('writes checkpoints the runtime (Python safetensors) loads, and loads the ones it writes', async () => {
    const gpt: ModelSpec = { kind: 'gpt', vocab: 32, context: 16, dim: 16, layers: 2, heads: 2 };
    const a = await Model.build(rt, gpt, { seed: 20 });
    const b = await Model.build(rt, gpt, { seed: 21 });
    const ours = join(dir, 'gpt.safetensors');
    await a.save(ours);
    b.loadFile(ours);
    const x = rt.randint(0, 32, [1, 8], { seed: 22 });
    expect(await b.forward(x, { train: false }).tolist()).toEqual(await a.forward(x, { train: false }).tolist());
    // and the other way: a Hugging Face style folder written by the runtime
    const c = await Model.build(rt, gpt, { seed: 23 });
    const folder = join(dir, 'hf');
    c.saveFile(folder);
    await rt.flush();
    await b.load(join(folder, 'model.safetensors'));
    expect(await b.forward(x, { train: false }).tolist()).toEqual(await c.forward(x, { train: false }).tolist());
    const d = await Model.build(rt, gpt, { seed: 24 });
    d.loadFile(folder); // the folder itself, as a Hugging Face model folder is given
    expect(await d.forward(x, { train: false }).tolist()).toEqual(await c.forward(x, { train: false }).tolist());
  });
});

describe('safetensors', () => {
  const sample = (): Record<string, TensorData> => ({
    f32: { dtype: 'f32', shape: [2, 3], data: Float32Array.from([-0.25, -0.15, -0.05, 0.05, 0.15, 0.25]) },
    f64: { dtype: 'f64', shape: [3], data: Float64Array.from([3.141592653589793, -2.718281828459045, 1e-300]) },
    f16: { dtype: 'f16', shape: [2, 2], data: Float32Array.from([1.5, -2.25, 65504, 6.1e-5]) },
    bf16: { dtype: 'bf16', shape: [4], data: Float32Array.from([1, -3.5, 1e30, 0.1]) },
    i32: { dtype: 'i32', shape: [3], data: Int32Array.from([-7, 0, 2 ** 31 - 1]) },
    i64: { dtype: 'i64', shape: [3], data: BigInt64Array.from([-(2n ** 62n), 5n, 2n ** 53n + 1n]) },
    u8: { dtype: 'u8', shape: [3], data: Uint8Array.from([0, 255, 7]) },
    bool: { dtype: 'bool', shape: [3], data: Uint8Array.from([1, 0, 1]) },
    scalar: { dtype: 'f32', shape: [], data: Float32Array.from([2.5]) },
    empty: { dtype: 'f32', shape: [0, 3], data: new Float32Array(0) },
  });

  it('reads files written by Python, and Python reads ours, for every dtype', async () => {
    const theirs = join(dir, 'python.safetensors');
    const ours = join(dir, 'ours.safetensors');
    await writeSafetensors(ours, sample(), { writer: 'liaison' });
    const { written: ref, read: back } = await python(theirs, ours);
    expect(Object.keys(ref.tensors).sort()).toEqual(Object.keys(sample()).sort());
    // Python's file, read here
    const got = await readSafetensors(theirs);
    expect(got.metadata).toEqual({ writer: 'python', format: 'pt' });
    expect(Object.fromEntries(Object.entries(got.tensors).map(([k, t]) => [k, described(t)]))).toEqual(ref.tensors);
    // our file, read by Python: the same values as Python's own
    expect(back.metadata).toEqual({ writer: 'liaison' });
    expect(back.tensors).toEqual(ref.tensors);
    // and a tensor read here uploads to the runtime unchanged
    const f16 = got.tensors.f16;
    expect(await rt.tensor(f16.data, f16.shape, f16.dtype).to('f64').tolist()).toEqual([[1.5, -2.25], [65504, ref.tensors.f16.values[3]]]);
  });

  it('refuses corrupt files, saying what is wrong', async () => {
    const good = join(dir, 'good.safetensors');
    await writeSafetensors(good, { w: { dtype: 'f32', shape: [4], data: Float32Array.from([1, 2, 3, 4]) } });
    const bytes = (await import('node:fs')).readFileSync(good);
    const msg = (b: Uint8Array) => caught(() => parseSafetensors(b, 'x')).message;
    expect(msg(bytes.subarray(0, 5))).toMatch(/fewer than the 8/);
    expect(msg(bytes.subarray(0, bytes.length - 4))).toMatch(/'w' ends at byte 16 of the data, which has 12 \(truncated file\?\)/);
    const huge = Buffer.from(bytes);
    huge.writeBigUInt64LE(1n << 40n);
    expect(msg(huge)).toMatch(/header length is \d+ bytes \(at most/);
    const garbled = Buffer.from(bytes);
    garbled[9] = 0x7b; // '{{' is not JSON
    expect(msg(garbled)).toMatch(/not UTF-8 JSON/);
    const withHeader = (h: object, data = 0) => {
      const json = Buffer.from(JSON.stringify(h));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      return Buffer.concat([len, json, Buffer.alloc(data)]);
    };
    expect(caught(() => parseSafetensors(withHeader({ a: { dtype: 'I16', shape: [1], data_offsets: [0, 2] } }, 2))).code).toBe('E_DTYPE');
    expect(msg(withHeader({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4))).toMatch(/needs 8 bytes, its data_offsets span 4/);
    expect(msg(withHeader({ a: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8))).toMatch(/bytes 0\.\.4 of the data belong to no tensor/);
    expect(msg(withHeader({ a: { dtype: 'U8', shape: [1], data_offsets: [0, 1] } }, 3))).toMatch(/has 3 bytes but the tensors cover 1/);
    expect(msg(withHeader({ __metadata__: { n: 1 } }))).toMatch(/metadata 'n' is a number/);
    // names from the file are data, never Object.prototype's: '__proto__' and 'constructor'
    // are entries like any other (a plain object dropped the first and pretended to have the second)
    const json = '{"__metadata__":{"__proto__":"m"},"__proto__":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}';
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
    const odd = parseSafetensors(Buffer.concat([len, Buffer.from(json), Buffer.from([7, 9])]));
    expect(Object.keys(odd.tensors).sort()).toEqual(['__proto__', 'w']);
    expect(Array.from(odd.tensors['__proto__'].data as Uint8Array)).toEqual([7]);
    expect(Object.keys(odd.metadata)).toEqual(['__proto__']);
    expect('constructor' in odd.tensors).toBe(false);
    // and written back under the same name
    const back = join(dir, 'proto.safetensors');
    await writeSafetensors(back, odd.tensors, odd.metadata);
    expect(Object.keys((await readSafetensors(back)).tensors).sort()).toEqual(['__proto__', 'w']);
    const path = join(dir, 'corrupt.safetensors');
    writeFileSync(path, garbled);
    expect((await rejected(readSafetensors(path))).message).toContain(path);
    // writing checks the data against the shape
    const e = await rejected(writeSafetensors(join(dir, 'bad.safetensors'), { w: { dtype: 'f32', shape: [3], data: new Float32Array(2) } }));
    expect(e.message).toMatch(/'w' has shape \[3\] \(3 elements\) but 2 values/);
  });
});
