// Issue 9, item 10: state a plugin hands back under names is checked when it is traced.
// A KV policy that returns its state under a misspelled key, or none, would keep the old
// state for ever; a router whose aux loss is misspelled would train without it; an
// optimizer that replaces or adds a state entry updates nothing after the first step.
// Each is refused at trace time naming the plugin, the key and the expected keys, and
// the conformance suites fail such plugins.
import { Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { KVPolicyBase } from '../sdk/families/kv-policies/base.js';
import type { KVInputs, KVScore } from '../sdk/families/kv-policies/types.js';
import { MomentumOptimizerBase } from '../sdk/families/momentum/base.js';
import type { StepHyper } from '../sdk/families/momentum/types.js';
import { routerProgram, RouterBase } from '../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec } from '../sdk/families/routers/types.js';
import { conformanceCases, runConformance } from '../sdk/conformance/index.js';
import { Dataset } from '../sdk/data.js';
import type { ParamInfo } from '../sdk/hooks.js';
import { Model } from '../sdk/model.js';
import type { Family, PluginInstance, PluginMeta } from '../sdk/plugin.js';
import { define } from '../sdk/program.js';
import { Trainer } from '../sdk/trainer.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

const meta = (family: Family, name: string): PluginMeta => Object.freeze({ name, version: '0.0.1', family, schema: Type.Object({}), description: 'a deliberately broken plugin' });

/** Accumulated attention under the key `key`, declaring `acc`; `bare`: returns the scores alone. */
class Accumulator extends KVPolicyBase<{ budget: number }> {
  constructor(private readonly key: string, private readonly bare = false, name = 'accumulator') {
    super({ budget: 8 }, meta('kv-policy', name));
  }
  override state(): Record<string, number> { return { acc: 0 }; }
  score({ attn, state }: KVInputs): Tensor | KVScore {
    const acc = state.acc.add(attn.sum(2)); // (B, H, R, C) column sums
    return this.bare ? acc : { scores: acc, state: { [this.key]: acc } };
  }
}

/** Returns its state under a misspelled top-level key. */
class Misfiled extends KVPolicyBase<{ budget: number }> {
  constructor() { super({ budget: 8 }, meta('kv-policy', 'misfiled')); }
  override state(): Record<string, number> { return { acc: 0 }; }
  score({ attn, state }: KVInputs): KVScore {
    return { scores: attn.sum(2), stat: { acc: state.acc.add(attn.sum(2)) } } as unknown as KVScore;
  }
}

/** The load-balancing loss under a misspelled key. */
class AuxTypo extends RouterBase<{ auxWeight: number }> {
  constructor() { super({ auxWeight: 0.01 }, meta('router', 'aux-typo')); }
  params(d: RouterDims): Record<string, RouterParamSpec> { return { gate: { shape: [d.dim, d.experts], init: 'normal' } }; }
  route(x: Tensor, { gate }: Record<string, Tensor>): RouteResult {
    const weights = x.matmul(gate).softmax(-1);
    return { weights, auxLoss: weights.mean() } as unknown as RouteResult;
  }
}

/** Reassigns its velocity (`replace`) or keeps a second buffer it never declared. */
class Sloppy extends MomentumOptimizerBase<{ lr: number; schedule: 'constant'; warmupSteps: number; decaySteps: number; gamma: number; minLr: number }> {
  constructor(private readonly how: 'replace' | 'add') {
    super({ lr: 0.1, schedule: 'constant', warmupSteps: 0, decaySteps: 1, gamma: 1, minLr: 0 }, meta('momentum-optimizer', `sloppy-${how}`));
  }
  override init(_p: Tensor, info: ParamInfo, r: Runtime): Record<string, Tensor> { return { v: r.zeros(info.shape) }; }
  update(param: Tensor, grad: Tensor, state: Record<string, Tensor>, { lr }: StepHyper): void {
    if (this.how === 'replace') state.v = state.v.mul(0.9).add(grad);
    else { state.v.mul_(0.9).add_(grad); state.extra = grad.square(); }
    param.sub_(state.v.mul(lr));
  }
}

async function traceError(fn: () => unknown): Promise<LiaisonError> {
  try {
    await fn();
  } catch (e) {
    expect(e).toBeInstanceOf(LiaisonError);
    expect((e as LiaisonError).code).toBe('E_TRACE');
    return e as LiaisonError;
  }
  throw new Error('expected an E_TRACE, nothing was thrown');
}

/** Run the conformance cases whose names match; the first one must fail; its message. */
async function failed(subject: PluginInstance, name: RegExp): Promise<string> {
  const only = conformanceCases(subject.meta.family, subject).map((c) => c.name).filter((n) => name.test(n));
  expect(only.length).toBeGreaterThan(0);
  const report = await runConformance(subject, { rt, only });
  const r = report.results[0];
  expect(r.status, `${r.name}: ${r.error?.message ?? r.reason}`).toBe('failed');
  return r.error!.message;
}

describe('KV policies: state keys', () => {
  const gpt = () => Model.build(rt, { kind: 'gpt', vocab: 16, context: 16, dim: 8, layers: 1, heads: 2 }, { seed: 0 });

  it('a misspelled key, no state, or state under another key: refused by setKVPolicy naming the policy and the keys', async () => {
    const model = await gpt();
    let e = await traceError(() => model.setKVPolicy(new Accumulator('accum')));
    expect(e.message).toBe("kv-policy 'accumulator': score()'s state has unknown key 'accum', no 'acc'; expected 'acc'; state() declares 'acc'; return each (an unchanged one as it came in)");
    e = await traceError(() => model.setKVPolicy(new Accumulator('acc', true)));
    expect(e.message).toMatch(/^kv-policy 'accumulator': score\(\) returned only scores, but state\(\) declares 'acc'; return \{ scores, state: \{ acc \} \}/);
    e = await traceError(() => model.setKVPolicy(new Misfiled()));
    expect(e.message).toMatch(/^kv-policy 'misfiled': score\(\)'s result has unknown key 'stat'; expected 'scores' \(and optionally 'state'\)/);
    // the right key still works, and nothing was installed by the refused ones
    model.setKVPolicy(new Accumulator('acc'));
    await model.generate(rt.randint(0, 16, [1, 4], { seed: 1 }), { steps: 8 }).toArray();
    expect((await model.kvCacheSize()).tokens.every((n) => n <= 8)).toBe(true);
  });

  it('the conformance suite fails such a policy, in a case of its own, and passes the right one', async () => {
    const name = /^score\(\) returns its state under exactly the names/;
    expect(await failed(new Accumulator('accum', false, 'typo'), name)).toMatch(/unknown key 'accum', no 'acc'/);
    expect(await failed(new Accumulator('acc', true, 'bare'), name)).toMatch(/returned only scores/);
    const good = await runConformance(new Accumulator('acc', false, 'good'), { rt, only: conformanceCases('kv-policy', new Accumulator('acc')).map((c) => c.name).filter((n) => name.test(n)) });
    expect(good.results.map((r) => r.status)).toEqual(['passed']);
  });
});

describe('routers and optimizers: the same hole, closed in the same place', () => {
  it("a router's aux loss under a misspelled key is refused, not dropped", async () => {
    const e = await traceError(() => routerProgram(rt, new AuxTypo(), { dim: 8, experts: 3 }));
    expect(e.message).toBe("router 'aux-typo': route()'s result has unknown key 'auxLoss'; expected 'weights' (and optionally 'aux', 'zloss', 'probs')");
  });

  it('an optimizer that replaces or adds a state entry fails the step trace naming the entry', async () => {
    const data = Dataset.fromArrays(rt, Float32Array.from({ length: 32 }, (_, i) => Math.cos(i)), [8, 4], Int32Array.from({ length: 8 }, (_, i) => i % 2));
    const fit = async (how: 'replace' | 'add') => {
      const model = await Model.build(rt, { kind: 'mlp', sizes: [4, 2] }, { seed: 0 });
      return new Trainer({ model, optimizer: new Sloppy(how), progress: 'none', epochs: 1, batchSize: 8 }).fit(data);
    };
    let e = await traceError(() => fit('replace'));
    expect(e.message).toMatch(/^momentum-optimizer 'sloppy-replace': update\(\) replaced state 'v' of 'layers\.0\.weight' with a new tensor \(state\.v = …\), which is lost after the step; update the tensors init\(\) made in place/);
    e = await traceError(() => fit('add'));
    expect(e.message).toMatch(/^momentum-optimizer 'sloppy-add': update\(\)'s state of 'layers\.0\.weight' has unknown key 'extra'; expected 'v'/);
    // and the momentum suite names it in its first traced case
    expect(await failed(new Sloppy('replace'), /^update\(\) traces/)).toMatch(/replaced state 'v'/);
  });

  it("a program's state set under an undeclared name (the shared define()) is refused, not lost", async () => {
    const e = await traceError(() => define(rt, { name: 'counter', state: { step: rt.zeros([]) } }, (_i, st) => {
      (st as Record<string, Tensor>).stpe = st.step.add(1);
    }));
    expect(e.message).toBe("program 'counter': the traced function set state 'stpe', which spec.state does not declare (it declares 'step'); a state is threaded only under its declared name");
  });
});
