/**
 * Randomly masked neurons and independent subnetwork training. Each round the hidden
 * neurons of an MLP are dealt to S subnetworks — Bernoulli masks (each subnet keeps each
 * neuron with probability ξ: dropout for S = 1, multi-sample dropout for S > 1) or a
 * disjoint partition (independent subnet training: each neuron in exactly one subnet, ξ =
 * 1/S) — each subnet runs `localSteps` gradient steps from the current weights with its
 * hidden activations masked (× 1/ξ), and the copies are combined back: per weight entry,
 * the average over the subnets that held it (all its neurons kept). `train()` runs that
 * on `runWorkers` (sdk/workers/, docs/workers.md): one worker per subnet, a merge boundary.
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
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import type { Dataset } from '../../sdk/data.js';
import { PrunerBase, PrunerFields } from '../../sdk/families/pruners/base.js';
import type { PrunableWeight, PruneContext } from '../../sdk/families/pruners/types.js';
import type { ModelLike, ParamInfo } from '../../sdk/hooks.js';
import type { Model } from '../../sdk/model.js';
import type { MLPSpec } from '../../sdk/model-spec.js';
import { definePlugin } from '../../sdk/plugin.js';
import { runWorkers, type WorkerSpec } from '../../sdk/workers/index.js';

const oneOf = <T extends string>(values: readonly T[], dflt: T, description: string) =>
  Type.Union(values.map((v) => Type.Literal(v)), { default: dflt, description });

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

/** What `train()` reports per round: the merged dense network's training loss, and held-out accuracy when given. */
export interface MaskedRound { round: number; loss: number; accuracy?: number; bytes: { up: number; down: number } | null }
export interface MaskedTrainOptions {
  rounds: number;
  /** Held-out rows: the merged network's accuracy on them each round. */
  eval?: Dataset;
  onRound?: (r: MaskedRound) => void | Promise<void>;
  /** Where the subnets run (docs/workers.md): 'batched' (default, one traced program per round) or 'sequential'. */
  placement?: string;
}

/** An MLP's layers: weight (out, in) and bias (out,) per layer; hidden layers have an offset into the (S, H) mask. */
interface Layout { sizes: number[]; bias: boolean; act: 'relu' | 'gelu' | 'tanh'; names: string[]; offsets: number[]; hidden: number }

function layoutOf(model: ModelLike, who: string): Layout {
  const { kind, spec } = model as Partial<Model>;
  if (spec?.kind !== 'mlp') throw new LiaisonError('E_ARG', `${who}: masks the hidden neurons of an 'mlp' model; this model's kind is '${kind ?? 'unknown'}'`, { param: 'model' });
  const mlp = spec as MLPSpec;
  const sizes = [...mlp.sizes as number[]];
  const bias = mlp.bias ?? true;
  const names = sizes.slice(1).flatMap((_, i) => [`layers.${i}.weight`, ...(bias ? [`layers.${i}.bias`] : [])]);
  const offsets = sizes.slice(1, -1).map((_, i) => sizes.slice(1, i + 1).reduce((a, b) => a + b, 0));
  return { sizes, bias, act: mlp.activation ?? 'relu', names, offsets, hidden: sizes.slice(1, -1).reduce((a, b) => a + b, 0) };
}

/** The round's (S, H) 0/1 masks, H = all hidden neurons: Bernoulli(ξ), or a random deal of each layer's neurons round-robin to the S subnets. */
export function roundMasks(rt: Runtime, split: 'bernoulli' | 'partition', subnets: number, keep: number, widths: number[], seed: number): Tensor {
  const H = widths.reduce((a, b) => a + b, 0);
  if (split === 'bernoulli') return rt.rand([subnets, H], { seed }).lt(keep).to('f32');
  const owner = rt.call('cat', [widths.map((n, l) => rt.call('randperm', [n], { seed: seed + 7919 * (l + 1) }) as Tensor)], { dim: 0 }) as Tensor;
  return owner.remainder(subnets).unsqueeze(0).eq((rt.call('arange', [subnets]) as Tensor).unsqueeze(1)).to('f32');
}

/** The subnet's forward: x (N, in) → (N, out), hidden activations × mask (1, width) × `scale` (1/ξ, or 1). */
export function subnetForward(x: Tensor, w: readonly Tensor[], mask: Tensor | null, lay: Layout, scale: number): Tensor {
  const L = lay.sizes.length - 1;
  const per = lay.bias ? 2 : 1;
  let h = x;
  for (let l = 0; l < L; l++) {
    h = x.rt.call('linear', [h, w[l * per], lay.bias ? w[l * per + 1] : null]) as Tensor;
    if (l === L - 1) break;
    h = lay.act === 'relu' ? h.relu() : lay.act === 'gelu' ? h.gelu() : h.tanh();
    if (mask) h = h.mul(mask.narrow(1, lay.offsets[l], lay.sizes[l + 1])).mul(scale);
  }
  return h;
}

/** Which subnets held each entry of parameter i: (out, in) or (out,) 0/1, from the subnet's (1, H) mask. */
function held(i: number, mask: Tensor, lay: Layout, shape: number[]): Tensor {
  const per = lay.bias ? 2 : 1;
  const l = Math.floor(i / per);
  const L = lay.sizes.length - 1;
  const rt = mask.rt;
  const out = l < L - 1 ? mask.narrow(1, lay.offsets[l], lay.sizes[l + 1]).reshape([lay.sizes[l + 1]]) : rt.ones([lay.sizes[l + 1]]);
  if (shape.length === 1) return out;
  const inn = l > 0 ? mask.narrow(1, lay.offsets[l - 1], lay.sizes[l]).reshape([lay.sizes[l]]) : rt.ones([lay.sizes[l]]);
  return rt.call('outer', [out, inn]) as Tensor;
}

/** The combination: per entry, the mean of the copies of the subnets that held it (or of all S); entries no subnet held kept or zeroed. */
export function mergeSubnets(shared: readonly Tensor[], copies: readonly { w: Tensor[]; mask: Tensor }[], lay: Layout, combine: 'holders' | 'all', unheld: 'keep' | 'zero', shapes: number[][]): Tensor[] {
  return shared.map((s, i) => {
    const holds = copies.map((c) => held(i, c.mask, lay, shapes[i]));
    const count = holds.reduce((a, b) => a.add(b));
    const sum = copies.map((c, k) => c.w[i].mul(holds[k])).reduce((a, b) => a.add(b));
    // a copy that did not hold an entry left it at the shared value (no gradient reaches it)
    const mean = combine === 'holders' ? sum.div(count.clamp(1)) : copies.map((c) => c.w[i]).reduce((a, b) => a.add(b)).div(copies.length);
    return mean.where(count.gt(0), unheld === 'keep' ? s : 0);
  });
}

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
    const lay = layoutOf(model, this.id);
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
    const lay = layoutOf(model, this.id);
    const c = this.config;
    const rt = model.rt;
    if (!Number.isInteger(opts?.rounds) || opts.rounds < 1) throw new LiaisonError('E_ARG', `${this.id}.train: rounds must be an integer >= 1, got ${opts?.rounds}`, { param: 'rounds' });
    if (!data.classification) throw new LiaisonError('E_ARG', `${this.id}.train: needs class labels (integer y); this data's y is float`, { param: 'data' });
    const N = data.size;
    const B = c.batchSize === 0 ? N : c.batchSize;
    if (B > N) throw new LiaisonError('E_ARG', `${this.id}: config field 'batchSize' is ${B}, more than the ${N} rows`, { param: 'batchSize' });
    const S = c.subnets;
    const T = c.localSteps;
    const xi = this.keepFraction;
    const scale = c.scale ? 1 / xi : 1;
    const classes = lay.sizes[lay.sizes.length - 1];
    const shapes = lay.names.map((n) => model.params.find((p) => p.name === n)!.shape);
    const widths = lay.sizes.slice(1, -1);
    const H = lay.hidden;
    const targets = (y: Tensor) => (rt.call('one_hot', [y], { num_classes: classes }) as Tensor).to('f32');
    const lossOf = (out: Tensor, y: Tensor, n: number): Tensor => (c.loss === 'mse'
      ? (rt.call('mse_loss', [out, targets(y)], { reduction: 'sum' }) as Tensor).div(2 * n)
      : rt.call('cross_entropy', [out, y]) as Tensor);
    const seedOf = (r: number) => c.seed * 1_000_003 + r * 101;

    type State = { w: Tensor[]; mask: Tensor };
    const spec: WorkerSpec<State, State, Tensor[]> = {
      name: 'masked-neurons',
      workers: S,
      localSteps: T,
      init: (_w, { view }) => ({ w: view!.map((t) => t.clone()), mask: rt.ones([1, H]) }),
      // (S, H + T·B): the masks, then each subnet's minibatch rows per local step (as f32, exact below 2^24)
      roundInput: (r) => {
        const masks = H ? roundMasks(rt, c.split, S, c.keep, widths, seedOf(r)) : rt.zeros([S, 0]);
        if (c.batchSize === 0) return masks;
        const rows = rt.call('randint', [0, N, [S, T * B]], { seed: seedOf(r) + 17 }) as Tensor;
        return rt.call('cat', [[masks, rows.to('f32')]], { dim: 1 }) as Tensor;
      },
      step: (_s, view, { worker, input }) => {
        const mine = input!.narrow(0, worker, 1);
        const mask = mine.narrow(1, 0, H);
        const w = view!.map((t) => t.clone());
        for (const p of w) rt.call('set_requires_grad', [p], { flag: true }, 0);
        for (let t = 0; t < T; t++) {
          let x = data.x;
          let y = data.y;
          if (c.batchSize > 0) {
            const idx = mine.narrow(1, H + t * B, B).reshape([B]).to('i64');
            x = x.indexSelect(0, idx);
            y = y.indexSelect(0, idx);
          }
          if (t > 0) rt.call('clear_grads', [w], undefined, 0);
          rt.call('backward', [lossOf(subnetForward(x, w, H ? mask : null, lay, scale), y, B)], undefined, 0);
          // in place on a leaf that requires grad: the runtime runs it without autograd
          for (const p of w) p.sub_((rt.call('grad_of', [p]) as Tensor).mul(c.lr));
        }
        for (const p of w) rt.call('set_requires_grad', [p], { flag: false }, 0);
        return { w, mask };
      },
      publish: (s) => s,
      boundary: {
        kind: 'merge',
        init: () => {
          const state = model.state(); // detached: the copies start without autograd history
          const w = lay.names.map((n) => state[n].clone());
          for (const t of Object.values(state)) t.free();
          return w;
        },
        merge: (shared, copies) => mergeSubnets(shared, copies, lay, c.combine, c.unheld, shapes),
      },
    };
    const loss: number[] = [];
    const accuracy: number[] = [];
    const result = await runWorkers(rt, spec, {
      rounds: opts.rounds,
      placement: opts.placement,
      onRound: async ({ round, view, bytes }) => {
        const read = await rt.scope(async () => {
          const l = lossOf(subnetForward(data.x, view, null, lay, 1), data.y, N).reshape([1]);
          const ev = opts.eval;
          const a = ev ? (rt.call('accuracy', [subnetForward(ev.x, view, null, lay, 1), ev.y]) as Tensor).reshape([1]) : null;
          return Array.from(await (rt.call('cat', [a ? [l, a] : [l]], { dim: 0 }) as Tensor).toArray() as Float32Array);
        });
        loss.push(read[0]);
        if (opts.eval) accuracy.push(read[1]);
        await opts.onRound?.({ round, loss: read[0], ...(opts.eval ? { accuracy: read[1] } : {}), bytes });
      },
    });
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
