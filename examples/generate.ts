/**
 * A small GPT learns English from CPython's documentation, writes some, and decodes
 * held-out text through KV caches of several sizes.
 *
 * The corpus is the ~460 KB of pydoc topics that ship with every CPython, as byte tokens
 * (TextCorpus); its last tenth is held out. The Trainer draws random windows inside each
 * traced step (`fitLM`, no upload per step) and trains with Adam (plugins/momentum/adam.ts). Then:
 *
 * - generation from a prompt, with the full cache and with the `sliding-window` KV policy;
 * - held-out perplexity decoded one token at a time through the cache (teacher forcing),
 *   with the full cache and with sliding windows of a few budgets: what each keeps
 *   (`kvCacheSize()`, tokens per layer, and the memory that is), what it costs in
 *   perplexity, and the decoding speed.
 *
 *     npx tsx examples/generate.ts                            # ~1500 steps, about a minute on 2 CPU cores
 *     npx tsx examples/generate.ts "The class statement"      # another prompt (ASCII)
 *     LIAISON_EXAMPLE_STEPS=100 npx tsx examples/generate.ts  # a quick, much less fluent run
 */
import { LiaisonError, Runtime } from '../bridge/index.js';
import { positiveInt, secs } from './env.js';
import { slidingWindow } from '../plugins/index.js';
import { decodeText, encodeText, Model, TextCorpus, Trainer } from '../sdk/index.js';
import { adam } from '../plugins/momentum/adam.js';

const STEPS = positiveInt('LIAISON_EXAMPLE_STEPS', 1500);
const CONTEXT = 128; // tokens per training window, and the model's longest sequence
const BATCH = 16; // windows per training step
const DIM = 64;
const LR = 3e-3;
const BUDGETS = [64, 32, 16]; // sliding-window sizes compared with the full cache
const EVAL_WINDOWS = 16; // held-out windows decoded through each cache
const TEMPERATURE = 0.7;


const int = (n: number) => Math.round(n).toLocaleString('en-US');
const kb = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`;

/** Up to `steps` new tokens after `text`, sampled reproducibly; the text and the decoding rate. */
async function write(model: Model, text: string, steps: number): Promise<{ text: string; tokensPerSecond: number }> {
  const rt = model.rt;
  const tokens = encodeText(text);
  const prompt = rt.tensor(tokens, [1, tokens.length], 'i64');
  await rt.flush();
  const t0 = performance.now();
  const out = model.generate(prompt, { steps, temperature: TEMPERATURE, seed: 1 }); // (1, T0 + steps)
  const all = (await out.toArray()) as BigInt64Array;
  const seconds = (performance.now() - t0) / 1000;
  prompt.free();
  out.free();
  return { text: decodeText(all), tokensPerSecond: steps / seconds };
}

/** Each line of a generated text, indented, with its control characters made visible. */
const quoted = (s: string) => s.split('\n').map((l) => `    ${l.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '·')}`).join('\n');

async function main(): Promise<void> {
  const promptText = process.argv[2] ?? 'The ';
  encodeText(promptText); // refuses non-ASCII before anything starts
  if (promptText.length >= CONTEXT) throw new LiaisonError('E_ARG', `the prompt must be shorter than the context (${CONTEXT} tokens)`);
  const tty = process.stderr.isTTY === true;
  const t0 = performance.now();
  const rt = await Runtime.start();
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'}), ready in ${secs(t0)}`);
  try {
    // 1. The text, held in the runtime as byte tokens, and its held-out tail.
    const corpus = await TextCorpus.load(rt, 'pydoc');
    const [train, heldOut] = corpus.split(0.1);
    console.log(`corpus: pydoc topics, ${int(corpus.size)} bytes of English: ${int(train.size)} to train on, the last ${int(heldOut.size)} held out`);

    // 2. The model: a GPT over bytes, each attention layer a KV hook point.
    const model = await Model.build(rt, { kind: 'gpt', vocab: corpus.vocab, context: CONTEXT, dim: DIM, layers: 2, heads: 4 }, { seed: 0 });
    const total = model.params.reduce((n, p) => n + p.numel, 0);
    console.log(`model: GPT, ${model.hookPoints.kv} blocks of width ${DIM} with 4 heads, context ${CONTEXT}, ${corpus.vocab} byte tokens: ${int(total)} parameters`);

    // 3. Training: windows drawn inside the step program, Adam's update traced into it.
    const perEpoch = Math.min(STEPS, 250);
    const epochs = Math.ceil(STEPS / perEpoch);
    const trainer = new Trainer({ model, optimizer: adam({ lr: LR }), logEvery: 50, progress: 'auto' });
    const evalWindows = 64;
    const before = await trainer.evaluate(heldOut, { context: CONTEXT, maxWindows: evalWindows });
    console.log(`before training: held-out perplexity ${before.perplexity!.toFixed(1)} (a uniform guess over ${corpus.vocab} bytes scores ${corpus.vocab})`);
    console.log(`training: ${epochs} epoch${epochs === 1 ? '' : 's'} of ${perEpoch} steps, each ${BATCH} random windows of ${CONTEXT} tokens; adam lr ${LR}`);
    if (!tty) trainer.on('epoch', (e) => console.log(`epoch ${e.epoch + 1}/${epochs}  train loss ${e.loss.toFixed(3)}  held-out perplexity ${e.perplexity?.toFixed(2)}  (${e.seconds.toFixed(1)} s)`));
    const t1 = performance.now();
    const history = await trainer.fitLM(train.sampler(BATCH, CONTEXT), { epochs, stepsPerEpoch: perEpoch, eval: heldOut, evalWindows });
    const trained = history[history.length - 1].perplexity!;
    console.log(`after ${int(epochs * perEpoch)} steps (${secs(t1)}): held-out perplexity ${trained.toFixed(2)} over ${evalWindows} windows of ${CONTEXT} tokens`);

    // 4. Generation: the full cache, then a sliding window far shorter than the text.
    const steps = CONTEXT - encodeText(promptText).length;
    const full = await write(model, promptText, steps);
    console.log(`\ngenerated, full cache (temperature ${TEMPERATURE}, ${int(full.tokensPerSecond)} tokens/s):\n${quoted(full.text)}`);
    const small = BUDGETS[BUDGETS.length - 1];
    model.setKVPolicy(slidingWindow({ budget: small }));
    const windowed = await write(model, promptText, steps);
    console.log(`generated, sliding-window budget ${small} (cache now ${(await model.kvCacheSize()).tokens.join(' and ')} tokens per layer; ${int(windowed.tokensPerSecond)} tokens/s):\n${quoted(windowed.text)}`);

    // 5. Held-out perplexity through each cache: every token decoded one at a time.
    const { x } = heldOut.windows(CONTEXT, EVAL_WINDOWS); // (16, 128) consecutive held-out windows
    const rows: string[][] = [['KV policy', 'kept per layer', 'KV memory', 'perplexity', 'tokens/s']];
    for (const budget of [null, ...BUDGETS]) {
      model.setKVPolicy(budget === null ? null : slidingWindow({ budget }));
      const r = await model.perplexity(x);
      const { tokens: kept, totalBytes } = await model.kvCacheSize(); // what each layer's cache held at the end
      const bytes = totalBytes / EVAL_WINDOWS; // every buffer the caches allocated, per sequence
      rows.push([budget === null ? 'full cache' : `sliding-window ${budget}`, `${kept[0]} tokens`, kb(bytes), r.perplexity.toFixed(3), int(r.tokensPerSecond)]);
    }
    model.setKVPolicy(null);
    console.log(`\nheld-out perplexity, decoded token by token through the cache (${EVAL_WINDOWS} windows of ${CONTEXT} tokens, batch ${EVAL_WINDOWS}; memory per sequence):`);
    const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
    for (const r of rows) console.log('  ' + r.map((v, c) => (c === 0 ? v.padEnd(widths[c]) : v.padStart(widths[c]))).join('   '));
  } finally {
    await rt.close();
  }
  console.log(`\nruntime stopped; ${secs(t0)} in all.`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
