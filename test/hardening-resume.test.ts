// Issue 9, item 8: a refused resume changes nothing. Every entry of a checkpoint (model,
// optimizer and plugin state) is checked for name, dtype and shape before anything is
// written; a truncated file is a clear error; a checkpoint is written atomically.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type TensorData } from '../bridge/index.js';
import { heavyBall } from '../plugins/momentum/heavy-ball.js';
import { magnitude } from '../plugins/pruners/magnitude.js';
import { META_TRAINER } from '../sdk/checkpoint.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import { readSafetensors, writeSafetensors } from '../sdk/safetensors.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
let data: Dataset;
let dir: string;

beforeAll(async () => {
  rt = await startRuntime();
  dir = mkdtempSync(join(tmpdir(), 'liaison-resume-'));
  const x = Float32Array.from({ length: 64 * 4 }, (_, i) => Math.sin(i));
  const y = Int32Array.from({ length: 64 }, (_, i) => i % 2);
  data = Dataset.fromArrays(rt, x, [64, 4], y);
});
afterAll(async () => {
  await rt?.close();
  rmSync(dir, { recursive: true, force: true });
});

// layers.0.weight is [8, 4], layers.0.bias [8]
const mlp = (seed: number) => Model.build(rt, { kind: 'mlp', sizes: [4, 8, 2] }, { seed });
const values = async (model: Model) => Promise.all(model.params.map(async (p) => Array.from((await model.param(p.name).toArray()) as Float32Array)));
const opts = { batchSize: 16, progress: 'none' as const, epochs: 1 };

/** A checkpoint of a trained heavy-ball (optionally pruned) run, and a copy with `edit` applied to its tensors. */
async function checkpoint(name: string, edit: (t: Record<string, TensorData>) => void, pruned = false): Promise<string> {
  const t = new Trainer({ model: await mlp(1), optimizer: heavyBall({ lr: 0.1 }), plugins: pruned ? [magnitude({ sparsity: 0.5 })] : [], ...opts });
  await t.fit(data);
  const good = join(dir, `${name}-good.safetensors`);
  await t.save(good);
  const file = await readSafetensors(good);
  edit(file.tensors);
  const bad = join(dir, `${name}.safetensors`);
  await writeSafetensors(bad, file.tensors, file.metadata);
  return bad;
}

/** Resume `path` into a fresh Trainer; expect it refused with `code` and `message`, and nothing changed. */
/** Entry `name` of a checkpoint's tensors rewritten as f64 (the same values). */
function widen(t: Record<string, TensorData>, name: string): void {
  const m = t[name];
  t[name] = { dtype: 'f64', shape: m.shape, data: Float64Array.from(m.data as Float32Array) };
}

async function refused(path: string, code: string, message: RegExp, pruned = false): Promise<void> {
  const model = await mlp(2);
  const before = await values(model);
  const t = new Trainer({ model, optimizer: heavyBall({ lr: 0.1 }), plugins: pruned ? [magnitude({ sparsity: 0.5 })] : [], ...opts });
  const err = await t.resume(path).then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(LiaisonError);
  expect((err as LiaisonError).code).toBe(code);
  expect((err as LiaisonError).message).toMatch(message);
  expect(await values(model)).toEqual(before);
  expect([t.epoch, t.step]).toEqual([0, 0]);
}

describe('Trainer.resume refuses before it changes anything', () => {
  it('an optimizer state of another shape ([8, 4] saved as [32]): E_SHAPE naming the entry, the model untouched', async () => {
    const path = await checkpoint('flat', (t) => {
      const m = t['optimizer/layers.0.weight/momentum'];
      t['optimizer/layers.0.weight/momentum'] = { ...m, shape: [32] };
    });
    await refused(path, 'E_SHAPE', /'optimizer\/layers\.0\.weight\/momentum' is f32 \[8, 4\] here, f32 \[32\] in the file/);
  });

  it('one that a copy would broadcast ([8] saved as [1]): refused, not accepted', async () => {
    const path = await checkpoint('broadcast', (t) => {
      t['optimizer/layers.0.bias/momentum'] = { dtype: 'f32', shape: [1], data: new Float32Array([3]) };
    });
    await refused(path, 'E_SHAPE', /'optimizer\/layers\.0\.bias\/momentum' is f32 \[8\] here, f32 \[1\] in the file/);
  });

  it('one of another dtype: E_DTYPE naming the entry', async () => {
    const path = await checkpoint('dtype', (t) => widen(t, 'optimizer/layers.1.bias/momentum'));
    await refused(path, 'E_DTYPE', /'optimizer\/layers\.1\.bias\/momentum' is f32 \[2\] here, f64 \[2\] in the file/);
  });

  it("a plugin's state of another shape: refused, and the model is put back after the plugins attached (the pruner prunes on attach)", async () => {
    const path = await checkpoint('mask', (t) => {
      t['pruner.layers.0.weight'] = { dtype: 'f32', shape: [1], data: new Float32Array([1]) };
    }, true);
    await refused(path, 'E_SHAPE', /'pruner\.layers\.0\.weight' is f32 \[8, 4\] here, f32 \[1\] in the file/, true);
  });

  it('a missing optimizer entry: E_ARG naming it, the model untouched', async () => {
    const path = await checkpoint('missing', (t) => { delete t['optimizer/layers.1.weight/momentum']; });
    await refused(path, 'E_ARG', /missing optimizer\/layers\.1\.weight\/momentum/);
  });

  it('a model entry of another dtype', async () => {
    const path = await checkpoint('model-dtype', (t) => widen(t, 'layers.1.bias'));
    await refused(path, 'E_DTYPE', /'layers\.1\.bias' is f32 \[2\] here, f64 \[2\] in the file/);
  });

  it('a truncated file: E_ARG naming the file, the model untouched', async () => {
    const good = await checkpoint('whole', () => undefined);
    const bytes = readFileSync(good);
    const cut = join(dir, 'truncated.safetensors');
    writeFileSync(cut, bytes.subarray(0, bytes.byteLength - 20));
    await refused(cut, 'E_ARG', /truncated\.safetensors is not a valid safetensors file.*truncated file\?/);
  });

  it("metadata that is JSON null: E_ARG naming the file and the field, not a TypeError", async () => {
    const path = await checkpoint('null-meta', () => undefined);
    const file = await readSafetensors(path);
    await writeSafetensors(path, file.tensors, { ...file.metadata, [META_TRAINER]: 'null' });
    await refused(path, 'E_ARG', /the 'liaison\.trainer' metadata of .*null-meta\.safetensors is null, not an object/);
    await writeSafetensors(path, file.tensors, { ...file.metadata, [META_TRAINER]: JSON.stringify({ ...JSON.parse(file.metadata[META_TRAINER]), step: -3 }) });
    await refused(path, 'E_ARG', /has 'step' -3; expected an integer >= 0/);
  });

  it('the untampered checkpoint still resumes', async () => {
    const path = await checkpoint('fine', () => undefined, true);
    const t = new Trainer({ model: await mlp(2), optimizer: heavyBall({ lr: 0.1 }), plugins: [magnitude({ sparsity: 0.5 })], ...opts });
    await t.resume(path);
    expect(t.epoch).toBe(1);
    const saved = await readSafetensors(path);
    expect(Array.from((await t.model.param('layers.0.weight').toArray()) as Float32Array)).toEqual(Array.from(saved.tensors['layers.0.weight'].data as Float32Array));
  });
});

describe('writeSafetensors', () => {
  it('writes beside the file and renames: a write that fails leaves neither a partial file nor a temporary one', async () => {
    const folder = join(dir, 'atomic');
    mkdirSync(join(folder, 'taken', 'inside'), { recursive: true });
    // the name is a non-empty folder: the rename fails after the bytes are written
    await expect(writeSafetensors(join(folder, 'taken'), { w: { dtype: 'f32', shape: [2], data: new Float32Array([1, 2]) } })).rejects.toThrow();
    expect(readdirSync(folder)).toEqual(['taken']);
    expect(readdirSync(join(folder, 'taken'))).toEqual(['inside']);
    // a good write over an existing file replaces it whole
    const path = join(folder, 'w.safetensors');
    await writeSafetensors(path, { w: { dtype: 'f32', shape: [1000], data: new Float32Array(1000).fill(1) } });
    await writeSafetensors(path, { w: { dtype: 'f32', shape: [2], data: new Float32Array([5, 6]) } });
    expect(Array.from((await readSafetensors(path)).tensors.w.data as Float32Array)).toEqual([5, 6]);
    expect(readdirSync(folder).sort()).toEqual(['taken', 'w.safetensors']);
  });

  it('a writer killed mid-save leaves the old file whole under the name', async () => {
    const folder = join(dir, 'killed');
    const path = join(folder, 'ck.safetensors');
    await writeSafetensors(path, { w: { dtype: 'f32', shape: [3], data: new Float32Array([1, 2, 3]) } });
    // a child writes 256 MiB over it and is killed once its write has begun
    const code = `import { writeSafetensors } from ${JSON.stringify(join(process.cwd(), 'sdk/safetensors.ts'))};
      const n = 64 * 1024 * 1024;
      await writeSafetensors(${JSON.stringify(path)}, { w: { dtype: 'f32', shape: [n], data: new Float32Array(n).fill(7) } });`;
    const child = spawn('npx', ['tsx', '--input-type=module', '-e', code], { stdio: 'ignore', detached: true });
    const exited = new Promise((res) => child.on('exit', res));
    const deadline = Date.now() + 60_000;
    const size = statSync(path).size;
    // the write has begun: a temporary file beside it, or (a writer that is not atomic) the file itself changing
    const begun = () => readdirSync(folder).some((f) => f.includes('.tmp-')) || statSync(path, { throwIfNoEntry: false })?.size !== size;
    while (Date.now() < deadline && child.exitCode === null && !begun()) await new Promise((r) => setTimeout(r, 2));
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* it finished first: the new file is whole too */ }
    await exited;
    const back = await readSafetensors(path); // whole: the old file, or the new one if the kill came late
    expect([3, 64 * 1024 * 1024]).toContain(back.tensors.w.shape[0]);
  }, 90_000);
});
