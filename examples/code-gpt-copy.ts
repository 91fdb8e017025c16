/**
 * The copy check of examples/code-gpt.ts: does a decoder look back and copy?
 *
 * Each test sequence is [span, gap, span]: a span of held-out tokens, then other held-out
 * text (the gap), then the same span again. A model that only knows the language predicts
 * the second occurrence as well as the first; one with induction heads (Olsson et al.,
 * "In-context Learning and Induction Heads", 2022, https://arxiv.org/abs/2209.11895) finds
 * the earlier occurrence `span + gap` tokens back and copies it, so the second occurrence's
 * loss falls far below the first's. A KV policy that drops those tokens loses exactly this.
 */
import { LiaisonError, type Tensor } from '../bridge/index.js';
import type { Model } from '../sdk/model.js';

export interface CopyCheckOptions {
  /** The model's context: a sequence (2·span + gap tokens) must fit in it. */
  context: number;
  /** Tokens in the repeated span (default: min(128, context / 8)). */
  span?: number;
  /** Tokens of other held-out text between the two occurrences (default: as many as fit, at most 512). */
  gap?: number;
  /** Sequences averaged over (default 8). */
  sequences?: number;
}

export interface CopyCheck {
  span: number;
  gap: number;
  sequences: number;
  /** Mean loss (nats) over the first occurrence's tokens, its first token left out (nothing predicts it). */
  first: number;
  /** The same over the second occurrence: the first token left out again (it follows the gap). */
  second: number;
  /** second / first: far below 1 when the model copies. */
  ratio: number;
  /** Mean loss at each predicted position 1 .. 2·span + gap − 1 (index 0 predicts token 1). */
  perPosition: number[];
}

/**
 * The copy check on `tokens`, (N,) i64 held-out token ids in the runtime: the spans and
 * the gaps are drawn from disjoint, evenly spaced stretches of it (deterministic).
 */
export async function copyCheck(model: Model, tokens: Tensor, opts: CopyCheckOptions): Promise<CopyCheck> {
  const rt = model.rt;
  const { context } = opts;
  const span = opts.span ?? Math.min(128, Math.floor(context / 8));
  const gap = opts.gap ?? Math.min(512, context - 2 * span);
  const sequences = opts.sequences ?? 8;
  const len = 2 * span + gap;
  if (!(span >= 2 && gap >= 0 && len <= context)) throw new LiaisonError('E_ARG', `copyCheck: a sequence of 2·span + gap = ${len} tokens (span ${span}, gap ${gap}) must fit the context ${context}, with span >= 2`, { param: 'span' });
  const [n] = (await tokens.info()).shape;
  const stretch = Math.floor(n / (2 * sequences)); // span i from stretch 2i, gap i from stretch 2i + 1
  if (stretch < Math.max(span, gap)) throw new LiaisonError('E_ARG', `copyCheck: ${n} tokens are too few for ${sequences} sequences of span ${span} and gap ${gap}`, { param: 'tokens' });
  const idx = new BigInt64Array(sequences * len);
  for (let s = 0; s < sequences; s++) {
    const a = 2 * s * stretch;
    const b = (2 * s + 1) * stretch;
    const row = s * len;
    for (let i = 0; i < span; i++) idx[row + i] = idx[row + span + gap + i] = BigInt(a + i);
    for (let i = 0; i < gap; i++) idx[row + span + i] = BigInt(b + i);
  }
  const perPosition = await rt.scope(async () => {
    const index = rt.tensor(idx, [sequences * len], 'i64');
    const seq = tokens.indexSelect(0, index).reshape([sequences, len]); // (S, L)
    const x = seq.narrow(1, 0, len - 1);
    const y = seq.narrow(1, 1, len - 1);
    const logp = model.forward(x, { train: false }).logSoftmax(-1); // (S, L-1, V)
    const nll = logp.gather(-1, y.unsqueeze(-1)).neg().squeeze(-1).mean(0); // (L-1)
    return Array.from((await nll.toArray()) as Float32Array);
  });
  const mean = (from: number, to: number) => perPosition.slice(from, to).reduce((a, v) => a + v, 0) / (to - from);
  // position p predicts token p + 1: the first span's tokens 1..span-1, the second's span+gap+1..
  const first = mean(0, span - 1);
  const second = mean(span + gap, len - 1);
  return { span, gap, sequences, first, second, ratio: second / first, perPosition };
}
