/** Shared base of the KVPolicy family: the scoring program and installing it on a model. */
import { Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, Tensor } from '../../../bridge/index.js';
import { PluginBase } from '../../plugin.js';
import { checkKeys, pluginName } from '../contract.js';
import { define, type Program } from '../../program.js';
import type { KVInputs, KVPolicy, KVScore } from './types.js';

/** Config fields every KV policy has; spread them into a plugin's schema. */
export const KVPolicyFields = {
  budget: Type.Integer({ minimum: 1, default: 256, description: 'cached tokens kept per layer and head' }),
};

/**
 * The program a model runs at its KV hook point for `policy` (any KVPolicy, whether or not
 * it extends {@link KVPolicyBase}): inputs keys, values (B, H, T, D), attn (B, H, T), pos
 * (B, H, T) i64, then the per-token state (B, H, T) in `state()` order; outputs scores
 * (B, H, T), then the new state. Defined, not awaited: a trace error throws here, a
 * definition error surfaces at the next flush. A policy that declares state must return
 * all of it, under its names and no other (E_TRACE with param 'state', naming the keys):
 * a misspelled or missing key would otherwise keep the first values for ever.
 */
export function kvPolicyProgram(rt: Runtime, policy: KVPolicy): Program {
  const names = Object.keys(policy.state());
  const inputs: Record<string, object> = {
    keys: { shape: ['B', 'H', 'T', 'D'] }, values: { shape: ['B', 'H', 'T', 'D'] },
    attn: { shape: ['B', 'H', 'T'] }, pos: { dtype: 'i64', shape: ['B', 'H', 'T'] },
  };
  for (const n of names) inputs[`state:${n}`] = { dtype: 'f32', shape: ['B', 'H', 'T'] };
  const who = pluginName(policy);
  return define(rt, { name: `${policy.meta.name}-kv`, inputs }, (ins) => {
    const state = Object.fromEntries(names.map((n) => [n, ins[`state:${n}`]]));
    const r = policy.score({ keys: ins.keys, values: ins.values, attn: ins.attn, pos: ins.pos, state });
    if (r instanceof Tensor) {
      // a state the policy declares but never returns would keep its first values forever
      if (names.length) throw new LiaisonError('E_TRACE', `${who}: score() returned only scores, but state() declares ${names.map((n) => `'${n}'`).join(', ')}; return { scores, state: { ${names.join(', ')} } } with every state tensor (an unchanged one as it came in)`, { param: 'state' });
      return [r];
    }
    checkKeys(who, "score()'s result", r, { expected: ['scores'], optional: names.length ? ['state'] : [], tensors: ['scores'], param: 'state' });
    const declared = names.map((n) => `'${n}'`).join(', ');
    if (names.length) checkKeys(who, "score()'s state", r.state, { expected: names, fix: `state() declares ${declared}; return each (an unchanged one as it came in)`, param: 'state' });
    return [r.scores, ...names.map((n) => r.state![n])];
  });
}

/** Options for the runtime's `model_hook(model, 'kv', program, opts)`: the budget and each state's starting value. */
export function kvHookOptions(policy: KVPolicy): { budget: number; state: number[] } {
  return { budget: policy.budget, state: Object.values(policy.state()) };
}

export abstract class KVPolicyBase<C extends { budget: number }> extends PluginBase<C> implements KVPolicy<C> {
  get budget(): number {
    return this.config.budget;
  }

  state(): Record<string, number> {
    return {};
  }

  abstract score(inputs: KVInputs): Tensor | KVScore;

  /** This policy's hook program ({@link kvPolicyProgram}). */
  program(rt: Runtime): Program {
    return kvPolicyProgram(rt, this);
  }

  /** Options for the runtime's `model_hook(model, 'kv', program, opts)` ({@link kvHookOptions}). */
  hookOptions(): { budget: number; state: number[] } {
    return kvHookOptions(this);
  }
}
