/**
 * Edge-popup: a strong lottery ticket found in a randomly weighted network by training a
 * score per weight, never the weights. Each selected layer's forward uses
 * `W ⊙ m(|s|)`, m keeping the top (1 − sparsity) share of the layer's |scores| (exactly
 * `round((1 − sparsity) · n)` entries); the backward passes the gradient straight through
 * m to |s| (hidden-networks' `GetSubnet`: `return g`), so a score whose edge is not in use
 * still learns and the edge can "pop up". The mask is applied by a weight hook
 * (sdk/weight-hooks.ts, mode `'hook'`): the stored weights stay at their random init.
 *
 * With `epsilon` > 0 (the ε-perturbed strong ticket), the selected weights train too, by
 * projected SGD: after every optimizer step each is put back into the ε-ball around its
 * initial value W₀ — ℓ∞: each entry within r = ε·std(W₀) of its init; ℓ2: the layer's
 * deviation rescaled to ‖W − W₀‖ ≤ ε·std(W₀)·√n when longer. ε is relative to the
 * layer's init scale so that one ε means the same in every layer (the paper does not
 * say); both radii give the same ball volume scale: an ℓ2 radius of r·√n is what an
 * ℓ∞ deviation of r in every entry measures. The paper perturbs first and then prunes;
 * here weights and scores train together, the weights only through the kept edges.
 *
 * Our choices where the papers leave room: biases (and every parameter the plugin does not
 * score) are frozen at their init and not masked — the paper's networks have none; scores
 * start Kaiming-uniform, U(−1/√fan_in, 1/√fan_in) as hidden-networks' `kaiming_uniform_
 * (a=√5)`, seeded (or |W₀|, so the first mask is magnitude pruning's). There are no
 * pruning rounds: the mask is in force from the first step and follows the scores.
 *
 * Method: Ramanujan, Wortsman et al., "What's Hidden in a Randomly Weighted Neural
 * Network?", CVPR 2020, https://arxiv.org/abs/1911.13299 (code: allenai/hidden-networks);
 * Xiong, Liao & Kyrillidis, "Strong Lottery Ticket Hypothesis with ε-perturbation",
 * AISTATS 2023, https://proceedings.mlr.press/v206/xiong23a.html.
 *
 * ```ts
 * const ticket = edgePopup({ sparsity: 0.5 });                 // half of every layer kept
 * const perturbed = edgePopup({ sparsity: 0.5, epsilon: 0.3 }); // weights within 0.3·std(W₀) of init
 * new Trainer({ model, optimizer: heavyBall({ lr: 0.1 }), plugins: [ticket], epochs: 10, batchSize: 64 });
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import { PrunerBase, type PrunerBaseConfig } from '../../sdk/families/pruners/base.js';
import type { PrunableWeight, PruneContext, PruneMode } from '../../sdk/families/pruners/types.js';
import type { ModelLike, ParamInfo, TrainingHooks } from '../../sdk/hooks.js';
import { definePlugin, type PluginMeta } from '../../sdk/plugin.js';
import { noGrad } from '../../sdk/program.js';
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
/** Entries kept of n at a sparsity: the same count the family's top-k keeps. */
const keepOf = (n: number, sparsity: number) => Math.max(1, Math.round((1 - sparsity) * n));
/** Kaiming-uniform bound of hidden-networks' scores, 1/√fan_in; fan_in = in · kh · kw of (out, in, kh, kw). */
const scoreBound = (shape: readonly number[]) => 1 / Math.sqrt(numel(shape.slice(1)) || 1);
/** Seeds of different layers never meet (layer index < 2^16). */
const seedOf = (seed: number, index: number) => seed * 65_537 + index;

/**
 * (shape) f32 0/1: 1 at the `k` largest of `mag` (scattered indices: ties at the threshold
 * cannot keep extra entries). Outside a trace, the temporaries go into `scratch` to free.
 */
function keepTop(rt: Runtime, mag: Tensor, shape: readonly number[], k: number, scratch: Tensor[] = []): Tensor {
  const flat = mag.reshape([-1]);
  const [values, idx] = flat.topk(k, 0, true, false);
  const zeros = rt.zeros([numel(shape)]);
  const hot = zeros.scatter(0, idx, 1);
  scratch.push(flat, values, idx, zeros, hot);
  return hot.reshape([...shape]);
}

/**
 * Inside a traced weight hook: the edge-popup mask of `scores` (shape), forward the hard
 * top-k of |s|, backward straight through to |s| (so to s: sign(s)·g), as `GetSubnet`.
 */
export function edgePopupMask(rt: Runtime, scores: Tensor, shape: readonly number[], k: number): Tensor {
  const mag = scores.abs();
  const [hard, frozen] = noGrad(rt, () => [keepTop(rt, mag, shape, k), mag.clone()]);
  return hard.add(mag.sub(frozen));
}

/** One scored layer: its module, its weight (kept handle), its scores; with ε, its init and radius. */
interface Site { module: string; name: string; shape: number[]; param: Tensor; scores: Tensor; w0?: Tensor; radius?: Tensor }

/** Edge-popup (and its ε-perturbed variant): masks from trained scores over random weights. */
export class EdgePopup extends PrunerBase<EdgePopupConfig & PrunerBaseConfig> {
  private sites: Site[] = [];
  private model: (ModelLike & WeightHookable) | null = null;
  /** Names of the weights the chosen modules hold, once a model is known (kept through free(): setup() frees first). */
  private chosen: Set<string> | null = null;

  constructor(config: EdgePopupConfig, meta: PluginMeta) {
    // no rounds or schedule: the base's fields it would read are never read (attach, sparsityAt overridden)
    super(config as EdgePopupConfig & PrunerBaseConfig, meta);
  }

  override get mode(): PruneMode {
    return 'hook';
  }

  /** Its one mode, not a config field: the forward masks through its own weight hooks. */
  protected override checkMode(): void {}

  /** The mask is in force from the first step at the configured sparsity: no schedule. */
  override sparsityAt(): number {
    return this.config.sparsity;
  }

  /** The weights of the chosen modules (rank ≥ 2 until a model is known). */
  override selects(param: ParamInfo): boolean {
    if (this.chosen) return this.chosen.has(param.name);
    return param.shape.length >= 2 && this.moduleRx().test(param.name.replace(/\.weight$/, ''));
  }

  private moduleRx(): RegExp {
    try {
      return new RegExp(`^(?:${this.config.modules})$`);
    } catch (e) {
      throw new LiaisonError('E_ARG', `${this.id}: config field 'modules' (${JSON.stringify(this.config.modules)}) is not a regular expression`, { param: 'modules', cause: e });
    }
  }

  /** Hook mode: the weight hooks mask the forward; the stored weights are never multiplied. */
  override apply(): void {}

  /**
   * Per weight, the top `(1 − ctx.sparsity)` of |scores|: the scores it trains for the
   * weights it is attached to, seeded Kaiming-uniform ones for others (bare weights).
   */
  masks(weights: PrunableWeight[], ctx: PruneContext): Tensor[] {
    return weights.map((w, i) => {
      const own = this.sites.find((s) => s.name === w.name)?.scores;
      // the ranking of |U(−b, b)| does not depend on b: U[0, 1) ranks the same, seeded as attach() seeds
      const mag = own ? own.abs() : this.config.scoreInit === 'magnitude' ? w.weight.abs() : ctx.rt.rand(w.shape, { seed: seedOf(this.config.seed, i) }).mul(2).sub(1).abs();
      return keepTop(ctx.rt, mag, w.shape, keepOf(numel(w.shape), ctx.sparsity));
    });
  }

  /** The trained scores by module (`layers.0`), shaped as its weight: the Trainer's parameters, to read. */
  scores(): Record<string, Tensor> {
    return Object.fromEntries(this.sites.map((s) => [s.module, s.scores]));
  }

  /** The masks in force: the top-k of the scores as they are now (queued into the held masks). */
  override currentMasks(): Record<string, Tensor> {
    const held = super.currentMasks();
    for (const s of this.sites) {
      const scratch: Tensor[] = [];
      const mag = s.scores.abs();
      const m = keepTop(s.scores.rt, mag, s.shape, keepOf(numel(s.shape), this.config.sparsity), scratch);
      held[s.name].copy_(m).free();
      for (const t of [mag, m, ...scratch]) t.free();
    }
    return held;
  }

  override async attach(hooks: TrainingHooks): Promise<void> {
    const model = hooks.model as ModelLike & Partial<WeightHookable>;
    if (!model.hookModules?.weight || typeof model.setWeightHook !== 'function') {
      throw new LiaisonError('E_ARG', `${this.id}: the model has no weight hook points (a Model from Model.build has them)`, { param: 'model' });
    }
    this.setupOn(model as ModelLike & WeightHookable);
    const { rt } = hooks;
    const { epsilon, norm, scoreInit, seed } = this.config;
    // the random network: every parameter frozen at its init, biases included (not scored)
    hooks.freeze(model.params.map((p) => p.name));
    for (const [i, s] of this.sites.entries()) {
      const w = s.param;
      if (this.config.weightInit === 'signed-kaiming') signedKaiming(w, s.shape, this.config.sparsity);
      const init = scoreInit === 'magnitude' ? w.abs() : 'uniform';
      s.scores = hooks.addParam(`scores.${s.module}`, { shape: s.shape, init, scale: scoreBound(s.shape), seed: seedOf(seed, i), module: s.module });
      if (typeof init !== 'string') init.free();
      if (epsilon > 0) {
        s.w0 = w.clone().keep();
        const std = s.w0.std();
        s.radius = std.mul(norm === 'l2' ? epsilon * Math.sqrt(numel(s.shape)) : epsilon).keep();
        std.free();
      }
    }
    const k = new Map(this.sites.map((s) => [s.module, keepOf(numel(s.shape), this.config.sparsity)]));
    const scores = new Map(this.sites.map((s) => [s.module, s.scores]));
    weightHook(this.model!, this.sites.map((s) => s.module), (w, site) => w.mul(edgePopupMask(rt, scores.get(site.module)!, site.shape, k.get(site.module)!)), { name: 'edge-popup' });
    if (epsilon > 0) {
      hooks.unfreeze(this.sites.map((s) => s.name));
      hooks.on('afterOptimizerStep', () => {
        for (const s of this.sites) project(s.param, s.w0!, s.radius!, norm);
      });
      // resume restores these in place: the hooks' captures stay valid
      hooks.addState('edge-popup', () => Object.fromEntries(this.sites.flatMap((s) => [[`init.${s.module}`, s.w0!], [`radius.${s.module}`, s.radius!]])));
    }
  }

  /** The base's masks over the chosen modules' weights; the sites to score. */
  private setupOn(model: ModelLike & WeightHookable): void {
    const rx = this.moduleRx();
    const modules = model.hookModules.weight.filter((m) => rx.test(m));
    if (!modules.length) throw new LiaisonError('E_ARG', `${this.id}: config field 'modules' (${JSON.stringify(this.config.modules)}) matches no module with a weight hook point; the model's are ${model.hookModules.weight.join(', ') || 'none'}`, { param: 'modules' });
    this.free();
    this.chosen = new Set(modules.map((m) => `${m}.weight`));
    this.setup(model);
    this.model = model;
    this.sites = modules.map((module) => {
      const info = model.params.find((p) => p.name === `${module}.weight`)!;
      return { module, name: info.name, shape: [...info.shape], param: model.param(info.name).keep(), scores: null as unknown as Tensor };
    });
  }

  /** Drops what it made and takes its weight hooks off the model (the scores are the Trainer's). */
  override free(): void {
    try {
      if (this.model && this.sites.length) removeWeightHook(this.model, this.sites.map((s) => s.module));
    } catch (e) {
      // the model was freed first: its hooks went with it
      if (!(e instanceof LiaisonError && e.code === 'E_HANDLE')) throw e;
    }
    for (const s of this.sites) { s.param.free(); s.w0?.free(); s.radius?.free(); }
    this.sites = [];
    this.model = null;
    super.free();
  }
}

/**
 * The paper's scaled signed Kaiming constant, in place: ±√(2/fan_in)/√keep, the sign of the
 * weight as built (so the model's seed still fixes the network). The 1/√keep keeps each
 * layer's output scale when only the `keep` share of its inputs is used.
 */
function signedKaiming(w: Tensor, shape: readonly number[], sparsity: number): void {
  const sign = w.sign();
  w.copy_(sign.mul(Math.sqrt(2 / numel(shape.slice(1))) / Math.sqrt(1 - sparsity))).free();
  sign.free();
}

/**
 * Traced, after the optimizer's step: `w` back into the ball around `w0`. ℓ∞: each entry
 * clamped into [w0 − r, w0 + r]; ℓ2: the deviation scaled by min(1, r / ‖w − w0‖).
 */
function project(w: Tensor, w0: Tensor, radius: Tensor, norm: 'linf' | 'l2'): void {
  if (norm === 'linf') {
    w.copy_(w.minimum(w0.add(radius)).maximum(w0.sub(radius))).free();
    return;
  }
  const d = w.sub(w0);
  const length = d.norm();
  // a zero radius (a constant W₀) must not divide 0 by 0
  w.copy_(w0.add(d.mul(radius.div(length.maximum(radius).clamp(1e-30))))).free();
}

/** The `edge-popup` registration: `edgePopup({ sparsity, epsilon, norm, scoreInit, seed, modules })`. */
export const edgePopup = definePlugin({
  name: 'edge-popup',
  version: '1.0.0',
  family: 'pruner',
  schema: EdgePopupConfig,
  description: 'edge-popup strong lottery tickets: trained scores pick the top-k of each layer\'s frozen random weights (straight-through); with epsilon, the weights also train within an ε-ball of their init',
  paper: 'https://arxiv.org/abs/1911.13299',
  create: (config, meta) => new EdgePopup(config, meta),
});
