/**
 * AdaPaD: the update of each module as a sum of rank-1 components P_k = scale·b_k a_kᵀ, all
 * trained at once, component k against the deflation target built from the latest estimates
 * of components 1..k−1 (the worker shape of Parallel Deflation); a new component first trains
 * privately on the current residual (advance learning) before it joins the sum; and the rank
 * of each module is discovered: modules start at one component and the most important grows,
 * until one budget shared by all modules is spent.
 *
 * Method: Su, Liao, Kyrillidis, "AdaPaD: Adaptive Parallel Deflation for PEFT with
 * Self-Correcting Rank Discovery" (no public code; we worked from its abstract), built on
 * Liao, Su, Kyrillidis, "Provable Model-Parallel Distributed PCA with Parallel Deflation",
 * https://arxiv.org/abs/2502.17615.
 *
 * Our choices where the paper is silent (docs/adapters.md):
 * - **Deflation targets.** One round = `localSteps` Trainer steps; at a round's end every
 *   component broadcasts its estimate P̂_k (a copy), and successors deflate with the copies.
 *   With G = ∂L/∂ΔW at the live sum and a local quadratic model of curvature c·I
 *   (`curvature`), the gradient at ΔW_{≤k} = Σ_{j<k} P̂_j + P_k is G + c·D_k,
 *   D_k = Σ_{j<k}(P̂_j − P_j) − Σ_{j>k} P_j: one auxiliary loss of K×K Gram products per
 *   module, the modules' stacked (sdk/families/adapters/deflation.ts), its value taken back
 *   out (aux − sg(aux)). Exact where the loss's Hessian is c·I (whitened least squares).
 *   **Off by default** (`curvature: 0`): where the true curvature c′ is not c, component k's
 *   target is off by (c/c′ − 1)·Σ_{j>k} P_j, fed back past c ≈ 2c′, and through a network
 *   c′ varies 100× (docs/adapters.md). `'auto'` estimates c′ per component, the empirical
 *   Fisher along it (sdk/families/adapters/curvature.ts), each P_j in D_k weighted by its own.
 * - **Advance learning.** A component is born as a ghost (AdapterSet's `ghost`: its gradient
 *   as if in the sum, nothing in the forward) for `advance` steps, then its gate turns 1.
 * - **Rank discovery.** Importance of a module = EMA (`beta`) of Σ|θ·∇θ| over its active
 *   components, each factor's entries averaged (AdaLoRA's triplet score without E); every
 *   `growEvery` steps the module with the highest importance per active component grows by
 *   one, while fewer than `budget` components are born in all and it has room: a module
 *   holds at most min(maxRank, out, in·∏kernel) components, the rank its update can have
 *   (sdk/families/adapters/growth.ts). Components never leave: the budget is spent, not reallocated.
 *
 * All of it runs inside the Trainer's step program: nothing to call per step, nothing read back.
 * A and B are `maxRank` wide from the start (unborn components get no gradient), so growing
 * never retraces the step; once growth is over it is traced once more without its bookkeeping.
 *
 * ```ts
 * const adapter = adapad({ maxRank: 8, budget: 24, growEvery: 50 });
 * await new Trainer({ model, optimizer: adam({ lr: 1e-3 }), plugins: [adapter], epochs: 5 }).fit(train);
 * console.log(await adapter.rankPattern(), adapter.rankHistory.at(-1)); // the ranks it discovered
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import { LiaisonError, type Tensor } from '../../bridge/index.js';
import type { AdapterSite } from '../../sdk/adapters.js';
import { AdapterBase, AdapterFields, fanIn } from '../../sdk/families/adapters/base.js';
import { componentSlope, CURVATURE_BETA, type CurvatureState, curvatureOf, curvatureState, updateCurvature } from '../../sdk/families/adapters/curvature.js';
import { asMatrices, broadcastAtRoundEnd, deflationCoefficients, deflationLoss, deflationMasks } from '../../sdk/families/adapters/deflation.js';
import { advanceGrowth, componentSensitivity, growthChoice, type GrowthState, rowsOf, UNBORN, updateImportance } from '../../sdk/families/adapters/growth.js';
import type { TrainingHooks } from '../../sdk/hooks.js';
import { definePlugin } from '../../sdk/plugin.js';
import { noGrad, traceEach } from '../../sdk/program.js';

/** Config of {@link Adapad}. */
export const AdapadConfig = Type.Object({
  maxRank: Type.Integer({ minimum: 1, default: 8, description: 'components a module may hold at most, and never more than min(out, in·∏kernel) (A and B are allocated this wide; the scale is alpha/maxRank)' }),
  budget: Type.Optional(Type.Integer({ minimum: 1, description: 'components born in all modules together at most, the first of each module included (default: 4 per module); at least the number of modules' })),
  growEvery: Type.Integer({ minimum: 1, default: 50, description: 'steps between growths: after every growEvery-th step the module of highest importance per component grows by one, while the budget lasts' }),
  advance: Type.Integer({ minimum: 0, default: 10, description: 'steps a new component trains as a ghost (a gradient, no forward contribution) before it joins the sum' }),
  localSteps: Type.Integer({ minimum: 1, default: 10, description: "T: steps per round; the estimates successors deflate with are refreshed at each round's end" }),
  curvature: Type.Union([Type.Number({ minimum: 0 }), Type.Literal('auto')], { default: 0, description: "c: the curvature of the local quadratic model behind the deflation targets, exact where the loss's Hessian in ΔW is c·I (2/out for a mean squared error on whitened inputs); 0, the default, turns the deflation off (the components train jointly): a c above the loss's true curvature biases the components and past about twice it diverges; 'auto': estimated per component from the batch gradients (empirical Fisher: curvatureSamples × their variance along the component), clipped to curvatureMax" }),
  curvatureSamples: Type.Integer({ minimum: 1, default: 32, description: "with curvature 'auto': N, the independent samples a step's mean loss averages (the batch size; for a language model the sequences, not their tokens); too small only underestimates, the stable side" }),
  curvatureMax: Type.Number({ exclusiveMinimum: 0, default: 10, description: "with curvature 'auto': the estimate's upper clip" }),
  beta: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.85, description: 'smoothing of the importance EMA of Σ|θ·∇θ|' }),
  ...AdapterFields,
}, { additionalProperties: false });
export type AdapadConfig = Static<typeof AdapadConfig>;

/** AdaPaD: rank-1 components trained in parallel against deflation targets; ranks grown under a budget. */
export class Adapad extends AdapterBase<AdapadConfig> {
  /** The rank pattern (components in the sum per module) at each epoch's end since attach: `{ step, ranks }`. */
  rankHistory: { step: number; ranks: Record<string, number> }[] = [];
  /** (M, K) gates and ghosts of all modules: each module's AdapterSet gate / ghost is a view of its row. */
  private rows: { gate: Tensor; ghost: Tensor } | null = null;
  private growth: GrowthState | null = null;
  /** Growth is over (budget spent or every module full, no ghost left): the step drops it (see join). */
  private grown = false;

  protected rankOf(_site: AdapterSite): number {
    return this.config.maxRank;
  }

  /** Views of row `index` of the (M, K) gates and ghosts: the first component in the sum from the start, the rest unborn. */
  protected override gateOf(site: AdapterSite, r: number, hooks: TrainingHooks, index: number): { gate: Tensor; ghost: Tensor } {
    const { rt } = hooks;
    const M = this.sites.length;
    if (index === 0) this.rows = { gate: this.hold(rt.tensor(rowsOf(M, r, 1, 0), [M, r])), ghost: this.hold(rt.zeros([M, r])) };
    const row = (t: Tensor) => this.checkpointed(site, t === this.rows!.gate ? 'gate' : 'ghost', t.narrow(0, index, 1).reshape([r]));
    return { gate: row(this.rows!.gate), ghost: row(this.rows!.ghost) };
  }

  protected override join(hooks: TrainingHooks): void {
    const [{ rt }, c] = [hooks, this.config];
    const [K, M] = [c.maxRank, this.sites.length];
    const budget = c.budget ?? 4 * M;
    if (budget < M) throw new LiaisonError('E_ARG', `${this.id}: config field 'budget' (${budget}) is below the ${M} adapted modules, each of which starts with one component`, { param: 'budget' });
    const set = this.set!;
    const matrices = (s: AdapterSite) => asMatrices(set.factors[s.module], K, s.kind !== 'linear');
    // a module's update has rank ≤ min(out, in·∏kernel): a component past it adds parameters, no rank
    const caps = this.sites.map((s) => Math.min(K, s.out, fanIn(s)));
    const capacityOf = this.hold(rt.tensor(caps, [M, 1]));
    const hats = this.sites.map((s) => ({ A: this.hold(rt.zeros([K, fanIn(s)])), B: this.hold(rt.zeros([s.out, K])) }));
    const st: GrowthState = this.growth = {
      age: this.hold(rt.tensor(rowsOf(M, K, c.advance, UNBORN), [M, K])), // the first is past its advance learning at step 1
      born: this.hold(rt.tensor(rowsOf(M, K, 1, 0), [M, K])),
      ...this.rows!,
      importance: this.hold(rt.zeros([M])),
    };
    const masks = deflationMasks(rt, K);
    for (const t of Object.values(masks)) this.hold(t);
    const slots = this.hold(rt.arange(0, K, 1, 'f32').reshape([1, K]));
    const modules = this.hold(rt.arange(0, M, 1, 'i64'));
    const scale = this.scaleOf(K); // every module has rank maxRank, so one scale
    const stack = (ts: Tensor[]) => (M === 1 ? ts[0].unsqueeze(0) : rt.stack(ts));
    const grads = (s: AdapterSite) => { const f = set.factors[s.module]; return asMatrices({ A: rt.call('grad_of', [f.A]) as Tensor, B: rt.call('grad_of', [f.B]) as Tensor }, K, s.kind !== 'linear'); };
    const curv: CurvatureState | null = c.curvature === 'auto' ? mapValues(curvatureState(rt, M, K), (t) => this.hold(t)) : null;
    // resume copies these back in place: the step program keeps its captures
    hooks.addState('adapad', () => ({
      age: st.age, born: st.born, importance: st.importance,
      ...Object.fromEntries(this.sites.flatMap((s, i) => [[`${s.module}.hat_A`, hats[i].A], [`${s.module}.hat_B`, hats[i].B]])),
      ...(curv ? Object.fromEntries(Object.entries(curv).map(([k, t]) => [`curvature_${k}`, t])) : {}),
    }));
    let fixed: { hat: Tensor; live: Tensor } | null = null; // the coefficients once growth is over
    if (curv || (c.curvature as number) > 0) {
      // 'auto': component j's term of D_k weighted by its own estimate c_j, (M, 1, K)
      const weight = () => (curv ? curvatureOf(curv, c.curvatureSamples, CURVATURE_BETA, c.curvatureMax).mul(scale ** 2).unsqueeze(1) : (c.curvature as number) * scale ** 2);
      hooks.addLoss('deflation', () => {
        const coef = fixed ?? deflationCoefficients(masks, st.born, st.gate, st.ghost);
        const aux = deflationLoss(rt, this.sites.map((s, i) => ({ live: matrices(s), hat: hats[i] })), coef, weight());
        return aux.sub(noGrad(rt, () => aux.clone())); // value 0, gradient the deflation's
      });
    }
    // the curvature measured every step, growth over or not: it moves as the components do
    if (curv) hooks.on('afterBackward', ({ finite }) => noGrad(rt, () => {
      const ys: Tensor[] = [], valid: Tensor[] = [];
      traceEach(rt, this.sites, (s) => { const m = componentSlope(matrices(s).A, grads(s).A, matrices(s).B, scale); ys.push(m.y); valid.push(m.valid); });
      updateCurvature(curv, stack(ys), stack(valid), finite, CURVATURE_BETA);
    }));
    // per module the same ops over different tensors: the runtime replays them side by side (traceEach)
    hooks.on('afterBackward', ({ finite }) => {
      if (this.grown) return;
      noGrad(rt, () => {
        const sens: Tensor[] = [];
        traceEach(rt, this.sites, (s) => { const [g, { A, B }] = [grads(s), matrices(s)]; sens.push(componentSensitivity(A, g.A, B, g.B)); });
        updateImportance(st, stack(sens), c.beta, finite); // a skipped step leaves it
      });
    });
    hooks.on('afterOptimizerStep', ({ step }) => {
      const due = step.remainder(c.localSteps).eq(0).to('f32');
      traceEach(rt, this.sites, (s, i) => broadcastAtRoundEnd(due, matrices(s), hats[i]));
      if (this.grown) return;
      const bornCount = st.born.sum(1, true);
      const grows = growthChoice(st.importance, st.gate.sum(1), bornCount, capacityOf, step, modules, { growEvery: c.growEvery, budget });
      advanceGrowth(st, grows, bornCount, slots, c.advance);
    });
    this.rankHistory = [];
    this.grown = false;
    const capacity = Math.min(budget, caps.reduce((a, b) => a + b, 0));
    hooks.on('epochEnd', async ({ step }) => {
      this.rankHistory.push({ step, ranks: await set.rankPattern() });
      if (this.grown || set.merged) return;
      const [born, ghosts] = await Promise.all([st.born.sum().item(), st.ghost.sum().item()]);
      if (born < capacity || ghosts > 0) return;
      // Growth is over for good: the step is traced again without the importance and growth ops, with the (now
      // constant) coefficients made once, and without the ghost term (all ghosts 0). The same arithmetic, cheaper.
      this.grown = true;
      fixed = mapValues(deflationCoefficients(masks, st.born, st.gate, st.ghost), (t) => this.hold(t));
      set.remove();
      for (const s of this.sites) delete set.factors[s.module].ghost;
      set.install();
      hooks.retrace();
    });
  }

  /** Each module's components now, in join order: 'sum' (in the forward), 'ghost' (advance learning) or 'unborn'. One round trip. */
  async phases(): Promise<Record<string, ('sum' | 'ghost' | 'unborn')[]>> {
    this.attachedSet('phases');
    const K = this.config.maxRank;
    const [gate, ghost] = await Promise.all([this.growth!.gate.toArray(), this.growth!.ghost.toArray()]) as Float32Array[];
    return Object.fromEntries(this.sites.map((s, i) => [s.module, Array.from({ length: K }, (_, k) => (gate[i * K + k] ? 'sum' : ghost[i * K + k] ? 'ghost' : 'unborn'))]));
  }

  override free(): void {
    super.free();
    [this.rows, this.growth] = [null, null];
  }
}

const mapValues = <T extends { [K in keyof T]: Tensor }>(o: T, f: (t: Tensor) => Tensor) => Object.fromEntries(Object.entries<Tensor>(o).map(([k, v]) => [k, f(v)])) as T;

/** The `adapad` registration: `adapad({ maxRank, budget, growEvery, advance, localSteps, curvature, curvatureSamples, curvatureMax, beta, targets, alpha, rslora, seed, merge })`. */
export const adapad = definePlugin({
  name: 'adapad', version: '1.1.0', family: 'adapter', schema: AdapadConfig,
  description: 'AdaPaD: rank-1 components trained in parallel, each against the deflation target of its predecessors\' broadcast estimates, with advance learning and per-module rank growth by importance under a shared budget',
  paper: 'Su, Liao, Kyrillidis, "AdaPaD: Adaptive Parallel Deflation for PEFT with Self-Correcting Rank Discovery"; on Parallel Deflation, https://arxiv.org/abs/2502.17615',
  create: (config, meta) => new Adapad(config, meta),
});
