/**
 * KV cache policies compared on a decoder that uses its context: the code GPT of
 * examples/code-gpt.ts (a rotary GPT with a 1,024-token context, BPE tokens of the Python
 * standard library; trained first when its checkpoint is missing).
 *
 * For the full cache and each policy (`sliding-window`, `streaming-llm`, `h2o`,
 * `scissorhands`) at budgets of 1/2, 1/3, 1/5 and 1/10 of the context:
 *
 * - held-out perplexity relative to the full cache: windows of the context's length from
 *   the held-out files, each a prompt of three quarters of the window (prefilled at once,
 *   the policy then keeps its budget of it) and a last quarter decoded token by token
 *   through the cache (teacher forcing, the runtime's `kv_eval`); the 95% interval is a
 *   paired bootstrap over windows of the mean per-window NLL difference, exponentiated;
 * - the loss on a repeated span: held-out windows in which a span of the prompt recurs
 *   among the decoded tokens, at a distance beyond every budget; the loss of its second
 *   occurrence through each cache (the full cache copies it: far below the first's);
 * - the bytes the cache holds per sequence (`kvCacheSize()`) and tokens/s;
 * - the full cache and `scissorhands` with 8- and 4-bit storage: bytes against quality;
 * - the persistence of importance on the model's own attention (examples/kv-persistence.ts).
 *
 * It prints markdown tables and writes kv-compare.png (relative perplexity and span loss
 * against the budget), kv-bytes.png (bytes against relative perplexity) and
 * kv-persistence.png (persistence ratio against lag, per layer) to the out folder.
 *
 *     npx tsx examples/kv-compare.ts [--out DIR] [--model DIR]
 *
 * Knobs: LIAISON_KV_WINDOWS (held-out windows, 48), LIAISON_KV_SPANS (repeated-span windows,
 * 24), LIAISON_KV_DECODE (tokens decoded per window, context / 4), LIAISON_KV_BATCH (rows
 * decoded together, 16), LIAISON_KV_FRACTIONS (budget = context /
 * each, `2,3,5,10`), LIAISON_KV_POLICIES (`sliding-window,streaming-llm,h2o,scissorhands`),
 * LIAISON_KV_QUANT (budgets of the quantized rows as fractions, `5`), LIAISON_KV_PERSIST
 * (windows for the persistence measurement, 8), LIAISON_THREADS (torch threads, 1: at this
 * model's size a second thread gains little, and on a busy machine it loses much). Results:
 * docs/kv-cache.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LiaisonError, Runtime } from '../bridge/index.js';
import '../plugins/index.js';
import { getPlugin, plotLines, type Series } from '../sdk/index.js';
import { loadCodeGPT } from './code-gpt.js';
import { flag, outDir, positiveInt, positiveNumbers, secs } from './env.js';
import { bootstrap, cachePass, type Interval, label, mean, meanAt, type Measured, measure, policyOf, repeatSpans, type Setting, type SpanLayout, spreadWindows } from './kv-lib.js';
import { persistence } from './kv-persistence.js';
import { markdownTable } from './tables.js';

const WINDOWS = positiveInt('LIAISON_KV_WINDOWS', 48);
const SPANS = positiveInt('LIAISON_KV_SPANS', 24);
const BATCH = positiveInt('LIAISON_KV_BATCH', 16);
const FRACTIONS = positiveNumbers('LIAISON_KV_FRACTIONS', [2, 3, 5, 10]);
const QUANT = positiveNumbers('LIAISON_KV_QUANT', [5]);
const PERSIST = positiveInt('LIAISON_KV_PERSIST', 8);
const POLICIES = (process.env.LIAISON_KV_POLICIES ?? 'sliding-window,streaming-llm,h2o,scissorhands').split(',').map((s) => s.trim()).filter(Boolean);
const LAGS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

const kib = (b: number) => (b >= 10 * 1024 * 1024 ? `${(b / 1024 / 1024).toFixed(1)} MiB` : `${(b / 1024).toFixed(0)} KiB`);
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ci = (x: Interval, f: (v: number) => string) => `${f(x.mean)} [${f(x.lo)}, ${f(x.hi)}]`;
const ratio = (x: Interval) => ({ mean: Math.exp(x.mean), lo: Math.exp(x.lo), hi: Math.exp(x.hi) });
const f3 = (v: number) => v.toFixed(3);

/** The figures of one setting against the full cache (`ref`), over the same windows. */
function figures(m: Measured, ref: Measured, prefill: number, layout: SpanLayout) {
  const spanLoss = (p: Measured) => p.spans.nll.map((n) => meanAt(n, prefill, layout.second + 1, layout.second + layout.span));
  const perWindow = (p: Measured) => p.windows.nll.map((n) => mean(Array.from(n)));
  const [mine, full] = [perWindow(m), perWindow(ref)];
  return {
    ppl: Math.exp(mean(mine)),
    rel: ratio(bootstrap(mine.map((x, i) => x - full[i]))),
    span: bootstrap(spanLoss(m)),
    // paired: the same sequences through this cache and the full one
    spanDiff: bootstrap(spanLoss(m).map((x, i) => x - spanLoss(ref)[i])),
  };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const out = outDir(argv);
  mkdirSync(out, { recursive: true });
  const t0 = performance.now();
  // no per-request timeout: one batch of windows decodes for minutes on a busy machine
  const rt = await Runtime.start({ threads: positiveInt('LIAISON_THREADS', 1), timeoutMs: 0 });
  try {
    console.log(`runtime: torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} threads)`);
    const { model, heldOut, spec } = await loadCodeGPT(rt, flag(argv, 'model'));
    const stream = Array.from((await heldOut.toArray()) as ArrayLike<number | bigint>, Number);
    const T = spec.context;
    const prefill = T - positiveInt('LIAISON_KV_DECODE', Math.floor(T / 4));
    if (prefill < 1) throw new LiaisonError('E_ARG', `LIAISON_KV_DECODE must be below the context (${T})`);
    // the span's first occurrence in the prompt, its second among the decoded tokens
    const span = Math.max(4, Math.floor(T / 16));
    const layout: SpanLayout = { length: prefill + 2 * span, span, first: span, second: prefill + span };
    const budgets = FRACTIONS.map((f) => Math.floor(T / f));
    if (layout.second - layout.first <= Math.max(...budgets)) throw new LiaisonError('E_ARG', `the repeated span's distance (the prompt, ${prefill} tokens) must exceed every budget (largest ${Math.max(...budgets)}): decode fewer tokens (LIAISON_KV_DECODE) or use larger fractions`);
    const windows = spreadWindows(stream, T, WINDOWS);
    const spans = repeatSpans(stream, layout, SPANS);
    console.log(`held-out: ${int(stream.length)} tokens; ${WINDOWS} windows of ${T} tokens (a prompt of ${prefill}, then ${T - prefill} decoded), ${SPANS} windows of ${layout.length} with a ${span}-token span at ${layout.first} repeated at ${layout.second} (distance ${layout.second - layout.first})`);

    const settings: Setting[] = [{ policy: 'full', budget: null, bits: 32 }];
    for (const policy of POLICIES) for (const budget of budgets) settings.push({ policy, budget, bits: 32 });
    const quantBudgets = QUANT.map((f) => Math.floor(T / f));
    for (const bits of [8, 4] as const) {
      settings.push({ policy: 'full', budget: null, bits });
      for (const budget of quantBudgets) settings.push({ policy: 'scissorhands', budget, bits });
    }
    // the configs as the registry resolves them, so the tables say what ran
    console.log('\npolicies (defaults filled in):');
    for (const p of ['full', ...POLICIES]) {
      // the windows some policies derive from the budget: recent, and evict (tokens dropped at once)
      const made = p === 'full' ? [] : budgets.map((budget) => policyOf({ policy: p, budget, bits: 32 }));
      const recent = made.map((m) => (m as { recent?: unknown }).recent);
      const derived = p === 'full' ? '' : `; at budgets ${budgets.join('/')}: ${recent.every((r) => typeof r === 'number') ? `recent ${recent.join('/')}, ` : ''}evict ${made.map((m) => m.cache().evict).join('/')}`;
      console.log(`- ${p}: ${JSON.stringify(getPlugin('kv-policy', p).resolve(p === 'full' ? {} : { budget: budgets[0] }))}${derived}`);
    }

    const results: Measured[] = [];
    for (const [i, s] of settings.entries()) {
      const t1 = performance.now();
      results.push(await measure(model, s, { windows, spans }, { prefill, batch: BATCH }));
      console.error(`[${i + 1}/${settings.length}] ${label(s)}: ${secs(t1)}`);
    }
    const ref = results[0];
    const figs = results.map((m) => figures(m, ref, prefill, layout));
    // the first occurrence sits in the prompt, which kv_eval does not score: its loss from a
    // full-cache pass over the spans' beginnings alone
    const opening = await cachePass(model, spans.map((r) => r.slice(0, layout.first + span)), { prefill: 1, batch: BATCH });
    const first = bootstrap(opening.nll.map((n) => meanAt(n, 1, layout.first + 1, layout.first + span)));

    const head = ['policy', 'budget', 'kept / layer', 'KV bytes / seq', 'perplexity', 'rel. perplexity [95% CI]', 'span loss, 2nd occ.', 'Δ span loss vs full [95% CI]', 'tokens/s'];
    const row = (m: Measured, i: number) => [m.setting.policy, m.setting.budget === null ? '—' : String(m.setting.budget), String(m.windows.kept), kib(m.windows.bytesPerRow), figs[i].ppl.toFixed(3), ci(figs[i].rel, f3), f3(figs[i].span.mean), ci(figs[i].spanDiff, f3), int(m.windows.tokensPerSecond)];
    const main32 = results.map((m, i) => [m, i] as const).filter(([m]) => m.setting.bits === 32);
    console.log(`\n### Policies at budgets 1/${FRACTIONS.join(', 1/')} of the context\n`);
    console.log(`Copy check (full cache): the span's first occurrence ${ci(first, f3)} nats/token, its second ${ci(figs[0].span, f3)}.\n`);
    console.log(markdownTable(head, main32.map(([m, i]) => row(m, i))));

    const quant = results.map((m, i) => [m, i] as const).filter(([m]) => m.setting.bits !== 32 || m.setting.policy === 'full' || (m.setting.policy === 'scissorhands' && quantBudgets.includes(m.setting.budget!)));
    const qhead = ['policy', 'budget', 'bits', 'KV bytes / seq', 'vs full f32', 'rel. perplexity [95% CI]', 'Δ span loss vs full [95% CI]', 'tokens/s'];
    console.log('\n### Quantized storage\n');
    console.log(markdownTable(qhead, quant.map(([m, i]) => [m.setting.policy, m.setting.budget === null ? '—' : String(m.setting.budget), String(m.setting.bits), kib(m.windows.bytesPerRow), `1/${(ref.windows.bytesPerRow / m.windows.bytesPerRow).toFixed(1)}`, ci(figs[i].rel, f3), ci(figs[i].spanDiff, f3), int(m.windows.tokensPerSecond)])));

    // persistence of importance, on the model's own attention over held-out windows
    const t2 = performance.now();
    const from = Math.floor(T / 16);
    const lags = LAGS.filter((k) => from + k < T);
    const pers = await persistence(model, spreadWindows(stream, T, PERSIST, Math.floor(T / 3)), lags, { from });
    const layers = pers.ratio[0].length;
    console.log(`\n### Persistence of importance (${PERSIST} windows, queries from ${from}; ${secs(t2)})\n`);
    console.log(`Important: attention above 1/(t + 1). Important tokens per query, by layer: ${pers.importantPerQuery.map((x) => x.toFixed(1)).join(', ')}.\n`);
    const perLayer = (what: string) => Array.from({ length: layers }, (_, l) => `${what}layer ${l}`);
    console.log(markdownTable(['lag k', ...perLayer(''), 'mean', ...perLayer('base rate, ')],
      lags.map((k, j) => [String(k), ...pers.ratio[j].map((r) => r.toFixed(3)), mean(pers.ratio[j]).toFixed(3), ...pers.base[j].map((b) => b.toFixed(3))])));

    writeFileSync(join(out, 'kv-compare.json'), JSON.stringify({ spec, layout, budgets, settings: results.map((m, i) => ({ ...m.setting, kept: m.windows.kept, bytesPerRow: m.windows.bytesPerRow, tokensPerSecond: m.windows.tokensPerSecond, ...figs[i] })), firstOccurrence: first, persistence: pers }, null, 1));

    // the figures
    const policies = ['full', ...POLICIES];
    const series = (pick: (i: number) => Interval, panel: number): Series[] => POLICIES.flatMap((p) => {
      const idx = results.map((m, i) => [m, i] as const).filter(([m]) => m.setting.policy === p && m.setting.bits === 32);
      const x = idx.map(([m]) => m.setting.budget!);
      const color = `C${policies.indexOf(p)}`; // the same colour in every figure
      return [{ label: p, x, y: idx.map(([, i]) => pick(i).mean), style: `${color}o-`, panel },
        ...idx.map(([m, i]) => ({ label: `_${p} ${m.setting.budget}`, x: [m.setting.budget!, m.setting.budget!], y: [pick(i).lo, pick(i).hi], style: `${color}-`, panel }))];
    });
    const flat = (y: number, name: string, style: string, panel: number): Series => ({ label: name, x: [Math.min(...budgets), Math.max(...budgets)], y: [y, y], style, panel });
    await plotLines({
      path: join(out, 'kv-compare.png'), panels: ['held-out perplexity / full cache', 'repeated span, 2nd occurrence: loss − full cache\'s (nats)'], xlabel: 'budget (tokens per layer and head)', logx: true,
      series: [...series((i) => figs[i].rel, 0), flat(1, 'full cache', 'k--', 0), ...series((i) => figs[i].spanDiff, 1), flat(0, 'full cache', 'k--', 1), flat(first.mean - figs[0].span.mean, '1st occurrence', 'k:', 1)],
    });
    const groups = [...policies.map((p) => ({ p, bits: 32 })), { p: 'full', bits: 8 }, { p: 'full', bits: 4 }, { p: 'scissorhands', bits: 8 }, { p: 'scissorhands', bits: 4 }];
    await plotLines({
      path: join(out, 'kv-bytes.png'), title: 'bytes held against quality', xlabel: 'KV bytes per sequence', ylabel: 'held-out perplexity / full cache', logx: true,
      series: groups.map(({ p, bits }) => {
        const idx = results.map((m, i) => [m, i] as const).filter(([m]) => m.setting.policy === p && m.setting.bits === bits);
        return { label: bits === 32 ? p : `${p} ${bits}-bit`, x: idx.map(([m]) => m.windows.bytesPerRow), y: idx.map(([, i]) => figs[i].rel.mean), style: `C${policies.indexOf(p)}${bits === 32 ? 'o-' : bits === 8 ? 's--' : '^:'}` };
      }).filter((s) => s.x.length),
    });
    await plotLines({
      path: join(out, 'kv-persistence.png'), title: 'persistence of importance (attention > 1/(t+1))', xlabel: 'lag k (tokens)', ylabel: 'fraction still important at t + k', logx: true,
      series: [...Array.from({ length: layers }, (_, l) => ({ label: `layer ${l}`, x: lags, y: pers.ratio.map((r) => r[l]), style: 'o-' })),
        { label: 'base rate (mean over layers)', x: lags, y: pers.base.map((b) => mean(b)), style: 'k--' }],
    });
    console.log(`\nplots: ${join(out, 'kv-compare.png')}, kv-bytes.png, kv-persistence.png; figures: kv-compare.json (${secs(t0)} in all)`);
  } finally {
    await rt.close();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
