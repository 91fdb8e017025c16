/**
 * Low-rank adapters on a GPT: a small byte-level GPT pretrained on English (CPython's pydoc
 * topics, as examples/generate.ts trains it), adapted to Python source (the standard
 * library's `.py` files, `loadCodeText`) with `lora`, `adalora` and `adapad`
 * (plugins/adapters/; adapad also with `curvature: 1`, its deflation on, as `adapad-c1`) at
 * matched budgets, the base frozen; the held-out loss on unseen source files against the
 * adapter's parameters, over seeds; the adapter size adapad needs to reach lora's loss; the
 * rank pattern adapad found, per module. Training runs eight epochs of STEPS / 8 steps, so
 * that adapad's rank history (one pattern per epoch) has points to plot.
 *
 * Tokens are bytes (vocabulary 128, the pydoc corpus's): the cheapest choice that works — the
 * pretrained model reads code with no new tokenizer, and the few non-ASCII bytes of the
 * sources (comments, strings) become byte 127. Adapters sit on every Linear of the blocks
 * (attention qkv and proj, MLP fc and proj); the head is left out, as the family does by default.
 *
 *     npx tsx examples/adapters-gpt.ts          # examples/out/adapters-gpt{.md,.json,.png,-ranks.png}
 *     LIAISON_ADAPTERS_SEEDS=1 LIAISON_ADAPTERS_GPT_STEPS=16 LIAISON_ADAPTERS_PRETRAIN_STEPS=40 \
 *       LIAISON_ADAPTERS_RANKS=1 npx tsx examples/adapters-gpt.ts --out /tmp/x
 *
 * Knobs: LIAISON_ADAPTERS_SEEDS (3), LIAISON_ADAPTERS_GPT_STEPS (fine-tuning steps, 240),
 * LIAISON_ADAPTERS_METHODS (a comma-separated subset of lora, adalora, adapad, adapad-c1, adapad-auto: all),
 * LIAISON_ADAPTERS_RANKS (average components per module: 1,2,4), LIAISON_ADAPTERS_PRETRAIN_STEPS
 * (1500; the pretrained GPT is cached as `<out>/adapters-gpt-base.safetensors` and reused),
 * LIAISON_ADAPTERS_GPT_EVAL_WINDOWS (held-out windows of 128 bytes, 64).
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Runtime } from '../bridge/index.js';
import { adam } from '../plugins/momentum/adam.js';
import { type GPTSpec, loadCodeText, type Model, TextCorpus, Trainer, type TrainerPlugin } from '../sdk/index.js';
import { adapterRun, AUTO_NOTE, C1_NOTE, fresh, selectedMethods, pretrained, type Run, spread, writeReport } from './adapters-lib.js';
import { outDir, positiveInt, positiveNumbers, secs } from './env.js';

const SEEDS = positiveInt('LIAISON_ADAPTERS_SEEDS', 3);
const STEPS = 8 * Math.ceil(positiveInt('LIAISON_ADAPTERS_GPT_STEPS', 240) / 8); // eight epochs of STEPS / 8
const PRETRAIN_STEPS = positiveInt('LIAISON_ADAPTERS_PRETRAIN_STEPS', 1500);
const EVAL_WINDOWS = positiveInt('LIAISON_ADAPTERS_GPT_EVAL_WINDOWS', 64);
const RANKS = positiveNumbers('LIAISON_ADAPTERS_RANKS', [1, 2, 4]).map(Math.round);
const CONTEXT = 128, BATCH = 16, LR = 1e-2;
const SPEC: GPTSpec = { kind: 'gpt', vocab: 128, context: CONTEXT, dim: 64, layers: 2, heads: 4 };
const TARGETS = 'blocks\\..*';
const CODE_BYTES = 2_000_000; // of the ~30 MB of train sources: far more than the fine-tuning reads

const int = (x: number) => Math.round(x).toLocaleString('en-US');
const nats = (x: number) => x.toFixed(3);

/** Up to `bytes` of one side of the code corpus as byte tokens below 128 (a non-ASCII byte becomes 127). */
async function codeCorpus(rt: Runtime, split: 'train' | 'heldout', bytes: number): Promise<TextCorpus> {
  const { text, bytes: n } = await loadCodeText(rt, split);
  const m = Math.min(n, bytes);
  const head = text.narrow(0, 0, m);
  const wide = head.to('i64');
  const tokens = wide.clamp(0, 127);
  for (const t of [text, head, wide]) t.free();
  return new TextCorpus(rt, tokens, m);
}

async function main(): Promise<void> {
  const dir = outDir(process.argv.slice(2));
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const rt = await Runtime.start();
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  const made: { free(): void }[] = [];
  try {
    const pydoc = await TextCorpus.load(rt, 'pydoc');
    const [english, englishHeld] = pydoc.split(0.1);
    const [code, codeHeld] = [await codeCorpus(rt, 'train', CODE_BYTES), await codeCorpus(rt, 'heldout', CODE_BYTES)];
    made.push(pydoc, english, englishHeld, code, codeHeld);
    console.log(`data: ${int(english.size)} bytes of pydoc English to pretrain on; ${int(code.size)} bytes of standard-library sources to adapt on, ${int(EVAL_WINDOWS * CONTEXT)} bytes of held-out source files to score`);

    // 1. The base: the GPT trained on English (cached).
    const path = join(dir, 'adapters-gpt-base.safetensors');
    const base = await pretrained(rt, path, SPEC, async (m) => {
      const t = new Trainer({ model: m, optimizer: adam({ lr: 3e-3 }), progress: 'auto', seed: 0 });
      const per = Math.min(PRETRAIN_STEPS, 250);
      await t.fitLM(english.sampler(BATCH, CONTEXT), { epochs: Math.ceil(PRETRAIN_STEPS / per), stepsPerEpoch: per });
      t.free();
      return `${Math.ceil(PRETRAIN_STEPS / per) * per} steps of Adam on pydoc`;
    }, console.log);
    made.push(base);
    const total = base.params.reduce((n, p) => n + p.numel, 0);
    const score = async (m: Model) => {
      const t = new Trainer({ model: m, optimizer: adam({}), progress: 'none' });
      const r = await t.evaluate(codeHeld, { context: CONTEXT, maxWindows: EVAL_WINDOWS });
      t.free();
      return r.loss;
    };
    const baseLoss = await score(base);
    console.log(`base GPT (${int(total)} parameters): held-out loss on source files ${nats(baseLoss)} nats/byte`);

    // 2. Fine-tuning, each from the same base: the whole GPT (the reference), then the adapters.
    const tune = async (m: Model, seed: number, lr: number, plugins: TrainerPlugin[]): Promise<Trainer> => {
      const t = new Trainer({ model: m, optimizer: adam({ lr }), progress: 'none', seed, plugins });
      await t.fitLM(code.sampler(BATCH, CONTEXT), { epochs: 8, stepsPerEpoch: STEPS / 8 });
      return t;
    };
    const fullLoss: number[] = [];
    for (let seed = 0; seed < SEEDS; seed++) {
      const m = await fresh(rt, path);
      const t = await tune(m, seed, 3e-3, []);
      fullLoss.push(await score(m));
      t.free();
      m.free();
    }
    console.log(`full fine-tuning (${int(total)} parameters, ${STEPS} steps): held-out loss ${spread(fullLoss, nats)}`);
    const runs: Run[] = [];
    let modules = 0;
    for (const rank of RANKS) {
      for (const method of selectedMethods()) {
        for (let seed = 0; seed < SEEDS; seed++) {
          const run = await adapterRun(rt, path, { method, rank, seed, steps: STEPS, targets: TARGETS, samples: BATCH, show: (q) => `held-out loss ${nats(q)}` }, async (model, adapter) => {
            const trainer = await tune(model, seed, LR, [adapter]);
            return { quality: await score(model), free: () => trainer.free() };
          });
          modules = run.modules;
          runs.push(run);
        }
      }
    }

    // 3. Tables and plots.
    await writeReport(dir, 'adapters-gpt', {
      runs, total, what: 'the GPT', quality: 'held-out loss (nats/byte)', show: nats, higherIsBetter: false,
      before: [['none (base)', '—', '0', '0', '0%', nats(baseLoss), '—']],
      after: [['full fine-tuning', '—', int(total), int(total), '100%', spread(fullLoss, nats), '—']],
      summary: `Byte-level GPT (width 64, 2 blocks, context ${CONTEXT}; ${int(total)} parameters) pretrained on pydoc English, adapted to standard-library sources for ${STEPS} steps of ${BATCH} windows (Adam lr ${LR}; full fine-tuning lr 3e-3), adapters on the ${modules} Linears of the blocks; held-out loss over ${EVAL_WINDOWS} windows of ${CONTEXT} bytes of unseen source files, mean (min–max) over ${SEEDS} seed${SEEDS === 1 ? '' : 's'}.`,
      note: `Rank patterns list the modules in the order ${Object.keys(runs[0].pattern).join(', ')}. ${C1_NOTE} ${AUTO_NOTE}`,
      json: { base: baseLoss, full: fullLoss, total, steps: STEPS, modules },
      title: 'GPT pydoc → Python sources: held-out loss', ylabel: 'held-out loss (nats/byte)',
    });
  } finally {
    for (const m of made.reverse()) m.free();
    await rt.close();
  }
  console.log(`done in ${secs(t0)}`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
