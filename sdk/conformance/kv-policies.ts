/**
 * Conformance suite of the KVPolicy family (sdk/families/kv-policies/types.ts).
 *
 * The unit case traces `score()` as the runtime replays it per layer; the end-to-end cases
 * install the policy on a small GPT (random weights: the checks compare the model with
 * itself) and decode through its KV cache. For a factory the suite sets `budget` itself:
 * small to force evictions, large to check that a policy with room for everything changes
 * nothing. For an instance, its own budget is used.
 */
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { kvPolicyProgram } from '../families/kv-policies/base.js';
import type { KVPolicy } from '../families/kv-policies/types.js';
import { Model } from '../model.js';
import type { Program } from '../program.js';
import { type CaseDef, type CaseContext, check, ConformanceFailure, registrationCases, values } from './suite.js';

type K = KVPolicy;

const VOCAB = 32;
const SMALL = 8;
const PROMPT = 4;

/** A 2-layer GPT whose context fits `length` tokens; random weights, seeded. */
function gpt(rt: Runtime, length: number, seed: number): Promise<Model> {
  return Model.build(rt, { kind: 'gpt', vocab: VOCAB, context: Math.max(32, length), dim: 16, layers: 2, heads: 2, mlpRatio: 2 }, { seed });
}

function ids(rt: Runtime, rows: number, len: number, seed: number): Tensor {
  return rt.randint(0, VOCAB, [rows, len], { seed });
}

/** A policy with room for `length` tokens, and that length (clipped to an instance's own budget). */
function roomy(ctx: CaseContext<K>, length: number): { policy: K; length: number } {
  const policy = ctx.plugin(ctx.canOverride ? { budget: Math.max(length, 64) } : undefined);
  return { policy, length: Math.min(length, policy.budget ?? length) };
}

/** The KVPolicy cases. */
export function kvPolicyCases(): CaseDef<K>[] {
  return [
    ...registrationCases<K>(),
    {
      name: 'score() traces; scores (B, H, T) and every state tensor (B, H, T); budget a positive integer',
      async run({ rt, plugin, seed }) {
        const policy = plugin();
        check(policy.budget === null || (Number.isInteger(policy.budget) && policy.budget >= 1), `budget is ${policy.budget}, expected a positive integer or null`);
        const init = policy.state();
        const names = Object.keys(init);
        names.forEach((n) => check(Number.isFinite(init[n]), `state '${n}' starts at ${init[n]}, expected a finite number`));
        const [B, H, T, D] = [2, 3, 7, 4];
        // the very program a model installs at its KV hook point
        let prog: Program;
        try {
          prog = kvPolicyProgram(rt, policy);
          await rt.flush();
        } catch (e) {
          if (e instanceof LiaisonError && e.code === 'E_TRACE' && e.param === 'state') throw new ConformanceFailure(e.message);
          if (e instanceof LiaisonError && e.code === 'E_TRACE') throw new ConformanceFailure(`score() cannot be traced (tensor ops only, no reads or awaits): ${e.message}`);
          throw e;
        }
        try {
          const keys = rt.randn([B, H, T, D], { seed });
          const attn = rt.randn([B, H, 1, T], { seed: seed + 1 }).softmax(-1);
          const pos = rt.arange(0, T, 1, 'i64').reshape([1, 1, T]).expand([B, H, T]).contiguous();
          const state = names.map((n) => rt.full([B, H, T], init[n]));
          const outs = prog.run([keys, rt.randn([B, H, T, D], { seed: seed + 2 }), attn, pos, ...state]) as Tensor[];
          const want = `${B},${H},${T}`;
          for (const [i, t] of outs.entries()) {
            const shape = (await t.info()).shape.join();
            check(shape === want, `${i === 0 ? 'scores' : `state '${names[i - 1]}'`} has shape [${shape}], expected [${want}] (B, H, T)`);
            check((await values(t)).every((v) => !Number.isNaN(v)), `${i === 0 ? 'scores' : `state '${names[i - 1]}'`} holds NaN`);
          }
        } finally {
          prog.free();
        }
      },
    },
    {
      name: 'score() returns its state under exactly the names state() declares (none missing, none unknown)',
      async run({ rt, plugin, skip }) {
        const policy = plugin();
        if (!Object.keys(policy.state()).length) skip('state() declares no per-token state');
        try {
          kvPolicyProgram(rt, policy).free();
          await rt.flush();
        } catch (e) {
          // a misspelled or missing key would keep the state's first values for ever
          if (e instanceof LiaisonError && e.param === 'state') throw new ConformanceFailure(e.message);
          throw e;
        }
      },
    },
    {
      name: 'installed on a small GPT, the cache never holds more than the budget while generating',
      async run(ctx) {
        const { rt, seed } = ctx;
        const policy = ctx.plugin(ctx.canOverride ? { budget: SMALL } : undefined);
        const steps = (policy.budget ?? SMALL) + 6; // the cache would hold PROMPT + steps − 1 tokens uncapped
        const model = await gpt(rt, PROMPT + steps, seed);
        try {
          model.setKVPolicy(policy);
          const out = model.generate(ids(rt, 2, PROMPT, seed), { steps });
          const [shape, toks] = [(await out.info()).shape, await values(out)];
          check(shape.join() === `2,${PROMPT + steps}`, `generate returned shape [${shape}], expected [2,${PROMPT + steps}]`);
          check(toks.every((t) => Number.isInteger(t) && t >= 0 && t < VOCAB), 'generate returned tokens outside the vocabulary');
          const sizes = await model.kvCacheSize();
          check(sizes.every((s) => s <= (policy.budget ?? PROMPT + steps)), `cache sizes per layer ${sizes} exceed the budget ${policy.budget}`);
        } finally {
          model.free();
        }
      },
    },
    {
      name: 'with a budget of at least the sequence length, perplexity equals the full cache’s',
      async run(ctx) {
        const { rt, seed } = ctx;
        const { policy, length } = roomy(ctx, 20);
        const model = await gpt(rt, length, seed);
        try {
          const tokens = ids(rt, 2, length, seed + 1);
          const full = await model.perplexity(tokens);
          model.setKVPolicy(policy);
          const kept = await model.perplexity(tokens);
          check(Math.abs(kept.nll - full.nll) <= 1e-5 * (1 + Math.abs(full.nll)), `mean NLL ${kept.nll} with the policy, ${full.nll} with the full cache`);
        } finally {
          model.free();
        }
      },
    },
    {
      name: 'with a budget of at least the length, greedy generation equals the unhooked model’s (kept positions unchanged)',
      async run(ctx) {
        const { rt, seed } = ctx;
        const { policy, length } = roomy(ctx, 24);
        const model = await gpt(rt, length, seed);
        try {
          const prompt = ids(rt, 2, Math.min(PROMPT, length - 1), seed + 2);
          const steps = length - Math.min(PROMPT, length - 1);
          const plain = await values(model.generate(prompt, { steps }));
          model.setKVPolicy(policy);
          const hooked = await values(model.generate(prompt, { steps }));
          check(hooked.join() === plain.join(), `generation with the policy differs from the unhooked model's: ${hooked.slice(0, 12)}… vs ${plain.slice(0, 12)}…`);
        } finally {
          model.free();
        }
      },
    },
  ];
}
