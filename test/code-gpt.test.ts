// examples/code-gpt.ts as a user runs it (a tiny variant: small dims, few steps, a slice of
// the corpus), its checkpoint loaded back by loadCodeGPT, and the BPE Tokenizer and the code
// corpus of sdk/text.ts it is built on.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { codeGPTPaths, copyCheck, loadCodeGPT } from '../examples/code-gpt.js';
import { FILE_SEPARATOR, loadCodeText, TextCorpus, Tokenizer } from '../sdk/index.js';
import { runExample, startRuntime } from './helpers.js';

const TINY = {
  LIAISON_CODE_GPT_STEPS: '30', LIAISON_CODE_GPT_DIM: '32', LIAISON_CODE_GPT_LAYERS: '2', LIAISON_CODE_GPT_CONTEXT: '64',
  LIAISON_CODE_GPT_VOCAB: '400', LIAISON_CODE_GPT_BYTES: '200000', LIAISON_CODE_GPT_EVAL_WINDOWS: '4',
  LIAISON_CODE_GPT_SHORT_STEPS: '8', LIAISON_CODE_GPT_SHORT_WINDOW: '32', LIAISON_CODE_GPT_SHORT_BATCH: '4',
};

let rt: Runtime;
let tmp: string;
beforeAll(async () => {
  rt = await startRuntime();
  tmp = mkdtempSync(join(tmpdir(), 'code-gpt-'));
});
afterAll(async () => {
  await rt?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('the BPE Tokenizer and the code corpus', () => {
  it('learns merges, round-trips any text exactly, keeps the separator as one token, and saves as tokenizer.json', async () => {
    const code = Array.from({ length: 120 }, (_, i) => `def f${i}(self, x):\n    return self.value + x * ${i}\n`).join('');
    const tok = await Tokenizer.train(rt, code + FILE_SEPARATOR + code, { vocab: 300 });
    expect([tok.vocab, tok.separator]).toEqual([300, 0]);
    const text = `def f7(self, x):\n    return self.value  # caf\u00e9 \u2603 ${FILE_SEPARATOR}x`;
    const ids = tok.encode(text);
    const arr = Array.from((await ids.toArray()) as BigInt64Array, Number);
    expect(arr.length).toBeLessThan(new TextEncoder().encode(text).length / 2); // merges learnt on this code
    expect(arr.filter((v) => v === 0)).toHaveLength(1);
    expect(await tok.decode(ids)).toBe(text);
    expect(await tok.decode(arr)).toBe(text);
    const path = join(tmp, 'tok', 'tokenizer.json');
    await tok.save(path);
    expect(JSON.parse(readFileSync(path, 'utf8')).model.type).toBe('BPE');
    const back = await Tokenizer.load(rt, path);
    expect(back.vocab).toBe(300);
    const again = back.encode(text);
    expect(Array.from((await again.toArray()) as BigInt64Array, Number)).toEqual(arr);
    const corpus = await tok.corpus(code);
    expect(corpus.vocab).toBe(300);
    expect(corpus.sampler(2, 8).vocab).toBe(300);
    expect(corpus.split(0.1)[1].vocab).toBe(300);
    for (const t of [ids, again]) t.free();
    corpus.free();
    tok.free();
    back.free();
    await expect(Tokenizer.train(rt, code, { vocab: 10 })).rejects.toMatchObject({ code: 'E_ARG', param: 'vocab' });
  });

  it('the held-out split is a few percent of the standard library, by file', async () => {
    const held = await loadCodeText(rt, 'heldout');
    expect(held.files).toBeGreaterThan(20);
    expect(held.bytes).toBe((await held.text.info()).shape[0]);
    const first = new TextDecoder().decode((await held.text.narrow(0, 0, 2000).toArray()) as Uint8Array);
    expect(first).toMatch(/import |def |class /);
    held.text.free();
    await expect(loadCodeText(rt, 'test' as 'train')).rejects.toMatchObject({ code: 'E_ARG', param: 'split' });
  });

  it('TextCorpus.fromTokens takes (N,) i64 only', async () => {
    const bad = rt.zeros([2, 3]);
    await expect(TextCorpus.fromTokens(rt, bad, 10)).rejects.toMatchObject({ code: 'E_ARG', param: 'tokens' });
    bad.free();
  });
});

describe('examples/code-gpt.ts', () => {
  it('trains a tiny rotary code GPT, saves it, and loadCodeGPT loads it back', async () => {
    const { code, out, err } = await runExample(['examples/code-gpt.ts', '--out', tmp], TINY);
    expect(code, `${out}\n${err}`).toBe(0);
    expect(out).toMatch(/tokenizer: byte-level BPE of 400 tokens learnt on the train files/);
    expect(out).toMatch(/model: rotary GPT, 2 blocks of width 32 in 1 head, context 64, 400 tokens/);
    expect(out).toMatch(/phase 1: 8 steps of 4 windows of 32 tokens, each with a 7-token span written again/);
    expect(out).toMatch(/step 8: train loss [\d.]+, copy ratio [\d.]+/);
    expect(out).toMatch(/trained: 38 steps in/);
    expect(out).toMatch(/\| first \| [\d.]+ \|\n\| second \(\d+ tokens later\) \| [\d.]+ \|\n\| ratio second \/ first \| [\d.]+ \|/);
    expect(out).toMatch(/greedy continuation of a prompt/);
    const paths = codeGPTPaths(join(tmp, 'code-gpt'));
    for (const f of [paths.checkpoint, paths.tokenizer, paths.meta]) expect(existsSync(f), f).toBe(true);
    const meta = JSON.parse(readFileSync(paths.meta, 'utf8'));
    expect(meta.spec).toMatchObject({ kind: 'gpt', positions: 'rotary', context: 64, dim: 32, vocab: 400 });
    expect(meta.training.steps).toBe(38);
    expect(meta.curriculum).toMatchObject({ steps: 8, window: 32, batch: 4 });
    expect(meta.curriculum.copy).toHaveLength(8);
    expect(meta.heldOut.loss).toBeLessThan(Math.log(400)); // better than a uniform guess
    expect(meta.copy.first).toBeGreaterThan(0);

    const gpt = await loadCodeGPT(rt, paths.dir, () => {});
    expect(gpt.spec).toMatchObject(meta.spec);
    expect(gpt.tokenizer.vocab).toBe(400);
    const [n] = (await gpt.heldOut.info()).shape;
    expect(n).toBe(meta.corpus.heldOutTokens);
    // the loaded weights are the trained ones: the same copy-check figures as the run's
    const again = await copyCheck(gpt.model, gpt.heldOut, { context: 64 });
    expect(again.first).toBeCloseTo(meta.copy.first, 3);
    expect(again.perPosition).toHaveLength(2 * again.span + again.gap - 1);
    for (const t of [gpt.heldOut] as Tensor[]) t.free();
    gpt.model.free();
    gpt.tokenizer.free();

    // --resume trains the checkpoint further (here with repeated spans): the figures count both runs' steps
    const second = await runExample(['examples/code-gpt.ts', '--out', tmp, '--resume'], { ...TINY, LIAISON_CODE_GPT_STEPS: '10', LIAISON_CODE_GPT_REPEAT: '50' });
    expect(second.code, second.err).toBe(0);
    expect(second.out).toMatch(/tokenizer: .*tokenizer\.json reused \(400 tokens\)/);
    expect(second.out).toMatch(/resuming: .*model\.safetensors after 38 steps/);
    expect(second.out).toMatch(/in 50% of them a 8-token span/);
    expect(JSON.parse(readFileSync(paths.meta, 'utf8')).training.steps).toBe(48);
  }, 240_000);
});
