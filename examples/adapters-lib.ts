/**
 * What the adapter fine-tuning examples share (examples/adapters-digits.ts, adapters-gpt.ts):
 * a pretrained checkpoint cached in the out folder, the adapter plugins made at one budget,
 * and the tables over seeds.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { LiaisonError, type Runtime } from '../bridge/index.js';
import { adalora } from '../plugins/adapters/adalora.js';
import { type Adapad, adapad } from '../plugins/adapters/adapad.js';
import { lora } from '../plugins/adapters/lora.js';
import type { Adapter } from '../sdk/families/adapters/types.js';
import { Model, type ModelSpec, plotLines } from '../sdk/index.js';
import { markdownTable, textTable } from './tables.js';

/**
 * The plugins compared; `adapad-c1` is adapad with `curvature: 1`, its deflation targets on
 * (the default, 0, trains the components jointly): the ablation that says what the
 * deflation itself does; `adapad-auto` the same with `curvature: 'auto'` (each component's
 * curvature estimated from the batch gradients).
 */
export const METHODS = ['lora', 'adalora', 'adapad', 'adapad-c1', 'adapad-auto'] as const;

/** What the `adapad-c1` (and `adapad-auto`) rows are, for the reports' notes. */
export const C1_NOTE = 'adapad-c1: adapad with `curvature: 1` (its deflation targets on; adapad\'s default, 0, trains the components jointly).';
export const AUTO_NOTE = 'adapad-auto: adapad with `curvature: \'auto\'` (the deflation targets on, each component\'s curvature estimated from the batch gradients, curvatureSamples the batch).';
export type Method = (typeof METHODS)[number];

/**
 * The methods an example runs: `LIAISON_ADAPTERS_METHODS` (comma-separated names of
 * {@link METHODS}) if set, else `fallback`; always in METHODS' order.
 */
export function selectedMethods(fallback: readonly Method[] = METHODS): Method[] {
  const raw = process.env.LIAISON_ADAPTERS_METHODS?.trim();
  if (!raw) return [...fallback];
  const names = raw.split(',').map((m) => m.trim());
  const bad = names.filter((m) => !(METHODS as readonly string[]).includes(m));
  if (bad.length) throw new LiaisonError('E_ARG', `LIAISON_ADAPTERS_METHODS: unknown method${bad.length > 1 ? 's' : ''} ${bad.join(', ')} (known: ${METHODS.join(', ')})`);
  return METHODS.filter((m) => names.includes(m));
}

/** The AdaPaD variants, in the order their reach columns and rank panels come. */
const VARIANTS = ['adapad', 'adapad-c1', 'adapad-auto'] as const;

/**
 * The model of `path` when a run already wrote it (the pretraining is skipped), else one
 * built from `spec`, trained by `train` and saved there. `log` says which.
 */
export async function pretrained(rt: Runtime, path: string, spec: ModelSpec, train: (m: Model) => Promise<string>, log: (l: string) => void): Promise<Model> {
  if (existsSync(path)) {
    const { model, tensors } = await Model.fromCheckpoint(rt, path);
    for (const t of Object.values(tensors)) t.free();
    log(`pretrained model: ${path} reused (delete it to pretrain again)`);
    return model;
  }
  const model = await Model.build(rt, spec, { seed: 0 });
  const t0 = performance.now();
  const what = await train(model);
  await model.save(path);
  log(`pretrained model: ${what} in ${((performance.now() - t0) / 1000).toFixed(1)} s, saved to ${path}`);
  return model;
}

/** A fresh copy of the pretrained model (each fine-tuning run starts from the same weights). */
export async function fresh(rt: Runtime, path: string): Promise<Model> {
  const { model, tensors } = await Model.fromCheckpoint(rt, path);
  for (const t of Object.values(tensors)) t.free();
  return model;
}

/** AdaPaD's rank pattern per epoch, copied (undefined for the other plugins). */
export function historyOf(adapter: Adapter): Run['history'] {
  const h = (adapter as Partial<Adapad>).rankHistory;
  return h?.map(({ step, ranks }) => ({ step, ranks: { ...ranks } }));
}

/**
 * The plugins at one budget: `rank` components per module on average, so every method
 * ends with `rank · modules` components in all. LoRA holds `rank` in each module; AdaLoRA
 * starts at 1.5 × rank (PEFT's init_r 12 for target_r 8) and prunes to its target on its
 * cubic schedule by `steps − tfinal`; AdaPaD starts each module at 1 and grows the most
 * important module until the shared budget is spent (`adapad-c1` the same with `curvature: 1`,
 * `adapad-auto` with `curvature: 'auto'` and `samples`, the batch, as its curvatureSamples).
 */
export function makeAdapter(method: Method, o: { rank: number; modules: number; steps: number; seed: number; targets: string; samples: number }): Adapter {
  const { rank, modules, steps, seed, targets } = o;
  if (method === 'lora') return lora({ r: rank, targets, seed });
  if (method === 'adalora') {
    const tinit = Math.floor(steps / 10), tfinal = Math.floor(steps / 5);
    return adalora({ initR: Math.max(rank + 1, Math.ceil(1.5 * rank)), targetR: rank, totalSteps: steps, tinit, tfinal, deltaT: Math.max(1, Math.floor(steps / 40)), targets, seed });
  }
  // growth every `growEvery` steps spends the budget within the first half of the run; a
  // module may take up to 4× the average (A and B are allocated that wide from the start)
  const budget = rank * modules;
  const growEvery = Math.max(1, Math.floor(steps / 2 / Math.max(1, budget - modules)));
  return adapad({ budget, maxRank: Math.min(budget - modules + 1, 4 * rank), growEvery, targets, seed,
    ...(method === 'adapad-c1' ? { curvature: 1 } : method === 'adapad-auto' ? { curvature: 'auto' as const, curvatureSamples: o.samples } : {}) });
}

/**
 * One fine-tuning run: a fresh copy of the pretrained model at `path`, `method`'s adapter at
 * `rank` components per module on the Linears matching `targets`, trained and measured by
 * `fit` (the run's quality: an accuracy or a loss), logged with `show`, everything freed.
 * `modules`: the adapted module count (default: the weight sites `targets` matches).
 */
export async function adapterRun(
  rt: Runtime, path: string,
  o: { method: Method; rank: number; seed: number; steps: number; targets: string; samples: number; modules?: number; show: (quality: number) => string },
  fit: (model: Model, adapter: Adapter) => Promise<{ quality: number; free(): void }>,
): Promise<Run & { modules: number }> {
  const t0 = performance.now();
  const { method, rank, seed, steps, targets } = o;
  const model = await fresh(rt, path);
  try {
    const modules = o.modules ?? model.hookModules.weight.filter((n) => new RegExp(`^(?:${targets})$`).test(n)).length;
    const adapter = makeAdapter(method, { rank, modules, steps, seed, targets, samples: o.samples });
    const { quality, free } = await fit(model, adapter);
    const run = {
      method, rank, seed, quality, params: await adapter.parameterCount(), allocated: await allocatedParams(adapter), pattern: await adapter.rankPattern(),
      seconds: (performance.now() - t0) / 1000, history: historyOf(adapter), modules,
    };
    console.log(`${method.padEnd(9)} rank ${rank} seed ${seed}: ${o.show(quality)}, ${run.params.toLocaleString('en-US')} adapter parameters (${patternText(run.pattern)}) in ${run.seconds.toFixed(1)} s`);
    adapter.free();
    free();
    return run;
  } finally {
    model.free();
  }
}

/** Entries of every factor the adapter allocated (A, B; AdaLoRA's E is its gate): what training holds in memory. */
export async function allocatedParams(adapter: Adapter): Promise<number> {
  const f = Object.values(adapter.set!.factors);
  const shapes = (await Promise.all(f.flatMap((x) => [x.A.info(), x.B.info()]))).map((i) => i.shape);
  const numel = shapes.reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0);
  // AdaLoRA trains E (r,) per module besides A (r, …) and B
  return numel + (adapter.meta.name === 'adalora' ? shapes.filter((_, i) => i % 2 === 0).reduce((n, s) => n + s[0], 0) : 0);
}

/** One fine-tuning run's figures. */
export interface Run {
  method: Method;
  rank: number;
  seed: number;
  /** Accuracy (digits) or held-out loss in nats per token (GPT). */
  quality: number;
  /** Parameters of the active components (what the adapter file holds). */
  params: number;
  /** Parameters trained (every allocated component's A and B, AdaLoRA's E): what training holds. */
  allocated: number;
  /** Components per module at the end. */
  pattern: Record<string, number>;
  /** AdaPaD: the rank pattern at each epoch's end (its `rankHistory`). */
  history?: { step: number; ranks: Record<string, number> }[];
  seconds: number;
}

export const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** `mean (min–max)` of `xs` with `f`; just the value for one seed. */
export const spread = (xs: readonly number[], f: (x: number) => string): string =>
  xs.length === 1 ? f(xs[0]) : `${f(mean(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;

/** Runs grouped by method and rank, in the order given. */
export function grouped(runs: readonly Run[]): { method: Method; rank: number; runs: Run[] }[] {
  const out: { method: Method; rank: number; runs: Run[] }[] = [];
  for (const r of runs) {
    let g = out.find((x) => x.method === r.method && x.rank === r.rank);
    if (!g) out.push(g = { method: r.method, rank: r.rank, runs: [] });
    g.runs.push(r);
  }
  return out;
}

/**
 * The smallest AdaPaD adapter whose mean quality reaches `reference` (`better(a, b)`: a is at
 * least as good as b), or null when none of the sizes tried does.
 */
export function smallestReaching(groups: ReturnType<typeof grouped>, method: Method, reference: number, better: (a: number, b: number) => boolean): { rank: number; params: number; quality: number } | null {
  const hits = groups.filter((g) => g.method === method && better(mean(g.runs.map((r) => r.quality)), reference))
    .map((g) => ({ rank: g.rank, params: mean(g.runs.map((r) => r.params)), quality: mean(g.runs.map((r) => r.quality)) }))
    .sort((a, b) => a.params - b.params);
  return hits[0] ?? null;
}

/**
 * The adapter size each AdaPaD variant needs to reach LoRA's quality: for every LoRA rank, its
 * mean quality and parameters, and the smallest adapad (adapad-c1, adapad-auto) budget whose mean quality
 * is at least as good (`better(a, b)`: a at least as good as b; `f` formats a quality).
 */
export function reachTable(groups: ReturnType<typeof grouped>, better: (a: number, b: number) => boolean, f: (x: number) => string): { header: string[]; rows: string[][] } {
  const int = (x: number) => Math.round(x).toLocaleString('en-US');
  const variants = VARIANTS.filter((m) => groups.some((g) => g.method === m));
  const rows = groups.filter((g) => g.method === 'lora').map((g) => {
    const q = mean(g.runs.map((r) => r.quality)), p = mean(g.runs.map((r) => r.params));
    return [`lora r ${g.rank}`, f(q), int(p), ...variants.map((m) => {
      const hit = smallestReaching(groups, m, q, better);
      return hit ? `${int(hit.params)} (${(100 * hit.params / p).toFixed(0)}%; budget ${hit.rank}/module, ${f(hit.quality)})` : 'not reached';
    })];
  });
  return { header: ['reference', 'its quality', 'its parameters', ...variants.map((m) => `smallest ${m} as good`)], rows };
}

/** AdaPaD's rank pattern over training (seed 0, the largest budget): one panel per variant, one line per module. */
export function rankSeries(runs: readonly Run[], top: number): { panels: string[]; series: { label: string; x: number[]; y: number[]; style: string; panel: number }[] } {
  const variants = VARIANTS.map((m) => runs.find((r) => r.method === m && r.rank === top && r.seed === 0)).filter((r): r is Run => !!r?.history?.length);
  return {
    panels: variants.map((r) => ({ adapad: 'adapad (curvature 0: no deflation)', 'adapad-c1': 'adapad-c1 (curvature 1: deflation)', 'adapad-auto': 'adapad-auto (estimated curvature: deflation)' })[r.method as string]!),
    series: variants.flatMap((r, panel) => Object.keys(r.pattern).map((m) => ({
      label: m, x: [0, ...r.history!.map((h) => h.step)], y: [1, ...r.history!.map((h) => h.ranks[m] ?? 0)], style: 'o-', panel,
    }))),
  };
}

/** The rank pattern as "module r, …" (modules in the model's order). */
export const patternText = (p: Record<string, number>): string => Object.entries(p).map(([m, r]) => `${m} ${r}`).join(', ');

/**
 * The example's two PNGs in `dir`: `<name>.png`, each method's quality against its adapter
 * size (means over seeds), and `<name>-ranks.png`, adapad's rank pattern over training
 * (when a run recorded one). Returns the paths written.
 */
export async function plotRuns(dir: string, name: string, o: { title: string; ylabel: string; runs: readonly Run[]; top: number }): Promise<string[]> {
  const groups = grouped(o.runs);
  const paths = [join(dir, `${name}.png`)];
  await plotLines({
    path: paths[0], title: o.title, xlabel: 'adapter parameters (log scale)', ylabel: o.ylabel, logx: true,
    series: METHODS.filter((m) => groups.some((g) => g.method === m)).map((m) => {
      const gs = groups.filter((g) => g.method === m);
      return { label: m, x: gs.map((g) => mean(g.runs.map((r) => r.params))), y: gs.map((g) => mean(g.runs.map((r) => r.quality))), style: 'o-' };
    }),
  });
  const ranks = rankSeries(o.runs, o.top);
  if (ranks.series.length) {
    paths.push(join(dir, `${name}-ranks.png`));
    await plotLines({
      path: paths[1], title: `adapad's rank pattern, budget ${o.top} per module on average (seed 0)`,
      xlabel: 'training step', ylabel: 'components in the sum', panels: ranks.panels, series: ranks.series,
    });
  }
  return paths;
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const int = (x: number) => Math.round(x).toLocaleString('en-US');

/**
 * The report every fine-tuning example writes: the table (reference rows `before` and
 * `after` around one row per method and budget: mean adapter parameters, their share of
 * `total`, the quality's mean (min–max), seed 0's rank pattern), the size adapad needs to
 * reach lora, printed and written as `<name>.md` (after `summary`, before `note`), `json`
 * with the runs as `<name>.json`, and the PNGs of {@link plotRuns} (titled `title` … vs adapter size).
 */
export async function writeReport(dir: string, name: string, o: {
  runs: Run[]; total: number; what: string; quality: string; show: (q: number) => string; higherIsBetter: boolean;
  before: string[][]; after: string[][]; summary: string; note: string; json: object; title: string; ylabel: string;
  pattern?: (p: Record<string, number>) => string;
}): Promise<void> {
  const { runs, show } = o;
  const groups = grouped(runs);
  const pattern = o.pattern ?? ((p: Record<string, number>) => Object.values(p).join(' '));
  const header = ['method', 'components per module (avg)', 'adapter parameters', 'trained (allocated)', `share of ${o.what}`, o.quality, 'rank pattern (seed 0)'];
  const rows = [
    ...o.before,
    ...groups.map((g) => {
      const p = mean(g.runs.map((r) => r.params));
      return [g.method, String(g.rank), int(p), int(mean(g.runs.map((r) => r.allocated))), pct(p / o.total), spread(g.runs.map((r) => r.quality), show), pattern(g.runs[0].pattern)];
    }),
    ...o.after,
  ];
  const reach = reachTable(groups, o.higherIsBetter ? (a, b) => a >= b : (a, b) => a <= b, show);
  console.log(`\n${textTable(header, rows)}\n\nthe adapter size adapad needs to reach lora's quality:\n${textTable(reach.header, reach.rows)}`);
  const md = join(dir, `${name}.md`);
  writeFileSync(md, [o.summary, '', markdownTable(header, rows), '', o.note, '', 'The adapter size adapad needs to reach lora\'s quality (mean over seeds):', '', markdownTable(reach.header, reach.rows), ''].join('\n'));
  writeFileSync(join(dir, `${name}.json`), JSON.stringify({ ...o.json, runs }, null, 1));
  const seeds = new Set(runs.map((r) => r.seed)).size;
  const plots = await plotRuns(dir, name, { title: `${o.title} vs adapter size (${seeds} seed${seeds === 1 ? '' : 's'})`, ylabel: o.ylabel, runs, top: Math.max(...runs.map((r) => r.rank)) });
  console.log(`\ntable: ${md}\nplots: ${plots.join(', ')}`);
}
