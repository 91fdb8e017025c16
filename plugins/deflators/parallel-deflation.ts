/**
 * Parallel Deflation: K workers find the top-K eigenvectors at once (Liao, Su, Kyrillidis,
 * "Provable Model-Parallel Distributed Principal Component Analysis with Parallel
 * Deflation", CPAL 2025, https://arxiv.org/abs/2502.17615).
 *
 * Worker k targets eigenvector k and joins at round k. In every round it deflates the
 * ORIGINAL matrix with the previous round's broadcast estimates of its predecessors,
 * Σ_k = Σ − Σ_{k'<k} (v_{k'}ᵀΣv_{k'}) v_{k'}v_{k'}ᵀ, runs T local steps warm-started from
 * its own last estimate, then all workers broadcast; L rounds in all (L ≥ K). Unlike
 * Hotelling's deflation no worker waits for its predecessors to finish, and an early error
 * of a predecessor is corrected in later rounds instead of being frozen into every
 * successor's matrix.
 *
 * Local steps: `power` (deterministic, x ← Σ_k x / ‖Σ_k x‖) or `hebbian` (stochastic, Hebb's
 * rule on minibatches of the data rows, x ← normalize(x + η_t Σ̂_k x), step size
 * η_t = lr / ((1 + t/lrDecay)·ρ̂_t) — a schedule of our choosing, the paper's is not public
 * in that form). The workers run on the SDK's workers (sdk/workers/, docs/workers.md); their
 * spec, and the batched block for workers sharing one runtime, are in
 * sdk/families/deflators/workers.ts (and their ranked form, for the ranks of a runtime group,
 * in sdk/families/deflators/ranked.ts); docs/deflation.md has the details.
 *
 * Rounds: one per broadcast (L). Matvecs: T per joined worker per round (+1 when a worker
 * joins); in hebbian mode 2·B/d per worker step (multiply–add equivalents) and k at the end
 * for the Rayleigh values.
 *
 * ```ts
 * const r = await parallelDeflation({ localSteps: 10 }).fit({ cov, d, k: 30 }, { rt, seed: 0 });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Tensor } from '../../bridge/index.js';
import { type IterationContext, IterativeDeflatorBase, type IterationProblem, type Iterated, randomStarts, rayleigh, sortedResult } from '../../sdk/families/deflators/base.js';
import type { DeflationProblem } from '../../sdk/families/deflators/types.js';
import { RankedDeflationBlock } from '../../sdk/families/deflators/ranked.js';
import { type Broadcast, deflationWorkers, type LocalRule, roundMatvecs } from '../../sdk/families/deflators/workers.js';
import { definePlugin } from '../../sdk/plugin.js';
import { runWorkers } from '../../sdk/workers/run.js';

/** Config of {@link ParallelDeflation}. */
export const ParallelDeflationConfig = Type.Object({
  localSteps: Type.Integer({ minimum: 1, default: 10, description: 'T: local steps each worker runs per round, warm-started from its own last estimate' }),
  rounds: Type.Optional(Type.Integer({ minimum: 1, description: 'L: rounds in all, at least k since worker k joins at round k (default 2k)' })),
  mode: Type.Union([Type.Literal('power'), Type.Literal('hebbian')], { default: 'power', description: "local steps: 'power' iteration on the deflated matrix, or 'hebbian' (Hebb's rule on minibatches of problem.data)" }),
  batchSize: Type.Integer({ minimum: 1, default: 64, description: 'hebbian: data rows per minibatch' }),
  lr: Type.Number({ exclusiveMinimum: 0, default: 0.5, description: 'hebbian: step size η₀, in units of 1/ρ̂ (the minibatch Rayleigh value), so it does not depend on the data scale' }),
  lrDecay: Type.Number({ exclusiveMinimum: 0, default: 10, description: 'hebbian: η_t = η₀ / (1 + t/lrDecay), t the worker\'s local steps since it joined' }),
  execution: Type.Union([Type.Literal('batched'), Type.Literal('per-worker'), Type.Literal('ranks')], { default: 'batched', description: "'batched': co-located workers' steps as one program per round (the workers' 'batched' placement); 'per-worker': each worker alone on its inputs (the 'sequential' placement, the reference); 'ranks': the workers spread over the ranks of a runtime group, worker k on rank k mod N, the broadcast an all-gather (the 'ranks' placement; on one runtime, a group of one)" }),
  float64: Type.Boolean({ default: false, description: 'iterate in float64; results come back in the input dtype' }),
}, { additionalProperties: false });
export type ParallelDeflationConfig = Static<typeof ParallelDeflationConfig>;

/** L rounds of K workers on the SDK's workers (sdk/workers/), the spec in sdk/families/deflators/workers.ts. */
export class ParallelDeflation extends IterativeDeflatorBase<ParallelDeflationConfig> {
  protected override async check({ d, k, data }: DeflationProblem): Promise<void> {
    const c = this.config;
    const rounds = c.rounds ?? 2 * k;
    if (rounds < k) throw new LiaisonError('E_ARG', `${this.id}: rounds (L = ${rounds}) must be at least k = ${k}: worker k joins at round k`, { param: 'rounds' });
    if (c.mode !== 'hebbian') return;
    if (!data) throw new LiaisonError('E_ARG', `${this.id}: mode 'hebbian' draws minibatches of data rows: pass problem.data, the (n, d) centered rows`, { param: 'data' });
    const info = await data.info();
    if (info.shape.length !== 2 || info.shape[1] !== d) throw new LiaisonError('E_ARG', `${this.id}: problem.data must be (n, d = ${d}), got [${info.shape}]`, { param: 'data' });
  }

  protected async iterate({ cov: a, d, k, data, dtype }: IterationProblem, ctx: IterationContext): Promise<Iterated> {
    const c = this.config;
    const rounds = c.rounds ?? 2 * k;
    const { rt, seed } = ctx;
    const rule: LocalRule = c.mode === 'power'
      ? { mode: 'power', cov: a, steps: c.localSteps }
      : { mode: 'hebbian', data: data!.to(dtype), dim: d, dtype, steps: c.localSteps, batchSize: c.batchSize, lr: c.lr, lrDecay: c.lrDecay };
    const starts = randomStarts(rt, d, k, seed, dtype); // (d, k): column j is worker j's start
    const n = c.mode === 'hebbian' ? (await data!.info()).shape[0] : 0;
    const rows = c.mode === 'hebbian' ? (r: number) => rt.randint(0, n, [c.localSteps, c.batchSize], { seed: seed * 100_003 + r }) : undefined;
    let matvecs = 0;
    const spec = deflationWorkers(rt, rule, starts, k, dtype, rows);
    spec.ranked = (art, ranks) => new RankedDeflationBlock(art, rule, ranks, dtype, d);
    const run = await runWorkers(rt, spec, {
      rounds,
      placement: c.execution === 'per-worker' ? 'sequential' : c.execution,
      onRound: async ({ round, workers, joined, view }) => {
        matvecs += roundMatvecs(rule, workers.length, joined.length);
        if (ctx.reporting) await this.report(ctx, round, view, starts, k, matvecs);
      },
    });
    const b = run.view;
    // power mode broadcasts exact Rayleigh values; hebbian's are minibatch estimates
    const values = c.mode === 'power' ? b.values : rayleigh(a, b.vectors);
    return { ...sortedResult(b.vectors, values), rounds, matvecs: matvecs + (c.mode === 'power' ? 0 : k) };
  }

  /** onRound with (d, k): joined workers' estimates, the not-yet-joined ones' untouched starts. */
  private async report(ctx: IterationContext, r: number, b: Broadcast, starts: Tensor, k: number, matvecs: number): Promise<void> {
    const joined = Math.min(r, k);
    const v = joined < k ? ctx.rt.cat([b.vectors, starts.narrow(1, joined, k - joined)], 1) : b.vectors;
    await ctx.report(r, v, matvecs);
    if (v !== b.vectors) v.free(); // valid during the call only
  }
}

/** The `parallel-deflation` registration: `parallelDeflation({ localSteps, rounds, mode, … })`. */
export const parallelDeflation = definePlugin({
  name: 'parallel-deflation',
  version: '1.1.0',
  family: 'deflator',
  schema: ParallelDeflationConfig,
  description: 'Parallel Deflation: K workers, worker k joins at round k, deflating the original matrix with the previous round\'s estimates (power or Hebbian steps)',
  paper: 'https://arxiv.org/abs/2502.17615',
  create: (config, meta) => new ParallelDeflation(config, meta),
});
