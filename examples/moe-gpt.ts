/**
 * Mixture-of-experts feed-forward layers in a small byte-level GPT, trained on English
 * (CPython's pydoc topics, as examples/generate.ts trains its GPT) with each router of the
 * family at equal active parameters, against the dense GPT they replace.
 *
 * Every block's MLP (width D → 4D → D in the dense GPT) becomes E = 4 experts. Active
 * parameters are held equal by keeping (expert hidden width) × (experts run per token) at
 * 4D, so every model spends the dense MLP's 2·D·4D weights per token:
 *
 * - `soft` (dense routing: every expert runs on every token) — 4 experts of width D;
 * - `topk` k = 1 (Switch) — width 4D; k = 2 with capacity factor 1.25 — width 2D (tokens
 *   over an expert's capacity are dropped: they pass through the residual only);
 * - `expert-choice` with capacity 2 — width 2D (each expert takes ⌈2N/E⌉ tokens: 2 experts
 *   per token on average, some tokens get none, some more);
 * - `soft-moe` — width 4D with S = N/E slots per expert for the N = batch × context tokens
 *   of a training step: the experts process N slots in all, a top-1 model's expert compute,
 *   but every slot mixes all N tokens and every token mixes all slots.
 *
 * Both `expert-choice` and `soft-moe` route a token by looking at the others of the batch,
 * later positions of its own sequence included: in a decoder they are not causal (the
 * papers say so), and their held-out perplexity, measured the same teacher-forced way, is
 * not comparable with the causal models' (Soft MoE can read the next byte from its slots).
 *
 * Reported per model: parameters (all, and active per token in the feed-forward layers),
 * held-out perplexity over windows of the last tenth of the corpus (scored in forwards of
 * the training batch's size, so that the batch-dependent routers route the N they trained at), the load balance from
 * the router metrics of the Trainer's epoch events (`router.load`, the share of routed mass
 * per expert, mean over layers and steps: max share × E, 1 = balanced, E = one expert takes
 * everything; `router.dropped`, `router.entropy`), and training tokens per second. Writes
 * `<out>/moe-gpt.md` (the table), `moe-gpt.json` and `moe-gpt.png` (held-out perplexity and load imbalance by step).
 *
 *     npx tsx examples/moe-gpt.ts                  # examples/out/moe-gpt{.md,.json,.png}, ~8 min
 *     LIAISON_MOE_GPT_SEEDS=3 npx tsx examples/moe-gpt.ts   # docs/routers.md's table: ~12 min on the shared 2-core machine
 *     LIAISON_MOE_GPT_SEEDS=1 LIAISON_MOE_GPT_BATCH=2 LIAISON_MOE_GPT_STEPS=2 LIAISON_MOE_GPT_EPOCHS=1 LIAISON_MOE_GPT_EVAL_WINDOWS=2 \
 *       npx tsx examples/moe-gpt.ts --out /tmp/x     # the fast variant the tests run
 *
 * Knobs: LIAISON_MOE_GPT_STEPS (training steps per model, 240), LIAISON_MOE_GPT_EPOCHS
 * (epochs they are split in, one held-out and metrics point each, 4; tokens/s is the fastest
 * epoch's over seeds, the first left out as it also traces the step: the shared machine's
 * load comes and goes, and the best epoch is the least disturbed), LIAISON_MOE_GPT_EVAL_WINDOWS (held-out
 * windows, 128), LIAISON_MOE_GPT_BATCH (windows per step, 8), LIAISON_MOE_GPT_SEEDS (2: the
 * table gives perplexity as mean (min–max), the rest as means), LIAISON_MOE_GPT_ARMS (a
 * comma-separated subset of dense, soft, topk1, topk2, expert-choice, soft-moe; all),
 * LIAISON_THREADS (torch threads, 1: on a shared machine more threads fight for the cores).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LiaisonError, Runtime } from '../bridge/index.js';
import { expertChoice, softMoe, topk } from '../plugins/index.js';
import { soft } from '../plugins/routers/soft.js';
import { adam } from '../plugins/momentum/adam.js';
import { type GPTSpec, Model, plotLines, type Router, TextCorpus, Trainer } from '../sdk/index.js';
import { outDir, positiveInt, secs } from './env.js';
import { markdownTable, textTable } from './tables.js';

const EPOCHS = positiveInt('LIAISON_MOE_GPT_EPOCHS', 4);
const STEPS = EPOCHS * Math.ceil(positiveInt('LIAISON_MOE_GPT_STEPS', 240) / EPOCHS);
const EVAL_WINDOWS = positiveInt('LIAISON_MOE_GPT_EVAL_WINDOWS', 128);
const BATCH = positiveInt('LIAISON_MOE_GPT_BATCH', 8);
const SEEDS = positiveInt('LIAISON_MOE_GPT_SEEDS', 2);
const CONTEXT = 64, DIM = 64, LAYERS = 2, HEADS = 4, EXPERTS = 4, LR = 3e-3;
const BASE: GPTSpec = { kind: 'gpt', vocab: 128, context: CONTEXT, dim: DIM, layers: LAYERS, heads: HEADS, mlpRatio: 4 };
const FFN = 4 * DIM; // the dense MLP's hidden width: active expert width × experts per token
// feed-forward weights a token uses (biases aside): the dense MLP's 2·D·4D per block, for every arm
const ACTIVE = LAYERS * 2 * DIM * FFN;

/** One model of the comparison: its router (none: dense), expert width, and experts per token. */
interface Arm { key: string; name: string; router: () => Router | null; hidden: number; perToken: string }

const arms = (tokens: number): Arm[] => [
  { key: 'dense', name: 'dense GPT (reference)', router: () => null, hidden: FFN, perToken: '1 MLP' },
  { key: 'soft', name: 'soft', router: () => soft({}), hidden: FFN / EXPERTS, perToken: `all ${EXPERTS}` },
  { key: 'topk1', name: 'topk k=1', router: () => topk({ k: 1 }), hidden: FFN, perToken: '1' },
  { key: 'topk2', name: 'topk k=2, capacity 1.25', router: () => topk({ k: 2, capacity: 1.25 }), hidden: FFN / 2, perToken: '≤ 2' },
  { key: 'expert-choice', name: 'expert-choice c=2', router: () => expertChoice({ capacity: 2 }), hidden: FFN / 2, perToken: '2 on average' },
  { key: 'soft-moe', name: `soft-moe S=${Math.max(1, Math.round(tokens / EXPERTS))}`, router: () => softMoe({ slots: Math.max(1, Math.round(tokens / EXPERTS)) }), hidden: FFN, perToken: 'N/E slots per expert' },
];
const KEYS = arms(EXPERTS).map((a) => a.key);
const ONLY = (process.env.LIAISON_MOE_GPT_ARMS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
for (const k of ONLY) if (!KEYS.includes(k)) throw new LiaisonError('E_ARG', `LIAISON_MOE_GPT_ARMS: '${k}' is none of ${KEYS.join(', ')}`, { param: 'LIAISON_MOE_GPT_ARMS' });

/** One training run (one seed). */
interface Run {
  seed: number; params: number; perplexity: number; tokensPerSecond: number;
  imbalance?: number; dropped?: number; entropy?: number;
  curve: { step: number; loss: number; perplexity: number; imbalance?: number }[];
}
/** An arm over its seeds: perplexity as mean and range, the rest as means; `runs` each seed's. */
interface Result {
  name: string; params: number; active: number; perToken: string; perplexity: number; range: [number, number]; tokensPerSecond: number;
  imbalance?: number; dropped?: number; entropy?: number; runs: Run[];
}

const int = (x: number) => Math.round(x).toLocaleString('en-US');
const num = (m: unknown): number | undefined => (typeof m === 'number' ? m : undefined);
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
/** The mean of a field over runs, undefined when a run lacks it (the dense GPT has no router metrics). */
const meanOf = (xs: (number | undefined)[]) => (xs.every((x) => x !== undefined) ? mean(xs as number[]) : undefined);
/** Max share × E of a load vector (E,): 1 when every expert gets 1/E. */
const imbalanceOf = (load: unknown): number | undefined => (Array.isArray(load) && load.length ? Math.max(...(load as number[])) * load.length : undefined);

async function run(rt: Runtime, arm: Arm, seed: number, train: TextCorpus, heldOut: TextCorpus): Promise<Run> {
  const router = arm.router();
  const spec: GPTSpec = router ? { ...BASE, moe: { experts: EXPERTS, hidden: arm.hidden, router } } : BASE;
  const model = await Model.build(rt, spec, { seed });
  // held-out windows scored BATCH at a time: the N a forward routes is the training one, which
  // expert-choice's C and soft-moe's slots per token depend on
  const trainer = new Trainer({ model, optimizer: adam({ lr: LR }), plugins: router ? [router] : [], logEvery: 10, progress: 'auto', seed, evalBatchSize: BATCH });
  try {
    const params = model.params.reduce((n, p) => n + p.numel, 0);
    const sampler = train.sampler(BATCH, CONTEXT);
    const curve: Run['curve'] = [];
    const last: Record<string, unknown>[] = [];
    let best = 0; // tokens/s of the fastest timed epoch
    for (let e = 0; e < EPOCHS; e++) {
      const t0 = performance.now();
      const [h] = await trainer.fitLM(sampler, { epochs: 1, stepsPerEpoch: STEPS / EPOCHS });
      // the first epoch also traces the step program: timed only when it is the only one
      if (e > 0 || EPOCHS === 1) best = Math.max(best, ((STEPS / EPOCHS) * BATCH * CONTEXT * 1000) / (performance.now() - t0));
      const metrics = (h as { metrics?: Record<string, unknown> }).metrics ?? {};
      last.push(metrics);
      const { perplexity } = await trainer.evaluate(heldOut, { context: CONTEXT, maxWindows: EVAL_WINDOWS });
      curve.push({ step: h.step, loss: h.loss, perplexity: perplexity!, imbalance: imbalanceOf(metrics['router.load']) });
      console.log(`  ${arm.name} (seed ${seed}): step ${h.step}  train loss ${h.loss.toFixed(3)}  held-out perplexity ${perplexity!.toFixed(2)}${curve.at(-1)!.imbalance === undefined ? '' : `  load max·E ${curve.at(-1)!.imbalance!.toFixed(2)}`}`);
    }
    const m = last.at(-1)!;
    return {
      seed, params, perplexity: curve.at(-1)!.perplexity, tokensPerSecond: best,
      imbalance: imbalanceOf(m['router.load']), dropped: num(m['router.dropped']), entropy: num(m['router.entropy']), curve,
    };
  } finally {
    trainer.free();
    model.free();
  }
}

const steps = (r: Result) => r.runs[0].curve.map((c) => c.step);
/** Per epoch, the mean over seeds of `f`; undefined when some point lacks it. */
function curveMean(r: Result, f: (c: Run['curve'][number]) => number | undefined): number[] | undefined {
  const ys = r.runs[0].curve.map((_, i) => meanOf(r.runs.map((run) => f(run.curve[i]))));
  return ys.every((y) => y !== undefined) ? (ys as number[]) : undefined;
}

async function main(): Promise<void> {
  const dir = outDir(process.argv.slice(2));
  mkdirSync(dir, { recursive: true });
  const t0 = performance.now();
  const rt = await Runtime.start({ threads: positiveInt('LIAISON_THREADS', 1) });
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  const corpus = await TextCorpus.load(rt, 'pydoc');
  const [train, heldOut] = corpus.split(0.1);
  try {
    const tokens = BATCH * CONTEXT;
    console.log(`corpus: pydoc topics, ${int(train.size)} bytes to train on, ${int(heldOut.size)} held out; GPT width ${DIM}, ${LAYERS} blocks, context ${CONTEXT}; ${STEPS} Adam steps (lr ${LR}) of ${BATCH} windows (N = ${tokens} tokens per MoE layer) per model`);
    const chosen = arms(tokens).filter((a) => ONLY.length === 0 || ONLY.includes(a.key));
    const runs: Run[][] = chosen.map(() => []);
    // seeds outermost: each arm's runs are spread over the whole run, so a busy spell of the
    // shared machine does not land on one arm's every seed
    for (let seed = 0; seed < SEEDS; seed++) {
      for (const [i, arm] of chosen.entries()) {
        const t1 = performance.now();
        runs[i].push(await run(rt, arm, seed, train, heldOut));
        console.log(`${arm.name} (seed ${seed}): done in ${secs(t1)}`);
      }
    }
    const results: Result[] = chosen.map((arm, i) => {
      const rs = runs[i];
      const ppl = rs.map((r) => r.perplexity);
      return {
        name: arm.name, params: rs[0].params, active: ACTIVE, perToken: arm.perToken, perplexity: mean(ppl), range: [Math.min(...ppl), Math.max(...ppl)], tokensPerSecond: Math.max(...rs.map((r) => r.tokensPerSecond)),
        imbalance: meanOf(rs.map((r) => r.imbalance)), dropped: meanOf(rs.map((r) => r.dropped)), entropy: meanOf(rs.map((r) => r.entropy)), runs: rs,
      };
    });

    const f2 = (x: number | undefined, d = 2) => (x === undefined ? '—' : x.toFixed(d));
    const header = ['model', 'experts per token', 'parameters', 'active FFN weights / token', `held-out perplexity (${EVAL_WINDOWS}×${CONTEXT} bytes)`, 'load max·E (1 = balanced)', 'dropped', 'routing entropy (nats)', 'train tokens/s (best epoch)'];
    const rows = results.map((r) => [r.name, r.perToken, int(r.params), int(r.active), SEEDS === 1 ? r.perplexity.toFixed(3) : `${r.perplexity.toFixed(2)} (${r.range[0].toFixed(2)}–${r.range[1].toFixed(2)})`, f2(r.imbalance), r.dropped === undefined ? '—' : `${(r.dropped * 100).toFixed(2)}%`, f2(r.entropy), int(r.tokensPerSecond)]);
    console.log(`\n${textTable(header, rows)}`);
    const md = [
      `Byte-level GPT (width ${DIM}, ${LAYERS} blocks, ${HEADS} heads, context ${CONTEXT}) on pydoc English, ${STEPS} Adam steps (lr ${LR}) of ${BATCH} windows, ${SEEDS === 1 ? 'seed 0' : `seeds 0–${SEEDS - 1} (perplexity: mean (min–max); the rest: means)`}; every block's MLP replaced by ${EXPERTS} experts at equal active feed-forward weights (expert width × experts per token = ${FFN}). Load, dropped tokens and entropy: the router metrics of the last epoch (${STEPS / EPOCHS} steps), mean over layers; load counts the (token, expert) pairs served (nonzero weights; tokens taken; dispatch mass), so it is 1 by construction for soft (every pair), expert-choice (C tokens each) and soft-moe (S full slots each), whose routing entropy says how peaked they are. expert-choice and soft-moe are not causal in a decoder (a token's routing sees later tokens): their perplexities are not comparable with the others'.`,
      '', markdownTable(header, rows), '',
    ].join('\n');
    writeFileSync(join(dir, 'moe-gpt.md'), md);
    writeFileSync(join(dir, 'moe-gpt.json'), JSON.stringify({ steps: STEPS, batch: BATCH, context: CONTEXT, dim: DIM, experts: EXPERTS, seeds: SEEDS, results }, null, 1));
    const png = join(dir, 'moe-gpt.png');
    await plotLines({
      path: png, xlabel: 'step', panels: [`held-out perplexity${SEEDS > 1 ? ` (mean of ${SEEDS} seeds)` : ''}`, 'load imbalance: max share × E (1 = balanced)'],
      series: [
        // one colour per model in both panels (matplotlib's Cn in the format string)
        ...results.map((r, i) => ({ label: r.name, x: steps(r), y: curveMean(r, (c) => c.perplexity)!, style: `o-C${i}`, panel: 0 })),
        ...results.flatMap((r, i) => { const y = curveMean(r, (c) => c.imbalance); return y ? [{ label: r.name, x: steps(r), y, style: `o-C${i}`, panel: 1 }] : []; }),
      ],
    });
    console.log(`\nwrote ${join(dir, 'moe-gpt.md')}, moe-gpt.json and ${png}`);
  } finally {
    for (const c of [corpus, train, heldOut]) c.free();
    await rt.close();
  }
  console.log(`runtime stopped; ${secs(t0)} in all.`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
