/**
 * LoFT's pretraining rounds (the `loft` plugin, plugins/pruners/loft.ts), on the SDK's
 * workers (sdk/workers/): K workers, each a sub-model of the units dealt to it this round,
 * T local SGD steps, and a `merge` boundary that copies the slices back into the model and
 * averages what no partitioned unit cuts. The filter distance is measured between
 * successive rounds' merged models.
 *
 * The round's randomness is one i64 tensor from `roundInput` — per partitioned group a permutation of
 * its units, then K·T·B row indices — so the `batched` placement traces the K workers' rounds
 * once into one program and replays it: worker k's units are entries k, k+K, … of each
 * permutation (sorted), its rows the k-th block of indices.
 */
import { LiaisonError, type Runtime, type Tensor } from '../../../bridge/index.js';
import type { Dataset } from '../../data.js';
import { lossOf } from '../../evaluate.js';
import { Model } from '../../model.js';
import { noGrad } from '../../program.js';
import { flopsOf, scatterParams, sliceParams, subSpec, type UnitGroup } from '../../units.js';
import { gatheredRanked, runWorkers, type WorkerSpec } from '../../workers/index.js';

/** The config fields the rounds read (LoftConfig's). */
export interface RoundsConfig { partition: 'every' | 'alternate'; workers: number; localSteps: number; pretrainRounds: number; lr: number; momentum: number; batchSize: number; threshold: number; patience: number; warmupRounds: number; seed: number }

export interface PretrainOptions {
  /** Rounds at most; default the config's `pretrainRounds`. */
  rounds?: number;
  /** End pretraining at the round the stop rule fires (default false: run every round, report that round). */
  untilTicket?: boolean;
  /** A registered placement (sdk/workers/placements.ts); default 'batched'. */
  placement?: string;
  /** After every round, awaited. */
  onRound?(round: LoftRound): void | Promise<void>;
}

/** One round of pretraining. */
export interface LoftRound {
  round: number;
  /** Per layer (unit group): the filter distance between this round's merged units and the last round's ({@link filterDistance}). */
  distance: Record<string, number>;
  /** Mean training loss of the workers' local steps. */
  loss: number;
  /** Rounds in a row, up to this one and after the first `warmupRounds`, in which every layer's distance was below `threshold`. */
  settled: number;
  /** Bytes this round: `up` the workers' messages (their slices, the shared parameters, a 4-byte loss each; the coordinator's RoundReport), `down` what they received (each its slices and the shared parameters, from the sub-models' shapes). */
  bytes: { up: number; down: number };
}

export interface PretrainReport {
  rounds: LoftRound[];
  /** The first round that ended `patience` settled rounds in a row: tickets have emerged. Null when none did. */
  ticketRound: number | null;
  /** Each worker's sub-model: parameters and forward multiply–adds per sample. */
  workers: { params: number; macs: number }[];
  /** Training multiply–adds per round, counted as 3 × forward (forward, then backward ≈ 2 forwards) × rows: LoFT's workers, and K data-parallel replicas of the whole model on the same rows. */
  macsPerRound: { loft: number; dataParallel: number };
  /**
   * Bytes per round of data-parallel training of the whole model on the same K·T·B rows:
   * the gradient (P f32) ring all-reduced at every one of the T steps, each worker sending
   * and receiving 2(K−1)/K·P·4 bytes a step, so `up` = `down` = 2(K−1)·P·4·T over all workers.
   */
  dataParallelBytesPerRound: { up: number; down: number };
}

/**
 * (out, d) f32: a unit per row, its weight row (in·kh·kw entries) and its bias — the
 * vector LoFT measures the distance of and prunes by.
 */
export function unitRows(model: Model, group: UnitGroup): Tensor {
  const own = group.members.filter((m) => m.dim === 0).map((m) => model.param(m.param));
  const rows = own.map((t) => t.reshape([group.size, -1]));
  const out = rows.length === 1 ? rows[0].clone() : model.rt.cat(rows, 1);
  for (const t of [...own, ...rows]) if (t !== out) t.free();
  return out;
}

/**
 * () f32, the filter distance of a layer between two rounds: the mean over its units of
 * ‖u_r − u_{r−1}‖ / ‖u_{r−1}‖, each unit u its weight row and bias (`prev`, `now` (out, d)).
 * A relative change, so layers of any scale compare with one threshold; it falls as the
 * filters settle into the ones pruning will keep.
 */
export function filterDistance(prev: Tensor, now: Tensor): Tensor {
  return now.sub(prev).norm(2, 1).div(prev.norm(2, 1).add(1e-12)).mean();
}

/** Worker k's share of a group of n units dealt round-robin to K: ⌈(n − k)/K⌉. */
export const shareOf = (n: number, k: number, K: number) => Math.ceil((n - k) / K);

/** Bytes of f32 parameters. */
const bytesOf = (m: Model) => m.params.reduce((a, p) => a + p.numel, 0) * 4;

/** LoFT pretraining of `model` in place; see the module comment and {@link PretrainReport}. */
export async function pretrainLoft(model: Model, groups: UnitGroup[], data: Dataset, cfg: RoundsConfig, opts: PretrainOptions = {}): Promise<PretrainReport> {
  const rt = model.rt;
  const { workers: K, localSteps: T, batchSize: B, lr, momentum } = cfg;
  const rounds = opts.rounds ?? cfg.pretrainRounds;
  if (!Number.isInteger(rounds) || rounds < 1) throw new LiaisonError('E_ARG', `loft.pretrain: rounds must be an integer >= 1, got ${rounds}`, { param: 'rounds' });
  // 'alternate': layers 0, 2, … partitioned; a layer between two keeps all its units on every worker (averaged), as the released code's conv2
  const parted = cfg.partition === 'alternate' ? groups.filter((_, i) => i % 2 === 0) : groups;
  const small = parted.find((g) => g.size < K);
  if (small) throw new LiaisonError('E_ARG', `loft.pretrain: config field 'workers' is ${K}, but '${small.name}' has only ${small.size} units; every worker needs at least one of each layer`, { param: 'workers' });
  if (!data.classification) throw new LiaisonError('E_ARG', 'loft.pretrain: data must have class labels (the local steps minimize cross-entropy)', { param: 'data' });

  const subs: Model[] = [];
  const held: Tensor[] = [];
  try {
    for (let k = 0; k < K; k++) subs.push(await Model.build(rt, subSpec(model, groups, Object.fromEntries(parted.map((g) => [g.name, shareOf(g.size, k, K)]))), { seed: 0 }));
    const cut = new Set(parted.flatMap((g) => g.members.map((m) => m.param)));
    const shared = model.params.filter((p) => !cut.has(p.name)).map((p) => p.name);
    const offsets = parted.map((_, i) => parted.slice(0, i).reduce((a, g) => a + g.size, 0));
    const rowsAt = parted.reduce((a, g) => a + g.size, 0);
    // worker k's units of every group this round, (share,) i64 ascending (the runtime wants them sorted)
    // worker k's sub-model reads share/n of each partitioned layer's units: the weights reading
    // them are scaled by s = n/share while it trains, so that its pre-activations match the
    // whole model's in scale (unscaled, those reach ~1/K of it per partitioned layer and the
    // sub-model does not leave the plateau at ln 10), and unscaled when published
    const scaleOf = (k: number) => {
      const s: Record<string, number> = {};
      for (const g of parted) for (const m of g.members) if (m.dim > 0) s[m.param] = (s[m.param] ?? 1) * (g.size / shareOf(g.size, k, K));
      return s;
    };
    const scales = Array.from({ length: K }, (_, k) => scaleOf(k));
    const keepOf = (input: Tensor, k: number) => Object.fromEntries(parted.map((g, i) => [g.name, input.narrow(0, offsets[i], g.size).slice(0, k, null, K).sort(0)[0]]));
    let input: Tensor | null = null;

    type Message = { parts: Record<string, Tensor>; loss: Tensor };
    // one worker's round on sub-model `sub`: the units `keep` of every partitioned group, the
    // rows `rows(t)` of local step t; its message is its trained slices (unscaled) and mean loss
    const trainOn = (sub: Model, scale: Record<string, number>, keep: Record<string, Tensor>, rows: (t: number) => Tensor): Message => {
      const names = sub.params.map((p) => p.name);
      const parts = sliceParams(model, groups, keep);
      noGrad(rt, () => { for (const n of names) sub.param(n).copy_(n in scale ? parts[n].mul(scale[n]) : parts[n]); });
      let velocity: Record<string, Tensor> | null = null;
      const losses: Tensor[] = [];
      for (let t = 0; t < T; t++) {
        const idx = rows(t);
        rt.call('zero_grad', [sub.handle], undefined, 0);
        const loss = lossOf('cross_entropy', sub.forward(data.x.indexSelect(0, idx), { train: true }), data.y.indexSelect(0, idx), 1);
        rt.call('backward', [loss], undefined, 0);
        noGrad(rt, () => {
          const v: Record<string, Tensor> = {};
          for (const n of names) {
            // a copy: zero_grad drops the gradient the buffer would otherwise be
            v[n] = velocity ? velocity[n].mul(momentum).add(sub.grad(n)) : sub.grad(n).mul(1);
            sub.param(n).sub_(v[n].mul(lr));
          }
          velocity = v;
        });
        losses.push(loss);
      }
      const param = (n: string) => (n in scale ? sub.param(n).div(scale[n]) : sub.param(n));
      return { parts: Object.fromEntries(names.map((n) => [n, param(n)])), loss: rt.stack(losses).mean() };
    };
    // step leaves the worker's message for publish (both run back to back, in one trace when batched)
    const messageOf: Message[] = [];

    const spec: WorkerSpec<Record<string, never>, Message, { loss: Tensor }> = {
      name: 'loft',
      workers: K,
      localSteps: T,
      init: () => ({}),
      roundInput: (round, r: Runtime) => {
        const seed = cfg.seed * 1_000_003 + round * (parted.length + 1);
        const perms = parted.map((g, i) => r.call('randperm', [g.size], { seed: seed + i }) as Tensor);
        const rows = r.randint(0, data.size, [K * T * B], { seed: seed + parted.length });
        input = r.cat([...perms, rows]);
        return input;
      },
      step: (state, _view, ctx) => {
        const k = ctx.worker;
        messageOf[k] = trainOn(subs[k], scales[k], keepOf(ctx.input!, k), (t) => ctx.input!.narrow(0, rowsAt + (k * T + t) * B, B));
        return state;
      },
      publish: (_state, { worker: k }) => messageOf[k],
      // on the ranks of a group: worker k on rank k mod N, its units and rows picked by its
      // number inside the program, the messages gathered to every rank and merged there as here
      ranked: (art, ranks) => {
        const uneven = parted.find((g) => g.size % K !== 0);
        if (uneven) throw new LiaisonError('E_ARG', `loft.pretrain: placement 'ranks' gives every worker an equal share, so every partitioned layer's units must divide by config field 'workers' (${K}); '${uneven.name}' has ${uneven.size}`, { param: 'workers' });
        return gatheredRanked(art, ranks, K, (j, id, inp) => {
          const keep = Object.fromEntries(parted.map((g, i) => [g.name, inp!.narrow(0, offsets[i], g.size).indexSelect(0, rt.arange(g.size / K).mul(K).add(id)).sort(0)[0]]));
          const rows = inp!.narrow(0, rowsAt, K * T * B).reshape([K, T * B]).indexSelect(0, id.reshape([1])).reshape([T * B]);
          return trainOn(subs[j], scales[0], keep, (t) => rows.narrow(0, t * B, B));
        });
      },
      boundary: {
        kind: 'merge',
        init: (r) => ({ loss: r.zeros([]) }),
        merge: (_shared, messages, ws) => noGrad(rt, () => {
          messages.forEach((m, i) => scatterParams(model, groups, keepOf(input!, ws[i]), m.parts));
          // parameters no partitioned unit cuts (the head's bias; with 'alternate', the layers between) were trained by every worker: averaged
          for (const n of shared) model.param(n).copy_(rt.stack(messages.map((m) => m.parts[n])).mean(0));
          return { loss: rt.stack(messages.map((m) => m.loss)).mean() };
        }),
      },
    };

    const down = subs.reduce((a, s) => a + bytesOf(s), 0);
    let prev = groups.map((g) => unitRows(model, g).keep());
    held.push(...prev);
    // the model's parameters after the last round whose loss was finite: a diverging round
    // (its merge already wrote NaN into the model) is undone from here, so nothing is lost
    const names = model.params.map((p) => p.name);
    const good = names.map((n) => model.param(n).clone().keep());
    held.push(...good);
    let diverged: { round: number; loss: number } | null = null;
    const report: LoftRound[] = [];
    let settled = 0;
    let ticketRound: number | null = null;
    const run = await runWorkers(rt, spec, {
      rounds,
      placement: opts.placement ?? 'batched',
      onRound: async (r) => {
        const now = groups.map((g) => unitRows(model, g).keep());
        held.push(...now);
        const dist = rt.stack(groups.map((_, i) => filterDistance(prev[i], now[i])));
        const [d, loss] = await Promise.all([dist.toArray(), r.view.loss.item()]);
        dist.free();
        for (const t of prev) t.free();
        prev = now;
        if (!Number.isFinite(loss)) {
          names.forEach((n, i) => { model.param(n).copy_(good[i]).free(); });
          diverged = { round: r.round, loss };
          return 'stop';
        }
        names.forEach((n, i) => { good[i].copy_(model.param(n)).free(); });
        const distance = Object.fromEntries(groups.map((g, i) => [g.name, Number(d[i])]));
        settled = r.round > cfg.warmupRounds && Object.values(distance).every((x) => x < cfg.threshold) ? settled + 1 : 0;
        // on ranks the model is on every rank: what crosses is the gathered messages (the coordinator's count)
        const bytes = opts.placement === 'ranks' && r.bytes ? r.bytes : { up: r.bytes?.up ?? NaN, down };
        const round: LoftRound = { round: r.round, distance, loss, settled, bytes };
        report.push(round);
        if (settled === cfg.patience && ticketRound === null) ticketRound = r.round;
        await opts.onRound?.(round);
        return opts.untilTicket && ticketRound !== null ? 'stop' : undefined;
      },
    });
    run.free();
    if (diverged) {
      const { round, loss } = diverged as { round: number; loss: number };
      await rt.flush();
      throw new LiaisonError('E_NONFINITE', `loft.pretrain: the workers' loss is ${loss} in round ${round}: their local SGD diverged; lower config field 'lr' (${lr}) or 'localSteps' (${T}). The model holds ${round === 1 ? 'the weights it had before pretraining' : `the weights of round ${round - 1}`}`, { param: 'lr' });
    }

    const fullMacs = (await flopsOf(model)) ?? NaN;
    const subMacs = await Promise.all(subs.map(async (s) => (await flopsOf(s)) ?? NaN));
    const P = model.params.reduce((a, p) => a + p.numel, 0);
    const ring = 2 * (K - 1) * P * 4 * T;
    return {
      rounds: report,
      ticketRound,
      workers: subs.map((s, k) => ({ params: s.params.reduce((a, p) => a + p.numel, 0), macs: subMacs[k] })),
      macsPerRound: { loft: 3 * T * B * subMacs.reduce((a, b) => a + b, 0), dataParallel: 3 * T * B * K * fullMacs },
      dataParallelBytesPerRound: { up: ring, down: ring },
    };
  } finally {
    for (const t of held) t.free();
    for (const s of subs) s.free();
  }
}
