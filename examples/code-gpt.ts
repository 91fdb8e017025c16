/**
 * A GPT that reads Python: trained on the standard library's source, with BPE tokens, and
 * checked for the one skill the KV-cache experiments lean on — copying what it saw hundreds
 * of tokens earlier (induction).
 *
 * - Corpus: every `.py` file of the standard library of the runtime's Python (the test
 *   suites included, site-packages not), split by file, one in 20 held out (`code_corpus`).
 * - Tokens: a byte-level BPE of 4,096 tokens learnt on the train files (Hugging Face
 *   `tokenizers`, sdk/text.ts `Tokenizer`), cached as `tokenizer.json` beside the checkpoint.
 * - Model: `{ kind: 'gpt', positions: 'rotary', smearKeys: true, context: 1024, vocab: 4096 }`,
 *   width 192 in 3 heads of 64, 3 blocks. Smeared keys (each key mixes in its predecessor's)
 *   let a single attention layer copy by content, which two layers must otherwise learn to
 *   compose — too slowly for minutes of CPU.
 * - Training, two phases under one Adam with a cosine decay (`Trainer.fitLM`, windows drawn
 *   inside each traced step): first many short windows (16 of 128 tokens a step), every one
 *   with a span of its own text written again, so that copying pays at every step and the
 *   earlier occurrence has few rivals for attention; then windows of the full 1,024 tokens,
 *   half of them with a repeated 128-token span, so that copying reaches across the context.
 * - Copy check ({@link copyCheck}): sequences [span, other held-out text, span] — the second
 *   occurrence's loss against the first's shows whether the model looks back and copies.
 *
 * Writes `model.safetensors`, `tokenizer.json`, `meta.json` (spec and figures), the training
 * curve and the copy check's per-position loss (PNGs) to `<out>/code-gpt/`. A checkpoint
 * already there is loaded and checked, not retrained (`--retrain` trains anew, `--resume`
 * trains it `LIAISON_CODE_GPT_STEPS` more steps).
 *
 *     npx tsx examples/code-gpt.ts                  # ~15 minutes on 2 CPU cores
 *     LIAISON_CODE_GPT_STEPS=40 LIAISON_CODE_GPT_DIM=64 LIAISON_CODE_GPT_LAYERS=2 \
 *       LIAISON_CODE_GPT_CONTEXT=128 LIAISON_CODE_GPT_VOCAB=512 LIAISON_CODE_GPT_BYTES=400000 \
 *       npx tsx examples/code-gpt.ts --out /tmp/x   # a tiny run (seconds)
 *     LIAISON_CODE_GPT_STEPS=200 npx tsx examples/code-gpt.ts --resume   # 200 more steps of long windows
 *
 * Knobs: LIAISON_CODE_GPT_SHORT_STEPS / _SHORT_WINDOW / _SHORT_BATCH (phase 1; 0 steps skips
 * it), LIAISON_CODE_GPT_STEPS / _BATCH / _REPEAT (phase 2: steps, windows a step, percent of
 * them with a repeated span), _DIM / _LAYERS / _HEADS / _CONTEXT / _VOCAB / _BYTES (the model
 * and the corpus), _EVAL_WINDOWS.
 *
 * Other examples import {@link loadCodeGPT} (the checkpoint, trained first if missing) and
 * {@link copyCheck}.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { LiaisonError, Runtime, type Tensor } from '../bridge/index.js';
import { adam } from '../plugins/momentum/adam.js';
import type { GPTSpec } from '../sdk/model-spec.js';
import { Model } from '../sdk/model.js';
import { plotLines } from '../sdk/plot.js';
import { loadCodeText, TextCorpus, Tokenizer, Trainer } from '../sdk/index.js';
import { copyCheck, type CopyCheck } from './code-gpt-copy.js';
import { outDir, positiveInt, secs } from './env.js';

export { copyCheck, type CopyCheck, type CopyCheckOptions } from './code-gpt-copy.js';

/** The full run's model: what `npx tsx examples/code-gpt.ts` trains with no knobs set. */
export const CODE_GPT_SPEC: GPTSpec = { kind: 'gpt', vocab: 4096, context: 1024, dim: 192, layers: 3, heads: 3, positions: 'rotary', smearKeys: true };

/** The run's settings: the full run's, or the env knobs' (tests set them for a tiny run). */
export function codeGPTSettings() {
  const dim = positiveInt('LIAISON_CODE_GPT_DIM', CODE_GPT_SPEC.dim!);
  const spec: GPTSpec = {
    ...CODE_GPT_SPEC,
    vocab: positiveInt('LIAISON_CODE_GPT_VOCAB', CODE_GPT_SPEC.vocab),
    context: positiveInt('LIAISON_CODE_GPT_CONTEXT', CODE_GPT_SPEC.context),
    dim,
    layers: positiveInt('LIAISON_CODE_GPT_LAYERS', CODE_GPT_SPEC.layers!),
    heads: positiveInt('LIAISON_CODE_GPT_HEADS', Math.max(1, Math.round(dim / 64))), // head dim 64
  };
  return {
    spec,
    /** Steps of the second phase: windows of the full context. */
    steps: positiveInt('LIAISON_CODE_GPT_STEPS', 600),
    batch: positiveInt('LIAISON_CODE_GPT_BATCH', 4), // windows of `context` tokens per step
    /**
     * Steps of the first phase (0: none): short windows, each repeating a span, as many tokens
     * a step as the second phase's. Copying forms there first: a short window dilutes an
     * attention head's look-back less, and every window rewards it.
     */
    shortSteps: nonNegativeInt('LIAISON_CODE_GPT_SHORT_STEPS', 720),
    shortWindow: positiveInt('LIAISON_CODE_GPT_SHORT_WINDOW', 128),
    shortBatch: positiveInt('LIAISON_CODE_GPT_SHORT_BATCH', 16),
    /** Bytes of the train text used (tokenizer and model): the whole ~30 MB unless set. */
    bytes: positiveInt('LIAISON_CODE_GPT_BYTES', Number.MAX_SAFE_INTEGER),
    lr: 2e-3,
    evalWindows: positiveInt('LIAISON_CODE_GPT_EVAL_WINDOWS', 24),
    /** Percent of the second phase's windows with a span repeated (TextCorpus.sampler's `repeat`); 0: natural text only. */
    repeatPercent: percent('LIAISON_CODE_GPT_REPEAT', 75),
  };
}

/** A percentage in [0, 100] from environment variable `name`; `fallback` when unset. */
function percent(name: string, fallback: number): number {
  const v = Number(process.env[name] ?? fallback);
  if (!(v >= 0 && v <= 100)) throw new LiaisonError('E_ARG', `${name} must be a percentage in [0, 100], got ${JSON.stringify(process.env[name])}`);
  return v;
}

/** An integer >= 0 from environment variable `name`; `fallback` when unset. */
function nonNegativeInt(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new LiaisonError('E_ARG', `${name} must be an integer >= 0, got ${JSON.stringify(raw)}`);
  return n;
}

/** Where a run keeps its files: `<dir>` defaults to examples/out/code-gpt. */
export function codeGPTPaths(dir?: string) {
  const d = dir ?? join(dirname(fileURLToPath(import.meta.url)), 'out', 'code-gpt');
  return {
    dir: d, checkpoint: join(d, 'model.safetensors'), tokenizer: join(d, 'tokenizer.json'), meta: join(d, 'meta.json'),
    curve: join(d, 'training-curve.png'), copyPlot: join(d, 'copy-check.png'), copyForming: join(d, 'copy-forming.png'),
  };
}

/** What {@link loadCodeGPT} gives: the trained decoder, its tokenizer and the held-out tokens. */
export interface CodeGPT {
  model: Model;
  tokenizer: Tokenizer;
  /** (N,) i64: the held-out files, BPE-encoded (the separator between files kept). */
  heldOut: Tensor;
  spec: GPTSpec;
  /** meta.json: the figures of the run that made the checkpoint. */
  meta: CodeGPTMeta;
}

export interface CodeGPTMeta {
  spec: GPTSpec;
  corpus: { trainFiles: number; trainBytes: number; heldOutFiles: number; heldOutBytes: number; trainTokens: number; heldOutTokens: number };
  tokenizer: { vocab: number; seconds: number | null };
  training: { steps: number; batch: number; lr: number; seconds: number; stepsPerSecond: number; parameters: number };
  /** The first phase (short windows with repeats): its size and the copy ratio after each chunk of it. */
  curriculum?: { steps: number; window: number; batch: number; copy: { step: number; ratio: number }[] };
  heldOut: { loss: number; perplexity: number; windows: number };
  copy: CopyCheck;
}

type Log = (line: string) => void;

/** The tokenizer of `dir`, or one learnt on `text` and saved there. */
async function tokenizerFor(rt: Runtime, paths: ReturnType<typeof codeGPTPaths>, text: Tensor, vocab: number, log: Log): Promise<{ tok: Tokenizer; seconds: number | null }> {
  if (existsSync(paths.tokenizer)) {
    const tok = await Tokenizer.load(rt, paths.tokenizer);
    log(`tokenizer: ${relative(process.cwd(), paths.tokenizer)} reused (${tok.vocab} tokens)`);
    return { tok, seconds: null };
  }
  const t0 = performance.now();
  const tok = await Tokenizer.train(rt, text, { vocab });
  const seconds = (performance.now() - t0) / 1000;
  await tok.save(paths.tokenizer);
  log(`tokenizer: byte-level BPE of ${tok.vocab} tokens learnt on the train files in ${seconds.toFixed(1)} s, saved as ${relative(process.cwd(), paths.tokenizer)}`);
  return { tok, seconds };
}

/** The train text, cut to `bytes` at a file boundary when smaller (the tiny runs). */
async function trainText(rt: Runtime, bytes: number) {
  const train = await loadCodeText(rt, 'train');
  if (bytes >= train.bytes) return train;
  const cut = train.text.narrow(0, 0, bytes);
  train.text.free();
  return { ...train, text: cut, bytes, files: NaN };
}

/**
 * Train the code GPT into `dir` (its tokenizer reused when there), with progress; returns it
 * loaded. `resume`: start from the checkpoint there and train `steps` more (a fresh Adam
 * with its own warm-up and decay); the figures then count both runs' steps and time.
 */
export async function trainCodeGPT(rt: Runtime, dir?: string, log: Log = console.log, resume = false): Promise<CodeGPT> {
  const paths = codeGPTPaths(dir);
  const cfg = codeGPTSettings();
  await mkdir(paths.dir, { recursive: true });
  const train = await trainText(rt, cfg.bytes);
  const held = await loadCodeText(rt, 'heldout');
  log(`corpus: the standard library's .py files: ${Number.isNaN(train.files) ? `the first ${mb(train.bytes)} of the train files` : `${train.files} train files (${mb(train.bytes)})`}, ${held.files} held out (${mb(held.bytes)})`);
  const { tok, seconds: tokSeconds } = await tokenizerFor(rt, paths, train.text, cfg.spec.vocab, log);
  const t1 = performance.now();
  const corpus = await tok.corpus(train.text);
  const heldOut = await tok.corpus(held.text);
  train.text.free();
  held.text.free();
  log(`tokens: ${int(corpus.size)} to train on, ${int(heldOut.size)} held out (${(train.bytes / corpus.size).toFixed(2)} bytes a token; encoded in ${secs(t1)})`);

  const before = resume ? JSON.parse(await readFile(paths.meta, 'utf8')) as CodeGPTMeta : null;
  const spec: GPTSpec = before ? before.spec : { ...cfg.spec, vocab: tok.vocab };
  const model = before ? await resumed(rt, paths.checkpoint) : await Model.build(rt, spec, { seed: 0 });
  const done = before?.training.steps ?? 0;
  if (before) log(`resuming: ${relative(process.cwd(), paths.checkpoint)} after ${done} steps (held-out loss ${before.heldOut.loss.toFixed(3)})`);
  const parameters = model.params.reduce((n, p) => n + p.numel, 0);
  log(`model: rotary GPT, ${spec.layers} blocks of width ${spec.dim} in ${spec.heads} head${spec.heads === 1 ? '' : 's'}, context ${spec.context}, ${spec.vocab} tokens: ${int(parameters)} parameters`);
  const shortSteps = before ? 0 : cfg.shortSteps; // a resumed run has had its first phase
  const total = shortSteps + cfg.steps;
  const warmup = Math.min(100, Math.ceil(total / 10));
  const optimizer = adam({ lr: cfg.lr, schedule: 'cosine', warmupSteps: warmup, decaySteps: Math.max(1, total - warmup), minLr: cfg.lr / 10 });
  const trainer = new Trainer({ model, optimizer, logEvery: 10, progress: 'auto', evalBatchSize: 4, seed: 0 });
  const curve: { step: number; loss: number }[] = [];
  const evals: { step: number; loss: number }[] = [];
  const copies: { step: number; ratio: number }[] = [];
  let at = done; // steps before the running fit
  trainer.on('progress', (p) => curve.push({ step: at + p.step, loss: p.loss }));
  log(`training: ${total} steps, adam lr ${cfg.lr}, ${warmup} warm-up steps, cosine to ${cfg.lr / 10}`);
  const t2 = performance.now();
  const chunks = Math.min(12, shortSteps);
  const per = chunks > 0 ? Math.ceil(shortSteps / chunks) : 0;
  if (chunks > 0) {
    // phase 1: short windows, every one repeating a span, checked for copying as they go
    const win = cfg.shortWindow;
    const span = Math.floor(win / 4) - 1;
    log(`phase 1: ${chunks * per} steps of ${cfg.shortBatch} windows of ${win} tokens, each with a ${span}-token span written again; the copy check at ${win} tokens after every ${per}:`);
    const sampler = corpus.sampler(cfg.shortBatch, win, { repeat: { fraction: 1, span } });
    for (let c = 0; c < chunks; c++) {
      at = done + c * per;
      await trainer.fitLM(sampler, { epochs: 1, stepsPerEpoch: per });
      const copy = await copyCheck(model, heldOut.tokens, { context: win, span: win / 8, gap: win - win / 4, sequences: 16 });
      copies.push({ step: done + (c + 1) * per, ratio: copy.ratio });
      log(`  step ${done + (c + 1) * per}: train loss ${curve.at(-1)?.loss.toFixed(3)}, copy ratio ${copy.ratio.toFixed(3)} (${copy.first.toFixed(2)} -> ${copy.second.toFixed(2)} nats) (${secs(t2)})`);
    }
  }
  const epochs = Math.min(10, cfg.steps);
  const perEpoch = Math.ceil(cfg.steps / epochs);
  const base = done + chunks * per; // phase 2 starts here
  at = base;
  trainer.on('epoch', (e) => {
    if (e.evalLoss === undefined) return; // phase 1's chunks: no held-out pass
    evals.push({ step: base + (evals.length + 1) * perEpoch, loss: e.evalLoss });
    log(`epoch ${evals.length}/${epochs}: train loss ${e.loss.toFixed(3)}, held-out loss ${e.evalLoss?.toFixed(3)} (${e.seconds.toFixed(0)} s)`);
  });
  const span = Math.min(128, Math.floor(spec.context / 8));
  const repeat = cfg.repeatPercent > 0 ? { repeat: { fraction: cfg.repeatPercent / 100, span } } : {};
  log(`phase ${chunks > 0 ? 2 : 1}: ${epochs * perEpoch} steps of ${cfg.batch} windows of ${spec.context} tokens${cfg.repeatPercent > 0 ? `; in ${cfg.repeatPercent}% of them a ${span}-token span of the first half is written again in the second` : ''}`);
  await trainer.fitLM(corpus.sampler(cfg.batch, spec.context, repeat), { epochs, stepsPerEpoch: perEpoch, eval: heldOut, evalWindows: Math.min(4, cfg.evalWindows) });
  const now = (performance.now() - t2) / 1000;
  const ran = base - done + epochs * perEpoch;
  log(`trained: ${ran} steps in ${now.toFixed(0)} s (${(ran / now).toFixed(2)} steps/s)`);
  const steps = done + ran;
  const seconds = now + (before?.training.seconds ?? 0);
  trainer.free();

  const figures = await measure(model, heldOut, spec, cfg.evalWindows, log);
  const meta: CodeGPTMeta = {
    spec,
    corpus: { trainFiles: train.files, trainBytes: train.bytes, heldOutFiles: held.files, heldOutBytes: held.bytes, trainTokens: corpus.size, heldOutTokens: heldOut.size },
    tokenizer: { vocab: tok.vocab, seconds: tokSeconds ?? before?.tokenizer.seconds ?? null },
    training: { steps, batch: cfg.batch, lr: cfg.lr, seconds, stepsPerSecond: steps / seconds, parameters },
    ...(chunks > 0 ? { curriculum: { steps: chunks * per, window: cfg.shortWindow, batch: cfg.shortBatch, copy: copies } } : before?.curriculum ? { curriculum: before.curriculum } : {}),
    ...figures,
  };
  await model.save(paths.checkpoint, { metadata: { 'code-gpt': JSON.stringify({ steps, seconds }) } });
  await writeFile(paths.meta, JSON.stringify(meta, null, 2) + '\n');
  corpus.free();
  await plot(paths.curve, {
    series: [{ label: 'train (mean of 10 steps)', x: curve.map((c) => c.step), y: curve.map((c) => c.loss) }, { label: 'held out', x: evals.map((e) => e.step), y: evals.map((e) => e.loss), style: 'o-' }],
    title: 'code GPT: training loss', xlabel: 'step', ylabel: 'cross-entropy (nats / token)',
  }, log);
  await plotCopy(paths.copyPlot, figures.copy, log);
  if (copies.length > 1) {
    await plot(paths.copyForming, {
      series: [{ label: `copy ratio at ${cfg.shortWindow} tokens (second / first occurrence)`, x: copies.map((c) => c.step), y: copies.map((c) => c.ratio), style: 'o-' }],
      title: 'code GPT, phase 1: copying forms', xlabel: 'step', ylabel: 'loss ratio (1: no copying)',
    }, log);
  }
  return { model, tokenizer: tok, heldOut: heldOut.tokens, spec, meta };
}

/** The model of a checkpoint, its extra tensors dropped. */
async function resumed(rt: Runtime, path: string): Promise<Model> {
  const { model, tensors } = await Model.fromCheckpoint(rt, path);
  for (const t of Object.values(tensors)) t.free();
  return model;
}

/** Held-out loss over consecutive windows and the copy check. */
async function measure(model: Model, heldOut: TextCorpus, spec: GPTSpec, windows: number, log: Log) {
  const { evaluate } = await import('../sdk/evaluate.js');
  const ev = await evaluate(model, heldOut, { loss: 'cross_entropy', batchSize: 4, context: spec.context, maxWindows: windows });
  const n = Math.min(windows, Math.floor((heldOut.size - 1) / spec.context));
  log(`held out: loss ${ev.loss.toFixed(3)} nats/token, perplexity ${ev.perplexity!.toFixed(2)} (${n} windows of ${spec.context} tokens)`);
  const copy = await copyCheck(model, heldOut.tokens, { context: spec.context });
  log(`copy check (${copy.sequences} sequences: a ${copy.span}-token held-out span, ${copy.gap} tokens of other held-out code, the span again):`);
  log('');
  log('| occurrence | mean loss (nats/token) |');
  log('|---|---:|');
  log(`| first | ${copy.first.toFixed(3)} |`);
  log(`| second (${copy.span + copy.gap} tokens later) | ${copy.second.toFixed(3)} |`);
  log(`| ratio second / first | ${copy.ratio.toFixed(3)} |`);
  log('');
  return { heldOut: { loss: ev.loss, perplexity: ev.perplexity!, windows: n }, copy };
}

async function plot(path: string, spec: Omit<Parameters<typeof plotLines>[0], 'path'>, log: Log): Promise<void> {
  await plotLines({ path, ...spec }).then(() => log(`plot: ${relative(process.cwd(), path)}`), (e: unknown) => log(`plot: not drawn (${(e as Error).message})`));
}

async function plotCopy(path: string, copy: CopyCheck, log: Log): Promise<void> {
  await plot(path, {
    series: [
      { label: 'mean loss at each position', y: copy.perPosition, style: '-' },
      { label: 'running mean of 16', x: copy.perPosition.slice(15).map((_, i) => i + 15), y: copy.perPosition.slice(15).map((_, i) => copy.perPosition.slice(i, i + 16).reduce((a, v) => a + v, 0) / 16) },
    ],
    title: `copy check: [span ${copy.span}, gap ${copy.gap}, span again]`, xlabel: 'position of the predicted token', ylabel: 'loss (nats)',
  }, log);
}

/**
 * The code GPT of `dir` (default examples/out/code-gpt): its checkpoint and tokenizer
 * loaded, the held-out files encoded; trained first (about 15 minutes, with progress) when
 * there is no checkpoint. Free `model`, `tokenizer` and `heldOut` when done.
 */
export async function loadCodeGPT(rt: Runtime, dir?: string, log: Log = (l) => process.stderr.write(`${l}\n`)): Promise<CodeGPT> {
  const paths = codeGPTPaths(dir);
  if (!existsSync(paths.checkpoint) || !existsSync(paths.tokenizer) || !existsSync(paths.meta)) {
    log(`code GPT: no checkpoint in ${paths.dir}; training it first`);
    return trainCodeGPT(rt, dir, log);
  }
  const { model, tensors } = await Model.fromCheckpoint(rt, paths.checkpoint);
  for (const t of Object.values(tensors)) t.free();
  const tokenizer = await Tokenizer.load(rt, paths.tokenizer);
  const held = await loadCodeText(rt, 'heldout');
  const heldOut = tokenizer.encode(held.text);
  held.text.free();
  const meta = JSON.parse(await readFile(paths.meta, 'utf8')) as CodeGPTMeta;
  return { model, tokenizer, heldOut, spec: model.spec as GPTSpec, meta };
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const mb = (bytes: number) => `${(bytes / 1e6).toFixed(1)} MB`;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const paths = codeGPTPaths(join(outDir(argv), 'code-gpt'));
  const t0 = performance.now();
  const rt = await Runtime.start();
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  try {
    const resume = argv.includes('--resume') && existsSync(paths.checkpoint);
    const fresh = resume || argv.includes('--retrain') || !existsSync(paths.checkpoint);
    const gpt = fresh ? await trainCodeGPT(rt, paths.dir, console.log, resume) : await loadCodeGPT(rt, paths.dir, console.log);
    if (!fresh) {
      console.log(`checkpoint: ${relative(process.cwd(), paths.checkpoint)} (trained ${gpt.meta.training.steps} steps in ${gpt.meta.training.seconds.toFixed(0)} s); measuring it again`);
      const heldOut = await TextCorpus.fromTokens(rt, gpt.heldOut, gpt.tokenizer.vocab);
      const figures = await measure(gpt.model, heldOut, gpt.spec, codeGPTSettings().evalWindows, console.log);
      await plotCopy(paths.copyPlot, figures.copy, console.log);
    }
    const prompt = 'def read_config(path):\n    """Read a JSON file."""\n';
    const ids = gpt.tokenizer.encode(prompt);
    const { shape } = await ids.info();
    const x = ids.reshape([1, shape[0]]);
    const out = gpt.model.generate(x, { steps: 60 });
    const text = await gpt.tokenizer.decode(out);
    console.log(`\ngreedy continuation of a prompt (60 tokens):\n${text.split('\n').map((l) => `    ${l}`).join('\n')}`);
    for (const t of [ids, x, out, gpt.heldOut]) t.free();
    gpt.model.free();
    gpt.tokenizer.free();
  } finally {
    await rt.close();
  }
  console.log(`\nruntime stopped; ${secs(t0)} in all.`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
