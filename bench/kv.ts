/**
 * The KV-cache benchmarks (issue 12), on one decoder:
 *
 * - kv.decode_long: tokens/s decoding 4,096 tokens (greedy, batch 1) with `scissorhands`
 *   at a budget of 1/8 of the decoded length, against the full cache; same model, the two
 *   alternating decode by decode.
 * - kv.memory: bytes the cache holds (`kvCacheSize().totalBytes`) after the same long
 *   decode with `scissorhands` at 1/8 and 4-bit entries, against the full f32 cache.
 *
 * The decoder is the code GPT of `examples/code-gpt.ts` when its checkpoint exists, else a
 * GPT of the same shape with random weights (the record's note says which): 4,096 tokens
 * pass its 1,024-token context, which only a rotary model decodes. kv.policy_program lives
 * in `bench/kv_policy_program.ts`.
 */
import { existsSync } from 'node:fs';
import { Runtime } from '../bridge/index.js';
import { CODE_GPT_SPEC, codeGPTPaths } from '../examples/code-gpt.js';
import { scissorhands } from '../plugins/kv-policies/scissorhands.js';
import type { KVPolicy } from '../sdk/families/kv-policies/types.js';
import type { GPTSpec } from '../sdk/model-spec.js';
import { Model } from '../sdk/model.js';
import { type BenchOptions, type BenchResult, median, result, using } from './lib.js';

/** The decoder a KV benchmark runs, and what to say about it. */
export interface Decoder {
  model: Model;
  spec: GPTSpec;
  /** 'the code GPT (its checkpoint)' or 'random weights in the code GPT's shape'. */
  which: string;
}

/** A tiny rotary GPT for `--quick`: checks that the benchmark runs, measures nothing. */
export const QUICK_SPEC: GPTSpec = { kind: 'gpt', vocab: 256, context: 32, dim: 32, layers: 2, heads: 2, positions: 'rotary' };

/** The code GPT if trained, else its shape with random weights (seed 0); QUICK_SPEC when quick. */
export async function decoder(rt: Runtime, quick: boolean): Promise<Decoder> {
  if (quick) return { model: await Model.build(rt, QUICK_SPEC, { seed: 0 }), spec: QUICK_SPEC, which: 'a tiny random rotary GPT (quick)' };
  const { checkpoint } = codeGPTPaths();
  if (existsSync(checkpoint)) {
    const { model, tensors } = await Model.fromCheckpoint(rt, checkpoint);
    for (const t of Object.values(tensors)) t.free();
    return { model, spec: model.spec as GPTSpec, which: 'the code GPT (its trained checkpoint)' };
  }
  return { model: await Model.build(rt, CODE_GPT_SPEC, { seed: 0 }), spec: CODE_GPT_SPEC, which: `random weights in the code GPT's shape (no checkpoint at ${checkpoint})` };
}

/** A fixed prompt of `n` tokens (a deterministic pseudo-random walk over the vocabulary). */
export function fixedPrompt(n: number, vocab: number): BigInt64Array {
  return BigInt64Array.from({ length: n }, (_, i) => BigInt((i * 7919 + 13) % vocab));
}

/**
 * Decode `steps` tokens after `prompt` (1, T0) with `policy` (null: the full cache)
 * installed: seconds of the decode alone, and the bytes the cache then holds.
 */
export async function decodeOnce(model: Model, policy: KVPolicy | null, prompt: BigInt64Array, steps: number): Promise<{ seconds: number; bytes: number; rowBytes: number; sum: number }> {
  const rt = model.rt;
  model.setKVPolicy(policy);
  const p = rt.tensor(prompt, [1, prompt.length], 'i64');
  await rt.flush(); // the policy's trace and the upload are not the decode
  const t0 = performance.now();
  const out = model.generate(p, { steps });
  const data = (await out.toArray()) as BigInt64Array;
  const seconds = (performance.now() - t0) / 1000;
  p.free();
  out.free();
  let sum = 0;
  for (const v of data) sum += Number(v);
  const size = await model.kvCacheSize();
  return { seconds, bytes: size.totalBytes, rowBytes: size.totalRowBytes, sum };
}

export async function benchDecodeLong(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const steps = opts.quick ? 48 : 4096;
    const budget = steps / 8;
    const rounds = opts.quick ? 1 : 3;
    const rt = await Runtime.start({ threads: 1 }); // as sdk.train_step: two threads' spin-waits on a busy 2-core machine cost more than they give
    defer(() => rt.close());
    const { model, spec, which } = await decoder(rt, opts.quick);
    defer(() => model.free());
    const prompt = fixedPrompt(16, spec.vocab);
    const policy = scissorhands({ budget });
    const out: BenchResult[] = [];
    const shape = `${spec.layers} layers, dim ${spec.dim}, ${spec.heads} heads`;

    let fullBytes = NaN;
    if (opts.wants('kv.decode_long')) {
      await decodeOnce(model, null, prompt, opts.quick ? 8 : 256); // warm-up: first-call paths, allocator
      await decodeOnce(model, policy, prompt, opts.quick ? 8 : 256);
      const full: number[] = [], ours: number[] = [];
      for (let r = 0; r < rounds; r++) {
        // alternate which goes first: neither always decodes after the other's garbage
        const order = r % 2 ? [policy, null] : [null, policy];
        for (const p of order) {
          const d = await decodeOnce(model, p, prompt, steps);
          (p ? ours : full).push(steps / d.seconds);
          if (!p) fullBytes = d.bytes;
          opts.log(`kv.decode_long: ${p ? `scissorhands ${budget}` : 'full cache'} ${(steps / d.seconds).toFixed(1)} tokens/s`);
        }
      }
      const v = median(ours), b = median(full);
      out.push(result({
        name: 'kv.decode_long', value: v, baseline: b, unit: 'tokens/s', target: '>= 1.0x', met: v / b >= 1.0,
        note: `greedy decode of ${steps} tokens after ${prompt.length}, batch 1, scissorhands budget ${budget} (1/8) vs full cache; ${which}, ${shape}; median of ${rounds} each, alternating, 1 thread; tokens/s ${fmtRange(ours)} vs ${fmtRange(full)}`,
      }));
    }
    if (opts.wants('kv.memory')) {
      if (!Number.isFinite(fullBytes)) fullBytes = (await decodeOnce(model, null, prompt, steps)).bytes;
      const small = await decodeOnce(model, scissorhands({ budget, bits: 4 }), prompt, steps);
      // held: the cache and the policy's working memory beside it (the attention rows its next run reads)
      const held = small.bytes + small.rowBytes;
      const ratio = held / fullBytes;
      const parts = `${small.bytes} bytes of cache (1/${(fullBytes / small.bytes).toFixed(1)}) and ${small.rowBytes} of attention rows kept for the policy's next run`;
      opts.log(`kv.memory: ${held} bytes held at budget ${budget}, 4-bit, against ${fullBytes} for the full f32 cache (1/${(1 / ratio).toFixed(1)}): ${parts}`);
      out.push(result({
        name: 'kv.memory', value: held, baseline: fullBytes, unit: 'bytes', target: '<= 0.025x (1/40)', met: ratio <= 1 / 40,
        note: `bytes held after decoding ${steps} tokens: scissorhands budget ${budget}, 4-bit entries (group-wise f16 scales and minima, positions and state included) vs the full f32 cache; 1/${(1 / ratio).toFixed(1)}: ${parts}; ${which}`,
      }));
    }
    return out;
  });
}

function fmtRange(xs: readonly number[]): string {
  return `${Math.min(...xs).toFixed(1)}–${Math.max(...xs).toFixed(1)}`;
}
