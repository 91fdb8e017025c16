// Issue 9, item 11 (the SDK's side): caller mistakes are reported as what they are — a
// NaN as NaN, a bad choice with the allowed ones, broken checkpoint metadata as an E_ARG
// naming the file and field, a plugin of the wrong family (from untyped JavaScript) as an
// E_ARG saying what was expected and what came.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime } from '../bridge/index.js';
import { slidingWindow } from '../plugins/kv-policies/sliding-window.js';
import { gd } from '../plugins/momentum/gd.js';
import { heavyBall } from '../plugins/momentum/heavy-ball.js';
import { magnitude } from '../plugins/pruners/magnitude.js';
import { META_SPEC, Model } from '../sdk/model.js';
import { shown } from '../sdk/plugin.js';
import { readSafetensors, writeSafetensors } from '../sdk/safetensors.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
let dir: string;
beforeAll(async () => {
  rt = await startRuntime();
  dir = mkdtempSync(join(tmpdir(), 'liaison-errors-'));
});
afterAll(async () => {
  await rt?.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The LiaisonError `fn` throws (synchronously or not). */
async function caught(fn: () => unknown): Promise<LiaisonError> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(LiaisonError);
    return e as LiaisonError;
  }
  throw new Error('expected a LiaisonError, nothing was thrown');
}

const untyped = (v: unknown) => v as never; // what plain JavaScript passes

describe('plugin and trainer configs', () => {
  it('say NaN and Infinity, not null', async () => {
    expect((await caught(() => gd({ lr: NaN }))).message).toMatch(/config field 'lr' .*: expected a finite number, got NaN$/);
    expect((await caught(() => gd({ lr: Infinity }))).message).toMatch(/expected a finite number, got Infinity$/);
    expect((await caught(() => heavyBall({ momentum: -Infinity }))).message).toMatch(/config field 'momentum'.*got -Infinity$/);
    expect(shown({ a: NaN, b: [1, Infinity] })).toBe('{"a":"NaN","b":[1,"Infinity"]}');
  });

  it('list the allowed values of a choice', async () => {
    const e = await caught(() => gd({ schedule: untyped('cosin') }));
    expect(e.code).toBe('E_ARG');
    expect(e.param).toBe('schedule');
    expect(e.message).toMatch(/config field 'schedule' .*: expected one of "constant", "step", "cosine", "linear", got "cosin"$/);
    const model = await Model.build(rt, { kind: 'mlp', sizes: [2, 2] });
    expect((await caught(() => new Trainer({ model, optimizer: gd(), loss: untyped('l1') }))).message).toMatch(/config field 'loss' .*: expected one of "cross_entropy", "mse", got "l1"$/);
    expect((await caught(() => new Trainer({ model, optimizer: gd(), nonFinite: untyped('ignore') }))).message).toMatch(/config field 'nonFinite' .*: expected one of "error", "skip", got "ignore"$/);
  });
});

describe('family setters and attach points, called from plain JavaScript', () => {
  it('Model.setKVPolicy and setRouter name what they got', async () => {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [2, 2] });
    let e = await caught(() => model.setKVPolicy(untyped(gd())));
    expect(e.code).toBe('E_ARG');
    expect(e.message).toBe("Model.setKVPolicy: policy must be a KVPolicy (a 'kv-policy' plugin instance), got a momentum-optimizer plugin 'gd'");
    e = await caught(() => model.setKVPolicy(untyped(slidingWindow)));
    expect(e.message).toMatch(/got the kv-policy factory 'sliding-window' itself \(call it for an instance: sliding-window\(\{ … \}\)\)/);
    e = await caught(() => model.setKVPolicy(untyped({ budget: 4 })));
    expect(e.message).toMatch(/policy must be a KVPolicy .*got a plain object \(it lacks cache, state, score\)/);
    e = await caught(() => model.setRouter(untyped(slidingWindow())));
    expect(e.message).toBe("Model.setRouter: router must be a Router (a 'router' plugin instance), got a kv-policy plugin 'sliding-window'");
    e = await caught(() => model.setRouter(untyped(7)));
    expect(e.message).toMatch(/router must be a Router .*got a number \(7\)/);
  });

  it("a GPT spec's moe.router names what it got", async () => {
    const e = await caught(() => Model.build(rt, { kind: 'gpt', vocab: 8, context: 8, moe: { experts: 2, hidden: 4, router: untyped(gd()) } }));
    expect(e.message).toBe("Model.build: spec field 'moe.router' must be a Router plugin instance (with params() and route()), got a momentum-optimizer plugin 'gd'");
  });

  it("the Trainer's optimizer and plugins name what they got", async () => {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [2, 2] });
    let e = await caught(() => new Trainer({ model, optimizer: untyped(slidingWindow()) }));
    expect(e.message).toBe("Trainer: optimizer must be a MomentumOptimizer (a 'momentum-optimizer' plugin instance), got a kv-policy plugin 'sliding-window'");
    e = await caught(() => new Trainer({ model, optimizer: gd(), plugins: [magnitude(), untyped(gd())] }));
    expect(e.message).toMatch(/plugins must be a list of plugins with attach\(hooks\) \(pruners, routers\), got a momentum-optimizer plugin 'gd' at \[1\]/);
  });
});

describe('checkpoint metadata', () => {
  it("a 'liaison.spec' that is null or not JSON: E_ARG naming the file and the field", async () => {
    const model = await Model.build(rt, { kind: 'mlp', sizes: [2, 2] });
    const path = join(dir, 'spec.safetensors');
    await model.save(path);
    const file = await readSafetensors(path);
    const moe = JSON.stringify({ kind: 'gpt', vocab: 8, context: 8, moe: { experts: 2, hidden: 4, router: null } });
    for (const [text, msg] of [
      ['null', /the 'liaison\.spec' metadata of .*spec\.safetensors is null, not a model spec object/],
      ['{', /the 'liaison\.spec' metadata of .*spec\.safetensors is not JSON/],
      [moe, /the 'liaison\.spec' metadata of .*spec\.safetensors has moe\.router null, not \{plugin, config\}/],
    ] as const) {
      await writeSafetensors(path, file.tensors, { ...file.metadata, [META_SPEC]: text });
      const e = await caught(() => Model.fromCheckpoint(rt, path));
      expect(e.code).toBe('E_ARG');
      expect(e.message).toMatch(msg);
    }
  });
});
