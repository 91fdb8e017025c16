// The pythonia escape hatch (docs/python-hatch.md): objects built in the runtime's own
// interpreter through pythonia, handed to the runtime by reference.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, startWithPython, type PyObject, type PythonRuntime, type Tensor } from '../bridge/index.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(LiaisonError);
    return (e as LiaisonError).code;
  }
  throw new Error('expected a LiaisonError');
}

/** A Python value as JSON (pythonia's `valueOf`). */
async function value(p: PyObject): Promise<unknown> {
  return (await p).valueOf();
}

describe('pythonia hatch', () => {
  let rt: PythonRuntime;
  let torch: PyObject;

  beforeAll(async () => {
    const envBefore = [process.env.PYTHON_BIN, process.env.PYTHONPATH];
    // a start that fails cleanly leaves the hatch free to start again
    const bad = await startWithPython({ device: 'bogus' }).catch((e: unknown) => e as LiaisonError);
    expect(bad).toBeInstanceOf(LiaisonError);
    expect((bad as LiaisonError).code).toBe('E_SPAWN');
    expect((bad as LiaisonError).message).toMatch(/bogus/);
    rt = await startWithPython({ device: 'cpu' });
    // pythonia's environment is set only while it spawns
    expect([process.env.PYTHON_BIN, process.env.PYTHONPATH]).toEqual(envBefore);
    torch = await rt.python.import('torch');
  });

  afterAll(async () => {
    await rt?.close();
  });

  it('runs the runtime inside the pythonia interpreter', () => {
    expect(rt.python.pid).toBeGreaterThan(0);
    expect(rt.info.pid).toBe(rt.python.pid);
    expect(rt.info.ops).toEqual(expect.arrayContaining(['adopt', 'module_forward', 'module_param']));
  });

  it('adopts a tensor built through pythonia and reads it over ZeroMQ', async () => {
    // pythonia flushes a proxy chain at each call, so every call is awaited on its own
    const pyT = await (await (await torch.arange(6)).reshape(2, 3)).float();
    const t = await rt.adopt(pyT);
    expect(await t.tolist()).toEqual([[0, 1, 2], [3, 4, 5]]);
    expect(await t.info()).toMatchObject({ dtype: 'f32', shape: [2, 3] });
    expect(await t.mul(2).add(1).sum().item()).toBe(2 * 15 + 6);
    // shared, not copied: an in-place change made through pythonia shows through the handle
    await pyT.add_(10);
    expect(await t.tolist()).toEqual([[10, 11, 12], [13, 14, 15]]);
  });

  it('adopts an nn.Module and runs module_forward / module_param', async () => {
    await torch.manual_seed(0);
    const lin = await torch.nn.Linear(3, 2);
    const rows = [[1, 2, 3], [-1, 0.5, 4]];
    const pyX = await torch.tensor$(rows, { dtype: await torch.float32 });
    const expected = (await value(await (await (await lin(pyX)).detach()).tolist())) as number[][];
    // pythonia tests each attribute on a call path for truth, which a tensor refuses:
    // fetch the attribute first, then call on it
    const pyW = await lin.weight;
    const weight = (await value(await (await pyW.detach()).tolist())) as number[][];

    const mod = await rt.adopt(lin);
    const x = rt.tensor(new Float32Array(rows.flat()), [2, 3]);
    const y = rt.call('module_forward', [mod, [x]]) as Tensor;
    const got = (await y.tolist()) as number[][];
    expect(got).toHaveLength(2);
    got.flat().forEach((v, i) => expect(v).toBeCloseTo(expected.flat()[i], 5));

    const w = rt.call('module_param', [mod, 'weight']) as Tensor;
    expect(await w.info()).toMatchObject({ shape: [2, 3] });
    ((await w.tolist()) as number[][]).flat().forEach((v, i) => expect(v).toBeCloseTo(weight.flat()[i], 6));

    const missing = rt.call('module_param', [mod, 'gamma']) as Tensor;
    const err = await missing.tolist().catch((e: unknown) => e as LiaisonError);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_ARG');
    expect((err as LiaisonError).message).toMatch(/'gamma'.*weight, bias/);

    // a module handle is not a tensor: tensor ops refuse it with E_ARG
    expect(await code(mod.add(1).tolist())).toBe('E_ARG');
    expect(await code((rt.call('module_forward', [x, [x]]) as Tensor).tolist())).toBe('E_ARG');
  });

  it('refuses a stash the hatch cannot adopt', async () => {
    const err = await rt.python.stash(null).catch((e: unknown) => e as LiaisonError);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_ARG');
    expect((err as LiaisonError).message).toMatch(/ValueError: cannot stash None/);
  });

  it('refuses an adopt with a key nothing was stashed under', async () => {
    const t = rt.call('adopt', [], { key: 987_654 }) as Tensor;
    const err = await t.tolist().catch((e: unknown) => e as LiaisonError);
    expect(err).toBeInstanceOf(LiaisonError);
    expect((err as LiaisonError).code).toBe('E_ARG');
    expect((err as LiaisonError).message).toMatch(/987654/);
    // the session goes on
    expect(await rt.tensor([1, 2]).sum().item()).toBe(3);
  });

  it('stops the interpreter on close: no process is left', async () => {
    const pid = rt.python.pid;
    expect(alive(pid)).toBe(true);
    await rt.close();
    expect(rt.python.closed).toBe(true);
    expect(alive(pid)).toBe(false);
    expect(await code(rt.python.import('math'))).toBe('E_CLOSED');
    // pythonia keeps one bridge per Node process: the hatch does not open twice
    expect(await code(startWithPython())).toBe('E_SPAWN');
  });
});
