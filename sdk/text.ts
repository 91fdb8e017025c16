/**
 * Tokens for the language models the project trains. Byte tokens for English text
 * (`text_corpus('pydoc')` in the runtime is ASCII bytes): one token per byte, so a GPT
 * with `vocab: 128` reads and writes ASCII, and `vocab: 256` any UTF-8. And a byte-level
 * BPE {@link Tokenizer} with the Python source corpus it is trained on ({@link loadCodeText}).
 *
 * ```ts
 * const prompt = rt.tensor(encodeText('def '), [1, 4]);        // (1, 4) i64
 * const out = model.generate(prompt, { steps: 40 });            // (1, 44)
 * console.log(decodeText(await out.toArray()));
 * ```
 */
import { LiaisonError, type Runtime, type Tensor } from '../bridge/index.js';
import { TextCorpus } from './data.js';

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

/** Between two files of the code corpus; one token of a {@link Tokenizer} (its id 0). */
export const FILE_SEPARATOR = '<|endoftext|>';

/** The two sides of the code corpus, split by file. */
export const CODE_SPLITS = ['train', 'heldout'] as const;
export type CodeSplit = (typeof CODE_SPLITS)[number];

/** One side of the code corpus, as UTF-8 bytes in the runtime. */
export interface CodeText {
  /** u8 (N,): the side's files, UTF-8, joined by {@link FILE_SEPARATOR}. */
  text: Tensor;
  /** Files in it. */
  files: number;
  /** N: its bytes. */
  bytes: number;
  /** Files of this side left out for not being UTF-8. */
  skipped: number;
}

/**
 * Python source code: the standard library of the interpreter running the runtime (every
 * `.py` file, the test suites included, site-packages not), split by file — one in 20 by a
 * hash of its path is 'heldout' — by the runtime's `code_corpus` op. About 30 MB of train
 * text and 1.5 MB held out with CPython 3.11. Free `text` when done.
 */
export async function loadCodeText(rt: Runtime, split: CodeSplit): Promise<CodeText> {
  if (!CODE_SPLITS.includes(split)) throw new LiaisonError('E_ARG', `loadCodeText: no split '${split}'; there are ${CODE_SPLITS.join(', ')}`, { param: 'split' });
  const [text, counts] = rt.call('code_corpus', [split], undefined, 2) as Tensor[];
  const [files, bytes, skipped] = Array.from((await counts.toArray()) as BigInt64Array, Number);
  counts.free();
  return { text, files, bytes, skipped };
}

const utf8 = (rt: Runtime, s: string): Tensor => {
  const b = new TextEncoder().encode(s);
  return rt.tensor(b, [b.length], 'u8');
};

/**
 * A byte-level BPE tokenizer (GPT-2's scheme, Hugging Face `tokenizers`) held by the runtime:
 * any text encodes (bytes first, no unknown token), and merges learnt on a training text make
 * its frequent strings single tokens. {@link FILE_SEPARATOR} is token 0 and never merged.
 *
 * ```ts
 * const { text } = await loadCodeText(rt, 'train');
 * const tok = await Tokenizer.train(rt, text, { vocab: 4096 });   // seconds for 30 MB
 * const ids = tok.encode('def f(x):\n    return x\n');            // (M,) i64, queued
 * console.log(await tok.decode(ids));                              // the same text back
 * await tok.save('out/tokenizer.json');                            // Hugging Face format
 * ```
 */
export class Tokenizer {
  private constructor(
    readonly rt: Runtime,
    /** The runtime's tokenizer object. */
    readonly handle: Tensor,
    /** Tokens in the vocabulary: ids are in [0, vocab). */
    readonly vocab: number,
    /** The id of {@link FILE_SEPARATOR}, or -1 when the vocabulary has none. */
    readonly separator: number,
  ) {
    handle.keep(); // held until free(), whatever rt.scope() made it
  }

  private static async wrap(rt: Runtime, handle: Tensor): Promise<Tokenizer> {
    const info = rt.call('bpe_info', [handle]) as Tensor;
    const [vocab, sep] = Array.from((await info.toArray()) as BigInt64Array, Number);
    info.free();
    return new Tokenizer(rt, handle, vocab, sep);
  }

  /**
   * Learn `vocab` tokens (256 bytes, the separator, then merges; at least 257) on `text`:
   * u8 (N,) UTF-8 in the runtime (e.g. {@link loadCodeText}'s) or a string. Pairs seen fewer
   * than `minFrequency` times (default 2) are not merged. Deterministic.
   */
  static async train(rt: Runtime, text: Tensor | string, opts: { vocab: number; minFrequency?: number }): Promise<Tokenizer> {
    const t = typeof text === 'string' ? utf8(rt, text) : text;
    const handle = rt.call('bpe_train', [t, opts?.vocab, opts?.minFrequency ?? 2]) as Tensor;
    if (t !== text) t.free();
    return Tokenizer.wrap(rt, handle);
  }

  /** A tokenizer from the text of a Hugging Face `tokenizer.json`. */
  static async fromJSON(rt: Runtime, json: string): Promise<Tokenizer> {
    const t = utf8(rt, json);
    const handle = rt.call('bpe_from_json', [t]) as Tensor;
    t.free();
    return Tokenizer.wrap(rt, handle);
  }

  /** A tokenizer read from a `tokenizer.json` file on this side (works with a remote runtime). */
  static async load(rt: Runtime, path: string): Promise<Tokenizer> {
    const { readFile } = await import('node:fs/promises');
    return Tokenizer.fromJSON(rt, await readFile(path, 'utf8'));
  }

  /** The tokenizer as a Hugging Face `tokenizer.json` text. */
  async toJSON(): Promise<string> {
    const t = this.rt.call('bpe_to_json', [this.handle]) as Tensor;
    const bytes = (await t.toArray()) as Uint8Array;
    t.free();
    return new TextDecoder().decode(bytes);
  }

  /** Write it as `tokenizer.json` at `path` on this side (its folder made if missing). */
  async save(path: string): Promise<void> {
    const { mkdir, writeFile } = await import('node:fs/promises');
    const { dirname } = await import('node:path');
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, await this.toJSON());
  }

  /** (M,) i64 token ids of `text` (a string, or u8 (N,) UTF-8 in the runtime). Queued. */
  encode(text: string | Tensor): Tensor {
    const t = typeof text === 'string' ? utf8(this.rt, text) : text;
    const ids = this.rt.call('bpe_encode', [this.handle, t]) as Tensor;
    if (t !== text) t.free();
    return ids;
  }

  /** The text of token ids (a tensor of any shape, read in order, or numbers). */
  async decode(ids: Tensor | ArrayLike<number | bigint>): Promise<string> {
    const t = isTensor(ids) ? ids : this.rt.tensor(BigInt64Array.from(Array.from(ids, (v) => BigInt(v))), [ids.length], 'i64');
    const out = this.rt.call('bpe_decode', [this.handle, t]) as Tensor;
    if (t !== ids) t.free();
    const bytes = (await out.toArray()) as Uint8Array;
    out.free();
    return new TextDecoder().decode(bytes);
  }

  /** `text` (u8 UTF-8 in the runtime, or a string) encoded as a {@link TextCorpus} of this vocabulary. */
  async corpus(text: Tensor | string): Promise<TextCorpus> {
    return TextCorpus.fromTokens(this.rt, this.encode(text), this.vocab);
  }

  /** Drop the runtime's tokenizer. */
  free(): void {
    this.handle.free();
  }
}

const isTensor = (v: unknown): v is Tensor => typeof (v as Tensor | null)?.info === 'function';
