/** Shared base of the KVPolicy family: the scoring program and installing it on a model. */
import { Type } from '@sinclair/typebox';
import { type Runtime, Tensor } from '../../../bridge/index.js';
import { PluginBase } from '../../plugin.js';
import { define, type Program } from '../../program.js';
import type { KVInputs, KVPolicy, KVScore } from './types.js';

/** Config fields every KV policy has; spread them into a plugin's schema. */
export const KVPolicyFields = {
  budget: Type.Integer({ minimum: 1, default: 256, description: 'cached tokens kept per layer and head' }),
};

export abstract class KVPolicyBase<C extends { budget: number }> extends PluginBase<C> implements KVPolicy<C> {
  get budget(): number {
    return this.config.budget;
  }

  state(): Record<string, number> {
    return {};
  }

  abstract score(inputs: KVInputs): Tensor | KVScore;

  /**
   * The program a model runs at its KV hook point: inputs keys, values, attn, pos, then
   * the per-token state in `state()` order; outputs scores, then the new state.
   */
  program(rt: Runtime): Program {
    const names = Object.keys(this.state());
    const inputs: Record<string, object> = {
      keys: { shape: ['B', 'H', 'T', 'D'] }, values: { shape: ['B', 'H', 'T', 'D'] },
      attn: { shape: ['B', 'H', 'T'] }, pos: { dtype: 'i64', shape: ['B', 'H', 'T'] },
    };
    for (const n of names) inputs[`state:${n}`] = { dtype: 'f32', shape: ['B', 'H', 'T'] };
    return define(rt, { name: `${this.meta.name}-kv`, inputs }, (ins) => {
      const state = Object.fromEntries(names.map((n) => [n, ins[`state:${n}`]]));
      const r = this.score({ keys: ins.keys, values: ins.values, attn: ins.attn, pos: ins.pos, state });
      const { scores, state: next } = r instanceof Tensor ? { scores: r, state: undefined } : r;
      return [scores, ...names.map((n) => next?.[n] ?? state[n])];
    });
  }

  /** Options for the runtime's `model_hook(model, 'kv', program, opts)`. */
  hookOptions(): { budget: number; state: number[] } {
    return { budget: this.budget, state: Object.values(this.state()) };
  }
}
