// The runtime's file operations through the SDK (issue 9, item 3): confined to the folder
// given as `fileRoot` (else the runtime's working directory), and never overwriting a file
// unless `saveFile(path, { overwrite: true })` says so.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime } from '../bridge/index.js';
import { Model } from '../sdk/model.js';
import { startRuntime } from './helpers.js';

let base: string;
let root: string;
let outside: string;
let rt: Runtime;

beforeAll(async () => {
  base = mkdtempSync(join(tmpdir(), 'liaison-files-'));
  root = join(base, 'root');
  outside = join(base, 'outside');
  mkdirSync(root);
  mkdirSync(outside);
  // relative, as a user would write it: taken from this process's working directory
  rt = await startRuntime({ fileRoot: relative(process.cwd(), root) });
});
afterAll(async () => {
  await rt?.close();
  rmSync(base, { recursive: true, force: true });
});

async function refused(run: () => void): Promise<LiaisonError> {
  run();
  try {
    await rt.flush();
  } catch (e) {
    expect(e).toBeInstanceOf(LiaisonError);
    return e as LiaisonError;
  }
  throw new Error('expected the runtime to refuse the file operation');
}

describe('file root', () => {
  it('keeps saveFile and loadFile inside fileRoot: .., absolute paths and links out are refused', async () => {
    const m = await Model.build(rt, { kind: 'mlp', sizes: [4, 3] }, { seed: 0 });
    m.saveFile('inside.safetensors'); // relative: in the root
    await rt.flush();
    expect(existsSync(join(root, 'inside.safetensors'))).toBe(true);
    for (const path of ['../outside/a.safetensors', join(outside, 'b.safetensors')]) {
      const e = await refused(() => m.saveFile(path));
      expect(e.code).toBe('E_ARG');
      expect(e.message).toContain(path);
      expect(e.message).toContain(realpathSync(root)); // as the runtime resolved it
      expect(e.message).toContain('--file-root');
    }
    symlinkSync(outside, join(root, 'out'));
    expect((await refused(() => m.saveFile('out/c.safetensors'))).message).toMatch(/outside the runtime's file root/);
    expect((await refused(() => m.loadFile('/etc/passwd'))).code).toBe('E_ARG');
    expect(readdirSync(outside)).toEqual([]);
  });

  it('refuses to replace an existing file unless asked to', async () => {
    const a = await Model.build(rt, { kind: 'mlp', sizes: [4, 3] }, { seed: 1 });
    const b = await Model.build(rt, { kind: 'mlp', sizes: [4, 3] }, { seed: 2 });
    a.saveFile('ckpt.safetensors');
    await rt.flush();
    const before = readFileSync(join(root, 'ckpt.safetensors'));
    const e = await refused(() => b.saveFile('ckpt.safetensors'));
    expect(e.code).toBe('E_ARG');
    expect(e.message).toMatch(/already exists; pass overwrite=true/);
    expect(readFileSync(join(root, 'ckpt.safetensors'))).toEqual(before);
    b.saveFile('ckpt.safetensors', { overwrite: true });
    await rt.flush();
    expect(readFileSync(join(root, 'ckpt.safetensors'))).not.toEqual(before);
  });
});
