// Every registered plugin through its family's conformance suite, one test per case; and
// the suites themselves, shown to fail plugins that break their family's contract.
import { Type } from '@sinclair/typebox';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { type ConformanceOptions, conformanceCases, runConformance } from '../sdk/conformance/index.js';
import { KVPolicyBase } from '../sdk/families/kv-policies/base.js';
import type { KVInputs, KVScore } from '../sdk/families/kv-policies/types.js';
import { MomentumOptimizerBase } from '../sdk/families/momentum/base.js';
import type { StepHyper } from '../sdk/families/momentum/types.js';
import { PrunerBase, type PrunerBaseConfig } from '../sdk/families/pruners/base.js';
import type { PrunableWeight, PruneContext } from '../sdk/families/pruners/types.js';
import { RouterBase } from '../sdk/families/routers/base.js';
import type { RouteResult, RouterDims, RouterParamSpec } from '../sdk/families/routers/types.js';
import { FAMILIES, type Family, type PluginFactory, type PluginInstance, type PluginMeta, plugins } from '../sdk/plugin.js';
import '../plugins/index.js';
import { Magnitude, MagnitudeConfig } from '../plugins/pruners/magnitude.js';
import type { TrainingHooks } from '../sdk/hooks.js';
import { startRuntime } from './helpers.js';

let rt: Runtime;
beforeAll(async () => { rt = await startRuntime(); });
afterAll(async () => { await rt?.close(); });

/** Per-plugin suite options (`family/name`), e.g. more steps for an iterative deflator. */
const OPTIONS: Record<string, Omit<ConformanceOptions, 'rt'>> = {};

for (const family of FAMILIES) {
  describe(`${family} suite`, () => {
    const registered = plugins(family);
    it('has at least one reference plugin', () => { expect(registered.length).toBeGreaterThan(0); });
    for (const factory of registered) {
      const options = OPTIONS[`${family}/${factory.name}`] ?? {};
      describe(factory.name, () => {
        for (const c of conformanceCases(family, factory, options)) {
          if (c.skip !== undefined) {
            it.skip(`${c.name} — skipped: ${c.skip}`, () => {});
            continue;
          }
          it(c.name, async (t) => {
            const { results: [r] } = await runConformance(factory, { ...options, rt, only: [c.name] });
            if (r.status === 'skipped') t.skip(r.reason);
            if (r.error) throw r.error;
            expect(r.status).toBe('passed');
          });
        }
      });
    }
  });
}

describe('a suite run', () => {
  it('leaves the runtime holding what it held: models, programs, trainers and data are freed', async () => {
    for (const family of FAMILIES) await runConformance(plugins(family)[0], { rt }); // warm: registrations, caches
    const base = (await rt.stats()).objects;
    for (const family of FAMILIES) {
      const report = await runConformance(plugins(family)[0], { rt });
      expect(report.ok, `${report.plugin}: ${report.results.filter((r) => r.error).map((r) => r.error!.message).join('; ')}`).toBe(true);
    }
    // what a case keeps (a program, a trainer's state, a dataset) outlives its scope: the
    // suites free it themselves
    expect((await rt.stats()).objects).toBeLessThanOrEqual(base);
  });
});

// ---- the suites fail what breaks a contract ----

const meta = (family: Family, name: string): PluginMeta => Object.freeze({ name, version: '0.0.1', family, schema: Type.Object({}), description: 'a deliberately broken plugin' });

/** Reads a value inside update(): cannot be traced. */
class ReadingOptimizer extends MomentumOptimizerBase<{ lr: number }> {
  update(param: Tensor, grad: Tensor, _s: Record<string, Tensor>, { lr }: StepHyper): void {
    void grad.sum().item().catch(() => undefined); // refused at trace time: E_TRACE
    param.sub_(grad.mul(lr));
  }
}

/** Climbs the gradient. */
class AscendingOptimizer extends MomentumOptimizerBase<{ lr: number }> {
  update(param: Tensor, grad: Tensor, _s: Record<string, Tensor>, { lr }: StepHyper): void {
    param.add_(grad.mul(lr));
  }
}

/** Keeps its velocity by reassigning the state entry: lost after the step. */
class ReassigningOptimizer extends MomentumOptimizerBase<{ lr: number }> {
  override init(_p: Tensor, info: { shape: number[] }, r: Runtime): Record<string, Tensor> { return { v: r.zeros(info.shape) }; }
  update(param: Tensor, grad: Tensor, state: Record<string, Tensor>, { lr }: StepHyper): void {
    state.v = state.v.mul(0.9).add(grad);
    param.sub_(state.v.mul(lr));
  }
}

/** Prunes half of whatever it is asked, and returns masks as 0/2. */
class SloppyPruner extends PrunerBase<PrunerBaseConfig> {
  masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
    return weights.map((w) => w.weight.abs().gt(w.weight.abs().mean()).to('f32').mul(2).mul(ctx.sparsity));
  }
}

/** Prunes once and never re-applies its masks: momentum revives the pruned weights. */
class ForgetfulPruner extends Magnitude {
  override async attach(hooks: TrainingHooks): Promise<void> {
    this.setup(hooks.model);
    await this.prune(hooks.rt);
  }
}

/** Leaves its masks and round out of checkpoints: a resumed run forgets what it pruned. */
class AmnesiacPruner extends Magnitude {
  override async attach(hooks: TrainingHooks): Promise<void> {
    await super.attach(new Proxy(hooks, { get: (h, k) => (k === 'addState' ? () => undefined : Reflect.get(h, k)) }));
  }
}

/** Claims the 'hook' mode, reports masks, and never installs a hook: the forward uses the whole weights. */
class BoastfulPruner extends Magnitude {
  override get mode() { return 'hook' as const; }
  protected override checkMode(): void {}
  override apply(): void {}
}

/** An unregistered factory (the resume case builds fresh instances) of a Magnitude subclass. */
function factoryOf(name: string, make: (c: MagnitudeConfig, m: PluginMeta) => Magnitude): PluginFactory {
  const m: PluginMeta = Object.freeze({ name, version: '0.0.1', family: 'pruner', schema: MagnitudeConfig, description: 'a deliberately broken plugin' });
  const resolve = (c: Partial<MagnitudeConfig> = {}): MagnitudeConfig => ({ sparsity: 0.8, atEpoch: 0, rounds: 1, mode: 'inplace', scope: 'global', ...c });
  const f = (c?: Partial<MagnitudeConfig>) => make(resolve(c), m);
  Object.defineProperty(f, 'name', { value: name, writable: true }); // as definePlugin does: Object.assign sets it again
  return Object.assign(f, m, { resolve }) as unknown as PluginFactory;
}

/** Scores of the wrong shape (one per head, not per token). */
class HeadScorer extends KVPolicyBase<{ budget: number }> {
  score({ keys }: KVInputs): Tensor { return keys.sum([2, 3]); }
}

/** Scissorhands' count with the threshold 1/C, C every slot of the buffer, empty ones included. */
class SlotCounter extends KVPolicyBase<{ budget: number }> {
  override state(): Record<string, number> { return { count: 0 }; }
  score({ attn, pos, state }: KVInputs): KVScore {
    const slots = pos.ge(-1).sum(-1, true).unsqueeze(2); // (B, H, 1, 1): C, not the tokens the query saw
    const count = state.count.mul(0.9).add(attn.mul(slots).lt(1).to('f32').sum(2));
    return { scores: count.neg(), state: { count } };
  }
}

/** Negative weights, and more experts per token than its k. */
class LooseRouter extends RouterBase<{ auxWeight: number; k: number }> {
  params(d: RouterDims): Record<string, RouterParamSpec> { return { gate: { shape: [d.dim, d.experts], init: 'normal' } }; }
  route(x: Tensor, { gate }: Record<string, Tensor>): RouteResult { return { weights: x.matmul(gate) }; }
}

/** Weighs every expert equally whatever its gate says: the gate gets no gradient. */
class DeafRouter extends RouterBase<{ auxWeight: number }> {
  params(d: RouterDims): Record<string, RouterParamSpec> { return { gate: { shape: [d.dim, d.experts], init: 'normal' } }; }
  route(x: Tensor, _p: Record<string, Tensor>, d: RouterDims): RouteResult { return { weights: x.matmul(rt.ones([d.dim, d.experts])).mul(0).add(1 / d.experts) }; }
}

describe("pruners in mode 'hook' (masks applied in the forward by weight hooks)", () => {
  for (const name of ['magnitude', 'random', 'imp']) {
    it(`${name} passes the pruner suite with mode 'hook'`, async () => {
      const factory = plugins('pruner').find((f) => f.name === name)!;
      const report = await runConformance(factory, { rt, config: { mode: 'hook' } });
      const failed = report.results.filter((r) => r.status === 'failed').map((r) => `${r.name}: ${r.error?.message}`);
      expect(failed).toEqual([]);
      expect(report.results.filter((r) => r.status === 'passed').length).toBeGreaterThan(4);
    }, 60_000);
  }
});

describe('the suites catch broken plugins', () => {
  /** Run the cases whose names match, expect the (first) one to fail; its message. */
  const failed = async (subject: PluginInstance, name: RegExp) => {
    const only = conformanceCases(subject.meta.family, subject).map((c) => c.name).filter((n) => name.test(n));
    expect(only.length).toBeGreaterThan(0);
    const report = await runConformance(subject, { rt, only });
    expect(report.ok).toBe(false);
    const r = report.results[0];
    expect(r.status, `${r.name}: ${r.error?.message ?? r.reason}`).toBe('failed');
    return r.error!.message;
  };

  it('momentum: a value read in update(), a step uphill, state that is not updated in place', async () => {
    expect(await failed(new ReadingOptimizer({ lr: 0.1 }, meta('momentum-optimizer', 'reading')), /^update\(\) traces/)).toMatch(/cannot be traced/);
    expect(await failed(new AscendingOptimizer({ lr: 0.1 }, meta('momentum-optimizer', 'ascending')), /quadratic loss lowers/)).toMatch(/loss .* -> /);
    expect(await failed(new ReassigningOptimizer({ lr: 0.1 }, meta('momentum-optimizer', 'reassigning')), /checkpoint round trip/)).toMatch(/in place/);
  });

  it('pruner: masks that are not 0/1 and miss the sparsity', async () => {
    const p = new SloppyPruner({ sparsity: 0.5, atEpoch: 0, rounds: 1 }, meta('pruner', 'sloppy'));
    expect(await failed(p, /^masks\(\)/)).toMatch(/other than 0 and 1|asks for/);
  });

  it('pruner: masks not re-applied after optimizer steps (end to end)', async () => {
    const p = new ForgetfulPruner({ sparsity: 0.6, atEpoch: 0, rounds: 1 }, meta('pruner', 'forgetful'));
    expect(await failed(p, /^attached to a Trainer/)).toMatch(/re-applied after every optimizer step|not applied/);
  });

  it('pruner: masks and round left out of checkpoints (resume mid-schedule)', async () => {
    const f = factoryOf('amnesiac', (c, m) => new AmnesiacPruner(c, m));
    const report = await runConformance(f, { rt, only: conformanceCases('pruner', f).map((c) => c.name).filter((n) => /^resumed from a checkpoint/.test(n)) });
    expect(report.results.length).toBe(1);
    expect(report.results[0].status).toBe('failed');
    expect(report.results[0].error!.message).toMatch(/straight run/);
  });

  it("pruner: mode 'hook' whose forward ignores the masks it reports", async () => {
    const p = new BoastfulPruner({ sparsity: 0.6, atEpoch: 0, rounds: 1 }, meta('pruner', 'boastful'));
    expect(await failed(p, /^attached to a Trainer/)).toMatch(/weight hooks do not apply the masks/);
  });

  it('kv-policy: scores not shaped (B, H, C); a state that counts empty slots', async () => {
    expect(await failed(new HeadScorer({ budget: 8 }, meta('kv-policy', 'head-scorer')), /^score\(\) traces/)).toMatch(/expected \[2,3,7\]/);
    expect(await failed(new SlotCounter({ budget: 8 }, meta('kv-policy', 'slot-counter')), /ignore empty slots/)).toMatch(/in the padded batch but .* alone: an empty slot changed a score or a state/);
  });

  it('router: negative weights; more experts than k', async () => {
    const r = new LooseRouter({ auxWeight: 0, k: 1 }, meta('router', 'loose'));
    expect(await failed(r, /^route\(\) traces/)).toMatch(/non-negative/);
    expect(await failed(r, /at most k/)).toMatch(/experts with nonzero weight; k = 1/);
    const deaf = new DeafRouter({ auxWeight: 0 }, meta('router', 'deaf'));
    expect(await failed(deaf, /^installed in a GPT/)).toMatch(/zero gradient/);
  });

  it('skips carry reasons, and an author’s skip must name a real case', () => {
    const cases = conformanceCases('momentum-optimizer', new AscendingOptimizer({ lr: 0.1 }, meta('momentum-optimizer', 'x')), {
      skip: [{ reason: 'not relevant here', cases: ['learningRate(step) is positive and finite'] }],
    });
    expect(cases.find((c) => c.name.startsWith('learningRate'))?.skip).toMatch(/not relevant here/);
    expect(cases.find((c) => c.name.startsWith('config: the defaults'))?.skip).toMatch(/instance, not its factory/);
    expect(() => conformanceCases('pruner', undefined, { skip: [{ reason: 'r', cases: ['no such case'] }] })).toThrow(/names no case 'no such case'/);
  });
});
