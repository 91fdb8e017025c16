/**
 * LoFT: lottery tickets found through filter-wise training.
 *
 * Pretraining is model-parallel: each round the units of the partitioned layers — by
 * default (`partition: 'alternate'`) the filters of the CNN's first conv and the hidden
 * neurons of its `fc`, layers 0, 2, … of its unit groups — are dealt at random to K
 * workers, disjoint and within one of each other in number; worker k trains a sub-model
 * holding only its units for T local SGD steps (momentum reset every round, as the released
 * code re-creates its optimizer at every repartition); the slices are copied back and what
 * no partitioned unit cuts (the head's bias, the layer between) is averaged. A filter
 * distance between successive rounds, tracked per layer, says when the filters have settled
 * (tickets have emerged) and pretraining can stop. Pruning is structured: in every layer
 * with units the smallest by L2 norm (weight row and bias) are dropped — as masks (whole
 * rows and their biases zero) or as a real shrink to a model with fewer channels and fewer
 * FLOPs — and the shrunk model is fine-tuned with the Trainer.
 *
 * Where we differ from the released code (github.com/dunchen/LOFT_release): its prune.py
 * sorts the filter norms ascending and keeps the first half, i.e. the *smallest* filters,
 * which looks like a bug; we keep the largest. Our choice: the sub-models scale the weights
 * reading a partitioned layer by n/share while they train, so that their pre-activations
 * match the whole model's. `partition: 'every'` partitions every layer instead (IST's
 * layer-wise rule). The paper's distance formula is not public: ours is `filterDistance`
 * (sdk/families/pruners/loft-rounds.ts). docs/pruning.md has the choices and the tables.
 *
 * Method: Wang, Dun, Liao, Jermaine, Kyrillidis, "LOFT: Finding Lottery Tickets through
 * Filter-wise Training", AISTATS 2023, https://arxiv.org/abs/2210.16169; the partitioning is
 * independent subnetwork training (Yuan et al., https://arxiv.org/abs/1910.02120).
 *
 * ```ts
 * const pruner = loft({ sparsity: 0.5, workers: 4, localSteps: 10 });
 * const report = await pruner.pretrain(model, train, { onRound: (r) => console.log(r.round, r.distance) });
 * const small = await pruner.shrink(model);              // fewer channels, fewer FLOPs
 * await new Trainer({ model: small, optimizer, epochs: 5, batchSize: 32 }).fit(train);
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Tensor } from '../../bridge/index.js';
import { PrunerBase, PrunerFields } from '../../sdk/families/pruners/base.js';
import type { Granularity, PrunableWeight, PruneContext } from '../../sdk/families/pruners/types.js';
import type { ModelLike, ParamInfo, TrainingHooks } from '../../sdk/hooks.js';
import type { Dataset } from '../../sdk/data.js';
import type { Model } from '../../sdk/model.js';
import { definePlugin } from '../../sdk/plugin.js';
import { shrink, type UnitGroup, unitsOf } from '../../sdk/units.js';
import { type PretrainOptions, type PretrainReport, pretrainLoft } from '../../sdk/families/pruners/loft-rounds.js';

// no 'mode': LoFT masks biases with their rows, which the weight-hook mode cannot (it masks module weights only)
const { mode: _inplaceOnly, ...scheduleFields } = PrunerFields;

/** Config of {@link Loft}. */
export const LoftConfig = Type.Object({
  ...scheduleFields,
  sparsity: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.5, description: 'fraction of the units (filters, hidden neurons) of every partitioned layer pruned, rounded per layer (at least one unit stays)' }),
  partition: Type.Union([Type.Literal('every'), Type.Literal('alternate')], { default: 'alternate', description: "which layers' units are dealt to the workers: 'every' unit group (each worker then trains a (units × units) block of a layer reading a partitioned one), or 'alternate' groups 0, 2, … (a layer between keeps all its units on every worker, averaged at the merge, as the released code's conv2)" }),
  workers: Type.Integer({ minimum: 1, default: 4, description: 'K: workers the units of every partitioned layer are dealt to each round (disjoint; counts within one of each other)' }),
  localSteps: Type.Integer({ minimum: 1, default: 10, description: 'T: SGD steps each worker runs on its sub-model per round, between two merges' }),
  pretrainRounds: Type.Integer({ minimum: 1, default: 60, description: 'rounds of pretraining at most (the stop rule may end it sooner)' }),
  lr: Type.Number({ exclusiveMinimum: 0, default: 0.1, description: 'learning rate of the workers\' local SGD' }),
  momentum: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.9, description: 'heavy-ball momentum of the local SGD; its buffers start from zero every round (the released code re-creates the optimizer at each repartition)' }),
  batchSize: Type.Integer({ minimum: 1, default: 32, description: 'rows per local step; every worker draws its own minibatches' }),
  threshold: Type.Number({ exclusiveMinimum: 0, default: 0.1, description: 'filter distance (mean relative change of a layer\'s units over one round) below which a layer counts as settled' }),
  patience: Type.Integer({ minimum: 1, default: 3, description: 'rounds in a row every layer must be settled before tickets count as emerged (the stop rule)' }),
  warmupRounds: Type.Integer({ minimum: 0, default: 10, description: 'first rounds the stop rule does not count: a network still on its initial plateau barely moves, which is not its filters settling' }),
  seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0, description: 'seed of the partitions and the minibatches' }),
}, { additionalProperties: false });
export type LoftConfig = Static<typeof LoftConfig>;

/** `layers.0.weight` → `layers.0.bias`: the bias that belongs to a weight's rows. */
const biasOf = (weight: string) => weight.replace(/weight$/, 'bias');

/**
 * (out,) f32: each unit's squared L2 norm, Σ over (in, kh, kw) of w² plus its bias².
 * `weight` (out, in) or (out, in, kh, kw), `bias` (out,).
 */
export function unitNorms(weight: Tensor, bias?: Tensor): Tensor {
  const rows = weight.flatten(1).square().sum(1);
  return bias ? rows.add(bias.square()) : rows;
}

/** Units of a layer of `n` the sparsity keeps: round((1 − sparsity) · n), at least one (a layer of none cuts the network). */
export const keptUnits = (n: number, sparsity: number) => Math.max(1, Math.round((1 - sparsity) * n));

/**
 * (k,) i64, ascending: the units with the largest `norms`, among those `alive` (a (out,)
 * bool, or null for all), k = {@link keptUnits}. Norms are ≥ 0, so −1 ranks a dead unit last.
 */
export function keepIndices(norms: Tensor, alive: Tensor | null, n: number, sparsity: number): Tensor {
  const ranked = alive ? norms.where(alive, -1) : norms;
  const [, idx] = ranked.topk(keptUnits(n, sparsity), 0, true, false);
  return idx.sort(0)[0];
}

/**
 * Whole-row masks at `sparsity` per weight: for each weight of rank ≥ 2 its units ranked by
 * {@link unitNorms} (with its bias when the bias is among `weights`), the kept rows 1. A
 * bias gets its weight's row mask (a zeroed filter with a live bias still outputs
 * relu(bias)). A unit already pruned (`current` row all zero) stays pruned.
 */
export function unitMasks(weights: readonly PrunableWeight[], current: readonly Tensor[], sparsity: number): Tensor[] {
  const at = new Map(weights.map((w, i) => [w.name, i]));
  const out: (Tensor | undefined)[] = weights.map(() => undefined);
  weights.forEach((w, i) => {
    if (w.shape.length < 2) return;
    const n = w.shape[0];
    const b = at.get(biasOf(w.name));
    const bias = b !== undefined && weights[b].shape.length === 1 ? b : undefined;
    const alive = current[i].reshape([n, -1]).amax(1).gt(0);
    const idx = keepIndices(unitNorms(w.weight, bias === undefined ? undefined : weights[bias].weight), alive, n, sparsity);
    const rows = w.weight.rt.zeros([n]).scatter(0, idx, 1); // (out,) 1 = kept
    out[i] = rows.reshape([n, ...w.shape.slice(1).map(() => 1)]).mul(current[i]);
    if (bias !== undefined) out[bias] = rows.mul(current[bias]);
  });
  // a bias whose weight is not selected keeps the mask it has
  return out.map((m, i) => m ?? current[i].clone());
}

/** Weight rows and biases of every group's own layer (its members along dim 0): what LoFT masks. */
const ownParams = (groups: readonly UnitGroup[]) => new Set(groups.flatMap((g) => g.members.filter((m) => m.dim === 0).map((m) => m.param)));

/** LoFT: filter-wise partitioned pretraining, a filter distance that says when to stop, structured pruning by unit norm that shrinks. */
export class Loft extends PrunerBase<LoftConfig> {
  /** Its masks keep or drop whole units (rows with their biases). */
  readonly granularity: Granularity = 'unit';
  /** The unit groups of the model attached (null before): which layers it prunes. */
  private groups: readonly UnitGroup[] | null = null;

  /**
   * Attached to a model: the weights and biases of its hidden units (conv filters, hidden
   * neurons; never the output layer, whose rows are the classes). Before, any weight.
   */
  override selects(param: ParamInfo): boolean {
    return this.groups ? ownParams(this.groups).has(param.name) : param.shape.length >= 2;
  }

  override masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
    return unitMasks(weights, ctx.current, ctx.sparsity);
  }

  /**
   * The unit groups of `model`, remembered for {@link selects} (so that `setup(model)` may
   * follow); E_ARG when it has none (a GPT, an adopted module).
   */
  async groupsOf(model: Model): Promise<UnitGroup[]> {
    const groups = await unitsOf(model);
    if (!groups.length) throw new LiaisonError('E_ARG', `${this.id}: the ${model.kind} model has no unit groups (filters, hidden neurons); LoFT partitions and prunes an mlp's or a cnn's`, { param: 'model' });
    this.groups = groups;
    return groups;
  }

  /** Masks over the model's hidden units; its groups must be known first (attach does it; by hand, `await groupsOf(model)`). */
  override setup(model: ModelLike): void {
    if (!this.groups) throw new LiaisonError('E_ARG', `${this.id}: setup() needs the model's unit groups: attach it to a Trainer, or await groupsOf(model) first (else it would prune the output layer's classes)`, { param: 'model' });
    super.setup(model);
  }

  override async attach(hooks: TrainingHooks): Promise<void> {
    await this.groupsOf(hooks.model as Model);
    await super.attach(hooks);
  }

  /**
   * Pretrain `model` in place, LoFT's way (sdk/families/pruners/loft-rounds.ts): rounds of K
   * workers on disjoint units, the filter distance per layer per round, and the round the
   * stop rule fires. With `untilTicket`, pretraining ends there.
   */
  async pretrain(model: Model, data: Dataset, opts: PretrainOptions = {}): Promise<PretrainReport> {
    return pretrainLoft(model, await this.groupsOf(model), data, this.config, opts);
  }

  /** Per group, the units {@link shrink} keeps: the (1 − sparsity) largest by unit norm, (k,) i64 ascending. */
  async keep(model: Model, sparsity = this.config.sparsity): Promise<Record<string, Tensor>> {
    const groups = await this.groupsOf(model);
    const names = new Set(model.params.map((p) => p.name));
    return Object.fromEntries(groups.map((g) => {
      const w = g.members.find((m) => m.dim === 0 && m.param.endsWith('weight'))!.param;
      const b = biasOf(w);
      const norms = unitNorms(model.param(w), names.has(b) ? model.param(b) : undefined);
      return [g.name, keepIndices(norms, null, g.size, sparsity)];
    }));
  }

  /** A smaller model of the (1 − sparsity) largest units per layer: fewer channels, fewer FLOPs; its logits are the masked model's. */
  async shrink(model: Model, sparsity = this.config.sparsity): Promise<Model> {
    const rt = model.rt;
    return rt.scope(async () => shrink(model, await this.keep(model, sparsity)));
  }
}

/** The `loft` registration: `loft({ sparsity, workers, localSteps, pretrainRounds, threshold, patience, … })`. */
export const loft = definePlugin({
  name: 'loft',
  version: '1.0.0',
  family: 'pruner',
  schema: LoftConfig,
  description: 'LoFT: filters partitioned across K workers for pretraining, a filter distance that says when tickets have emerged, structured pruning by unit norm that shrinks the model',
  paper: 'https://arxiv.org/abs/2210.16169',
  create: (config, meta) => new Loft(config, meta),
});
