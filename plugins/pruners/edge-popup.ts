/**
 * Edge-popup: a strong lottery ticket in a randomly weighted network, found by training a
 * score per weight, never the weights. Each scored layer's forward uses W ⊙ m, m keeping
 * exactly `round((1 − sparsity)·n)` entries, those of largest |score|; the gradient passes
 * straight through m to |s| (hidden-networks' `GetSubnet`), so an unused edge still learns
 * and can "pop up". A weight hook applies m (mode `'hook'`): the stored weights stay at their
 * random init; every parameter is frozen, biases included (the paper's nets have none).
 * Scores start Kaiming-uniform, U(±1/√fan_in), seeded (or |W₀|); no rounds.
 *
 * `epsilon` > 0 (the ε-perturbed ticket): the scored weights train too, projected after
 * every step back into their ball around W₀ — ℓ∞: each entry within ε·std(W₀); ℓ2:
 * ‖W − W₀‖ ≤ ε·std(W₀)·√n (the paper gives no unit: relative to the layer's init scale, one
 * ε means the same in every layer). docs/pruning.md compares it with the papers.
 *
 * Method: Ramanujan, Wortsman et al., "What's Hidden in a Randomly Weighted Neural
 * Network?", CVPR 2020, https://arxiv.org/abs/1911.13299; Xiong, Liao & Kyrillidis,
 * "Strong Lottery Ticket Hypothesis with ε-perturbation", AISTATS 2023,
 * https://proceedings.mlr.press/v206/xiong23a.html.
 *
 * ```ts
 * const ticket = edgePopup({ sparsity: 0.5, epsilon: 0.3 }); // half of each layer; W within 0.3·std(W₀) of W₀
 * new Trainer({ model, optimizer: heavyBall({ lr: 0.1 }), plugins: [ticket], epochs: 10, batchSize: 64 });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { PrunerBase, type PrunerBaseConfig } from '../../sdk/families/pruners/base.js';
import type { PrunableWeight, PruneContext, PruneMode } from '../../sdk/families/pruners/types.js';
import type { ModelLike, ParamInfo, TrainingHooks } from '../../sdk/hooks.js';
import { definePlugin, type PluginMeta } from '../../sdk/plugin.js';
import { removeWeightHook, weightHook, type WeightHookable } from '../../sdk/weight-hooks.js';

/** Config of {@link EdgePopup}. */
export const EdgePopupConfig = Type.Object({
  sparsity: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.5, description: 'fraction of each selected weight left out of the forward (1 − the fraction kept); the paper finds about half kept best' }),
  epsilon: Type.Number({ minimum: 0, default: 0, description: '0: pure edge-popup, weights frozen at their random init; > 0: the selected weights also train, projected after every step back within ε·std(W₀) of their init per entry (linf) or ε·std(W₀)·√n per layer (l2)' }),
  norm: Type.Union([Type.Literal('linf'), Type.Literal('l2')], { default: 'linf', description: "the ε-ball: 'linf' clamps each entry within its radius of init, 'l2' rescales a layer's deviation from init to the radius when longer" }),
  scoreInit: Type.Union([Type.Literal('kaiming-uniform'), Type.Literal('magnitude')], { default: 'kaiming-uniform', description: "scores at the start: 'kaiming-uniform' U(−1/√fan_in, 1/√fan_in), seeded (hidden-networks'); 'magnitude' |W₀| (the first mask is magnitude pruning's)" }),
  weightInit: Type.Union([Type.Literal('model'), Type.Literal('signed-kaiming')], { default: 'model', description: "the random weights: 'model' as the model was built; 'signed-kaiming' each selected weight set to sign(W)·√(2/fan_in)/√(1 − sparsity) before training (the paper's scaled signed Kaiming constant, its best)" }),
  seed: Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1, default: 0, description: 'seed of the Kaiming-uniform scores (with the layer\'s position, it fixes each)' }),
  modules: Type.String({ minLength: 1, default: '.*', description: 'regular expression matched against whole module names: the modules with a weight hook point (nn.Linear, nn.Conv*d) whose weights are scored and masked' }),
}, { additionalProperties: false });
export type EdgePopupConfig = Static<typeof EdgePopupConfig>;

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
/** fan_in of a weight (out, in) or (out, in, kh, kw): in · kh · kw. */
const fanIn = (shape: readonly number[]) => numel(shape.slice(1)) || 1;
/** Entries kept of n at a sparsity: the count the family's top-k keeps. */
const keepOf = (n: number, sparsity: number) => Math.max(1, Math.round((1 - sparsity) * n));
/** A layer's score seed: seeds of different layers never meet (index < 2^16). */
const seedOf = (seed: number, index: number) => seed * 65_537 + index;

/** (shape) f32 0/1 at the `k` largest of `mag`, as `topk_mask` keeps them, but joining no graph (eager ops run with autograd on); temporaries into `scratch`. */
function keepTop(rt: Runtime, mag: Tensor, shape: readonly number[], k: number, scratch: Tensor[] = []): Tensor {
  const flat = mag.reshape([-1]);
  const [values, idx] = flat.topk(k, 0, true, false);
  const zeros = rt.zeros([numel(shape)]), hot = zeros.scatter(0, idx, 1);
  scratch.push(flat, values, idx, zeros, hot);
  return hot.reshape([...shape]);
}

/** Traced, in a weight hook: forward the top-k of |s|, backward straight through to |s| (s gets sign(s)·g), as `GetSubnet`: one runtime op, not nine replayed ones. */
export function edgePopupMask(scores: Tensor, k: number): Tensor {
  return scores.topkMask(k);
}

/** One scored layer: its module, its weight (kept handle), its scores; with ε, its init and radius. */
interface Site { module: string; name: string; shape: number[]; param: Tensor; scores: Tensor; w0?: Tensor; radius?: Tensor }

/** Edge-popup (and its ε-perturbed variant): masks from trained scores over random weights. */
export class EdgePopup extends PrunerBase<EdgePopupConfig & PrunerBaseConfig> {
  private sites: Site[] = [];
  private model: (ModelLike & WeightHookable) | null = null;
  /** The chosen modules' weights, once a model is known (kept through free(): setup() frees first). */
  private chosen: Set<string> | null = null;

  constructor(config: EdgePopupConfig, meta: PluginMeta) {
    super(config as EdgePopupConfig & PrunerBaseConfig, meta); // no atEpoch/rounds: attach, sparsityAt overridden
  }

  override get mode(): PruneMode { return 'hook'; }
  /** Its one mode, not a config field: the forward masks through its own weight hooks. */
  protected override checkMode(): void {}
  /** Hook mode: the stored weights are never multiplied. */
  override apply(): void {}
  /** The mask is in force from the first step at the configured sparsity. */
  override sparsityAt(): number { return this.config.sparsity; }

  /** The weights of the chosen modules (rank ≥ 2 until a model is known). */
  override selects(param: ParamInfo): boolean {
    return this.chosen ? this.chosen.has(param.name) : param.shape.length >= 2 && this.moduleRx().test(param.name.replace(/\.weight$/, ''));
  }

  private moduleRx(): RegExp {
    try { return new RegExp(`^(?:${this.config.modules})$`); } catch (e) {
      throw new LiaisonError('E_ARG', `${this.id}: config field 'modules' (${JSON.stringify(this.config.modules)}) is not a regular expression`, { param: 'modules', cause: e });
    }
  }

  /** Per weight, the top `(1 − ctx.sparsity)` of |scores|: those it trains, or seeded as attach() draws them (bare weights). */
  masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
    return weights.map((w, i) => {
      const own = this.sites.find((s) => s.name === w.name)?.scores;
      // the ranking of |U(−b, b)| does not depend on b: U[0, 1) ranks the same, seeded as attach() seeds
      const mag = own ? own.abs() : this.config.scoreInit === 'magnitude' ? w.weight.abs() : ctx.rt.rand(w.shape, { seed: seedOf(this.config.seed, i) }).mul(2).sub(1).abs();
      return keepTop(ctx.rt, mag, w.shape, keepOf(numel(w.shape), ctx.sparsity));
    });
  }

  /** The trained scores by module (`layers.0`), shaped as its weight: the Trainer's parameters, to read. */
  scores(): Record<string, Tensor> { return Object.fromEntries(this.sites.map((s) => [s.module, s.scores])); }

  /** The masks in force: the top-k of the scores as they are now (queued into the held masks). */
  override currentMasks(): Record<string, Tensor> {
    const held = super.currentMasks();
    for (const s of this.sites) {
      const scratch = [s.scores.abs()];
      const m = keepTop(s.scores.rt, scratch[0], s.shape, keepOf(numel(s.shape), this.config.sparsity), scratch);
      for (const t of [held[s.name].copy_(m), m, ...scratch]) t.free();
    }
    return held;
  }

  override async attach(hooks: TrainingHooks): Promise<void> {
    const model = hooks.model as ModelLike & Partial<WeightHookable>;
    if (!model.hookModules?.weight || typeof model.setWeightHook !== 'function') throw new LiaisonError('E_ARG', `${this.id}: the model has no weight hook points (a Model from Model.build has them)`, { param: 'model' });
    const layers = this.setupOn(model as ModelLike & WeightHookable);
    const { epsilon, norm, scoreInit, seed, sparsity } = this.config;
    // the random network: every parameter frozen at its init, biases included (not scored)
    hooks.freeze(model.params.map((p) => p.name));
    for (const [i, layer] of layers.entries()) {
      const w = layer.param;
      // the paper's scaled signed Kaiming constant: sign(W)·√(2/fan_in)/√keep keeps each layer's output scale
      if (this.config.weightInit === 'signed-kaiming') w.copy_(w.sign().mul(Math.sqrt(2 / fanIn(layer.shape) / (1 - sparsity)))).free();
      const init = scoreInit === 'magnitude' ? w.abs() : 'uniform';
      const s: Site = { ...layer, scores: hooks.addParam(`scores.${layer.module}`, { shape: layer.shape, init, scale: 1 / Math.sqrt(fanIn(layer.shape)), seed: seedOf(seed, i), module: layer.module }) };
      if (typeof init !== 'string') init.free();
      this.sites.push(s);
      if (epsilon > 0) {
        s.w0 = w.clone().keep();
        const std = s.w0.std();
        s.radius = std.mul(norm === 'l2' ? epsilon * Math.sqrt(numel(s.shape)) : epsilon).keep(); std.free();
      }
    }
    const bySite = new Map(this.sites.map((s) => [s.module, s]));
    weightHook(this.model!, [...bySite.keys()], (w, { module, shape }) => w.mul(edgePopupMask(bySite.get(module)!.scores, keepOf(numel(shape), sparsity))), { name: 'edge-popup' });
    if (epsilon > 0) {
      hooks.unfreeze(this.sites.map((s) => s.name));
      hooks.on('afterOptimizerStep', () => { for (const s of this.sites) project(s.param, s.w0!, s.radius!, norm); });
      // resume restores these in place: the hooks' captures stay valid
      hooks.addState('edge-popup', () => Object.fromEntries(this.sites.flatMap((s) => [[`init.${s.module}`, s.w0!], [`radius.${s.module}`, s.radius!]])));
    }
  }

  /** The base's masks over the chosen modules' weights; the layers to score (their weights kept). */
  private setupOn(model: ModelLike & WeightHookable): Omit<Site, 'scores'>[] {
    const rx = this.moduleRx(), modules = model.hookModules.weight.filter((m) => rx.test(m));
    if (!modules.length) throw new LiaisonError('E_ARG', `${this.id}: config field 'modules' (${JSON.stringify(this.config.modules)}) matches no module with a weight hook point; the model's are ${model.hookModules.weight.join(', ') || 'none'}`, { param: 'modules' });
    this.free();
    this.chosen = new Set(modules.map((m) => `${m}.weight`));
    this.setup(model);
    this.model = model;
    return modules.map((module) => {
      const info = model.params.find((p) => p.name === `${module}.weight`)!;
      return { module, name: info.name, shape: [...info.shape], param: model.param(info.name).keep() };
    });
  }

  /** Drops what it made and takes its weight hooks off the model (the scores are the Trainer's). */
  override free(): void {
    try {
      if (this.model && this.sites.length) removeWeightHook(this.model, this.sites.map((s) => s.module));
    } catch (e) { // the model was freed first: its hooks went with it
      if (!(e instanceof LiaisonError && e.code === 'E_HANDLE')) throw e;
    }
    for (const s of this.sites) { s.param.free(); s.w0?.free(); s.radius?.free(); }
    this.sites = [];
    this.model = null;
    super.free();
  }
}

/** Traced, after the optimizer's step: `w` back into its ball, ℓ∞ each entry clamped to w0 ± r, ℓ2 w − w0 scaled by min(1, r/‖w − w0‖). */
function project(w: Tensor, w0: Tensor, radius: Tensor, norm: 'linf' | 'l2'): void {
  if (norm === 'linf') return void w.copy_(w.minimum(w0.add(radius)).maximum(w0.sub(radius))).free();
  const d = w.sub(w0); // clamp: a zero radius (a constant W₀) must not divide 0 by 0
  w.copy_(w0.add(d.mul(radius.div(d.norm().maximum(radius).clamp(1e-30))))).free();
}

/** The `edge-popup` registration: `edgePopup({ sparsity, epsilon, norm, scoreInit, weightInit, seed, modules })`. */
export const edgePopup = definePlugin({
  name: 'edge-popup', version: '1.0.0', family: 'pruner', schema: EdgePopupConfig,
  description: 'edge-popup strong lottery tickets: trained scores pick the top-k of each layer\'s frozen random weights (straight-through); with epsilon, the weights also train within an ε-ball of their init',
  paper: 'https://arxiv.org/abs/1911.13299',
  create: (config, meta) => new EdgePopup(config, meta),
});
