/**
 * Byte-level tokens for the small language models the project trains on English text
 * (`text_corpus('pydoc')` in the runtime is ASCII bytes): one token per byte, so a GPT
 * with `vocab: 128` reads and writes ASCII, and `vocab: 256` any UTF-8.
 *
 * ```ts
 * const prompt = rt.tensor(encodeText('def '), [1, 4]);        // (1, 4) i64
 * const out = model.generate(prompt, { steps: 40 });            // (1, 44)
 * console.log(decodeText(await out.toArray()));
 * ```
 */
import { LiaisonError } from '../bridge/index.js';

/**
 * A string -> its UTF-8 bytes as i64 tokens. A byte at or above `vocab` (default 128:
 * ASCII only) is refused with E_ARG naming the character, since the model could not read it.
 */
export function encodeText(s: string, opts: { vocab?: number } = {}): BigInt64Array {
  const vocab = opts.vocab ?? 128;
  const enc = new TextEncoder();
  const out: bigint[] = [];
  for (const ch of s) {
    for (const b of enc.encode(ch)) {
      if (b >= vocab) throw new LiaisonError('E_ARG', `encodeText: ${JSON.stringify(ch)} (byte ${b} at byte offset ${out.length}) is outside a vocabulary of ${vocab}; use vocab 256 for UTF-8 text`, { param: 's' });
      out.push(BigInt(b));
    }
  }
  return BigInt64Array.from(out);
}

/**
 * Tokens (any typed array or numbers, e.g. one row of `generate()`'s output) -> the text
 * they spell, read as UTF-8 (an invalid sequence becomes U+FFFD). A token outside [0, 255]
 * is refused with E_ARG.
 */
export function decodeText(tokens: ArrayLike<number | bigint>): string {
  const bytes = new Uint8Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const v = Number(tokens[i]);
    if (!Number.isInteger(v) || v < 0 || v > 255) throw new LiaisonError('E_ARG', `decodeText: token ${i} is ${String(tokens[i])}, not a byte (0..255)`, { param: 'tokens' });
    bytes[i] = v;
  }
  return new TextDecoder().decode(bytes);
}
