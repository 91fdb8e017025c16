/**
 * Randomly masked neurons and independent subnetwork training. Each round the hidden
 * neurons of an MLP are dealt to S subnetworks — Bernoulli masks (each subnet keeps each
 * neuron with probability ξ: dropout for S = 1, multi-sample dropout for S > 1) or a
 * disjoint partition (independent subnet training: each neuron in exactly one subnet, ξ =
 * 1/S) — each subnet runs `localSteps` gradient steps from the current weights with its
 * hidden activations masked (× 1/ξ), and the copies are combined back: per weight entry,
 * the average over the subnets that held it (all its neurons kept). `train()` runs that
 * on `runWorkers` (docs/workers.md), a worker per subnet; the subnet math (masks, masked
 * forward, merge) is sdk/families/pruners/subnets.ts.
 *
 * Where the paper's code differs: an entry no subnet held keeps its value (`unheld: 'keep'`,
 * the default); MaskedNTK zeroes it, which in its model (one trained layer, a fixed ±1
 * output layer) only restarts the neuron, but in a deeper net leaves it dead (a zero row
 * and a zero outgoing column get no gradient again). `unheld: 'zero'` does what the code does.
 *
 * As a pruner in a Trainer (the family contract, `masks()`) it is a random *neuron* pruner:
 * whole rows of each hidden layer's weight (out, in) — the neurons one subnet drops — at
 * sparsity 1 − ξ (bernoulli) or 1 − 1/S (partition) unless `sparsity` says otherwise, held
 * after every optimizer step by the base. Its `granularity` is `'unit'`: counts are rows.
 *
 * Method: Liao & Kyrillidis, "On the Convergence of Shallow Neural Network Training with
 * Randomly Masked Neurons", TMLR 2022, https://arxiv.org/abs/2112.02668; Yuan et al.,
 * "Distributed Learning of Deep Neural Networks using Independent Subnet Training",
 * https://arxiv.org/abs/1910.02120.
 *
 * ```ts
 * const mn = maskedNeurons({ subnets: 4, split: 'partition', localSteps: 5, lr: 0.5 });
 * const { loss, accuracy } = await mn.train(model, train, { rounds: 100, eval: test });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Tensor } from '../../bridge/index.js';
import type { Dataset } from '../../sdk/data.js';
import { PrunerBase, PrunerFields } from '../../sdk/families/pruners/base.js';
import type { PrunableWeight, PruneContext } from '../../sdk/families/pruners/types.js';
import type { ModelLike, ParamInfo } from '../../sdk/hooks.js';
import { localDescent, type MaskedTrainOptions, maskedForward, mergeByHolders, mlpLayout, neuronMasks, subnetLoss } from '../../sdk/families/pruners/subnets.js';
import { type Descend, RankedSubnets } from '../../sdk/families/pruners/subnets-ranked.js';
import type { Model } from '../../sdk/model.js';
import { definePlugin } from '../../sdk/plugin.js';
import { runWorkers, type WorkerSpec } from '../../sdk/workers/index.js';

const oneOf = <T extends string>(vs: readonly T[], dflt: T, description: string) => Type.Union(vs.map((v) => Type.Literal(v)), { default: dflt, description });

/** Config of {@link MaskedNeurons}. */
export const MaskedNeuronsConfig = Type.Object({
  ...PrunerFields,
  sparsity: Type.Optional(Type.Number({ minimum: 0, exclusiveMaximum: 1, description: "in a Trainer: fraction of each hidden layer's neurons (weight rows) dropped; default 1 − keep (bernoulli) or 1 − 1/subnets (partition)" })),
  subnets: Type.Integer({ minimum: 1, maximum: 64, default: 2, description: 'S: subnetworks trained per round' }),
  split: oneOf(['bernoulli', 'partition'] as const, 'bernoulli', "how neurons are dealt: 'bernoulli' (each subnet keeps each neuron with probability keep) or 'partition' (each neuron in exactly one subnet, IST)"),
  keep: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.5, description: "ξ: probability a subnet keeps a neuron ('bernoulli'; a partition keeps 1/subnets)" }),
  localSteps: Type.Integer({ minimum: 1, default: 5, description: 'gradient steps each subnet runs per round from the merged weights' }),
  lr: Type.Number({ exclusiveMinimum: 0, default: 0.1, description: "step size of the subnets' gradient descent" }),
  batchSize: Type.Integer({ minimum: 0, default: 0, description: 'rows per local step, drawn per subnet; 0: the full batch (the paper)' }),
  loss: oneOf(['mse', 'cross_entropy'] as const, 'mse', "train()'s loss: 'mse' (½‖f(x) − onehot(y)‖² per row, the paper's) or 'cross_entropy'"),
  scale: Type.Boolean({ default: true, description: "multiply a subnet's kept hidden activations by 1/ξ (the paper; the dense net is then the subnets' expectation)" }),
  combine: oneOf(['holders', 'all'] as const, 'holders', "per weight entry: the average over the subnets that held it (the paper), or over all S (local-SGD averaging)"),
  unheld: oneOf(['keep', 'zero'] as const, 'keep', "an entry no subnet held: keeps its value, or is zeroed (MaskedNTK's code)"),
  seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0, description: 'seed of the masks and minibatches (with the round, it fixes each draw)' }),
}, { additionalProperties: false });
export type MaskedNeuronsConfig = Static<typeof MaskedNeuronsConfig>;
type Resolved = MaskedNeuronsConfig & { sparsity: number };

/** Masked neurons / independent subnetworks: `train()` runs the rounds; in a Trainer, a random neuron pruner. */
export class MaskedNeurons extends PrunerBase<Resolved> {
  /** Masks remove whole rows (neurons) of each hidden layer's weight: sparsity is counted in rows, per layer. */
  readonly granularity = 'unit' as const;
  private output: string | null = null;

  /** ξ: the share of neurons a subnet keeps. */
  get keepFraction(): number {
    return this.config.split === 'partition' ? 1 / this.config.subnets : this.config.keep;
  }

  /** Hidden layers' weights only: the output layer's rows are the logits, not neurons. */
  override selects(param: ParamInfo): boolean {
    return param.shape.length === 2 && param.name !== this.output;
  }

  override setup(model: ModelLike): void {
    const lay = mlpLayout(model, this.id);
    this.output = `layers.${lay.sizes.length - 2}.weight`;
    super.setup(model);
  }

  /** One draw: per weight, round(sparsity · rows) rows dropped at random, rows already dropped first (they stay dropped). */
  masks(weights: PrunableWeight[], { rt, round, current, sparsity }: PruneContext): Tensor[] {
    return weights.map(({ shape }, i) => {
      const rows = shape[0];
      const k = Math.round(sparsity * rows);
      if (k === 0) return rt.ones(shape);
      const kept = current[i].reshape([rows, -1]).amax(1); // (rows,) 1 = kept so far
      const score = rt.rand([rows], { seed: this.config.seed * 1_000_003 + round * 65_536 + i }).add(kept);
      const [, drop] = score.topk(k, 0, false);
      const row = rt.ones([rows]).scatter(0, drop, 0);
      return row.reshape([rows, ...shape.slice(1).map(() => 1)]).mul(rt.ones(shape));
    });
  }

  /**
   * The procedure: `rounds` rounds of S subnets × `localSteps` steps, merged, written back
   * into the model's parameters at the end. Returns the merged network's training loss
   * per round (and held-out accuracy with `eval`).
   */
  async train(model: Model, data: Dataset, opts: MaskedTrainOptions): Promise<{ loss: number[]; accuracy: number[] }> {
    const lay = mlpLayout(model, this.id);
    const c = this.config;
    const rt = model.rt;
    if (!Number.isInteger(opts?.rounds) || opts.rounds < 1) throw new LiaisonError('E_ARG', `${this.id}.train: rounds must be an integer >= 1, got ${opts?.rounds}`, { param: 'rounds' });
    if (!data.classification) throw new LiaisonError('E_ARG', `${this.id}.train: needs class labels (integer y); this data's y is float`, { param: 'data' });
    const N = data.size;
    const B = c.batchSize === 0 ? N : c.batchSize;
    if (B > N) throw new LiaisonError('E_ARG', `${this.id}: config field 'batchSize' is ${B}, more than the ${N} rows`, { param: 'batchSize' });
    const [S, T, scale] = [c.subnets, c.localSteps, c.scale ? 1 / this.keepFraction : 1];
    const H = lay.hidden;
    const lossOf = (out: Tensor, y: Tensor, n: number) => subnetLoss(c.loss, out, y, n, lay.sizes[lay.sizes.length - 1]);
    const seedOf = (r: number) => c.seed * 1_000_003 + r * 101;

    type State = { w: Tensor[]; mask: Tensor };
    // one subnet's round from the shared weights and its row (1, H + T·B) of the round's input
    const descend: Descend = (shared, mine) => {
      const mask = mine.narrow(1, 0, H);
      const w = localDescent(rt, shared, T, c.lr, (t, w) => {
        const idx = c.batchSize ? mine.narrow(1, H + t * B, B).reshape([B]).to('i64') : null;
        const [x, y] = idx ? [data.x.indexSelect(0, idx), data.y.indexSelect(0, idx)] : [data.x, data.y];
        return lossOf(maskedForward(x, w, H ? mask : null, lay, scale), y, B);
      });
      return { w, mask };
    };
    const spec: WorkerSpec<State, State, Tensor[]> = {
      name: 'masked-neurons',
      workers: S,
      localSteps: T,
      init: (_w, { view }) => ({ w: view!.map((t) => t.clone()), mask: rt.ones([1, H]) }),
      // (S, H + T·B): the masks, then each subnet's minibatch rows per local step (as f32, exact below 2^24)
      roundInput: (r) => {
        const masks = H ? neuronMasks(rt, c.split, S, c.keep, lay.sizes.slice(1, -1), seedOf(r)) : rt.zeros([S, 0]);
        if (c.batchSize === 0) return masks;
        return rt.cat([masks, (rt.call('randint', [0, N, [S, T * B]], { seed: seedOf(r) + 17 }) as Tensor).to('f32')], 1);
      },
      step: (_s, view, { worker, input }) => descend(view!, input!.narrow(0, worker, 1)),
      publish: (s) => s,
      boundary: {
        kind: 'merge',
        init: () => {
          const state = model.state(); // detached: the copies start without autograd history
          const w = lay.names.map((n) => state[n].clone());
          for (const t of Object.values(state)) t.free();
          return w;
        },
        merge: (shared, copies) => mergeByHolders(shared, copies, lay, c.combine, c.unheld),
      },
      // on the ranks of a group (placement 'ranks'): sdk/families/pruners/subnets-ranked.ts
      ranked: (art, ranks) => new RankedSubnets(art, ranks, { subnets: S, descend, lay, combine: c.combine, unheld: c.unheld }),
    };
    const loss: number[] = [];
    const accuracy: number[] = [];
    let diverged = 0; // the round whose merged network's loss was not finite
    const result = await runWorkers(rt, spec, {
      rounds: opts.rounds,
      placement: opts.placement,
      onRound: async ({ round, view, bytes }) => {
        const read = await rt.scope(async () => {
          const l = lossOf(maskedForward(data.x, view, null, lay), data.y, N).reshape([1]);
          const ev = opts.eval;
          const a = ev ? (rt.call('accuracy', [maskedForward(ev.x, view, null, lay), ev.y]) as Tensor).reshape([1]) : null;
          return Array.from(await rt.cat(a ? [l, a] : [l]).toArray() as Float32Array);
        });
        if (!Number.isFinite(read[0])) { diverged = round; return 'stop'; }
        loss.push(read[0]);
        if (opts.eval) accuracy.push(read[1]);
        await opts.onRound?.({ round, loss: read[0], ...(opts.eval ? { accuracy: read[1] } : {}), bytes });
      },
    });
    // the model is written only after the last round: a diverged run leaves it as it was
    if (diverged) {
      result.free();
      throw new LiaisonError('E_NONFINITE', `${this.id}.train: the merged network's loss is not finite after round ${diverged}: the subnets' steps diverged; lower config field 'lr' (${c.lr}) or 'localSteps' (${T}). The model keeps the weights it had`, { param: 'lr' });
    }
    lay.names.forEach((n, i) => { model.param(n).copy_(result.view[i]).free(); });
    await rt.flush();
    result.free();
    return { loss, accuracy };
  }
}

/** The `masked-neurons` registration: `maskedNeurons({ subnets, split, keep, localSteps, lr, … })`. */
export const maskedNeurons = definePlugin({
  name: 'masked-neurons',
  version: '1.0.0',
  family: 'pruner',
  schema: MaskedNeuronsConfig,
  description: 'randomly masked neurons / independent subnetworks: S subnets (Bernoulli or partition) train local steps and are merged; in a Trainer, random neuron (row) pruning',
  paper: 'https://arxiv.org/abs/2112.02668',
  create: (config, meta) => new MaskedNeurons({ ...config, sparsity: config.sparsity ?? (config.split === 'partition' ? 1 - 1 / config.subnets : 1 - config.keep) }, meta),
});
