/**
 * The `Router` family: how a mixture-of-experts layer weighs its experts per token
 * (soft-routed MoE, top-k gating with a load-balancing loss; docs/architecture.md, "Plugins and families").
 *
 * A plugin writes `route()` — how the layer's tokens reach its experts, in one of three
 * forms ({@link RouteForm}), plus its auxiliary losses — and `params()`, the parameters each
 * MoE layer creates for it, and declares its `traits` (the form, sparse or dense, capacity,
 * whether it drops tokens), which its conformance suite checks the result against.
 * `route()` is traced once into a program that the runtime replays inside every MoE layer's
 * forward pass, with autograd into the router's parameters; the layer runs its experts
 * batched for every form (docs/routers.md).
 */
import type { Tensor } from '../../../bridge/index.js';
import type { TrainerPlugin } from '../../hooks.js';
import type { PluginInstance } from '../../plugin.js';

/** Sizes of the MoE layer the router serves. */
export interface RouterDims {
  /** Model width D. */
  dim: number;
  /** Number of experts E. */
  experts: number;
}

/** A router parameter each MoE layer creates and trains with the model. */
export interface RouterParamSpec {
  /** Its shape, e.g. (D, E) for a gate: non-negative integers, fixed for the layer's dims. */
  shape: number[];
  /** How it starts: normal(0, std), zeros, ones, or uniform(−std, std). */
  init: 'normal' | 'zeros' | 'ones' | 'uniform';
  /** Standard deviation (normal) or bound (uniform); default 0.02. */
  std?: number;
}

/**
 * How a route result dispatches tokens to experts:
 * - `'weights'` (token choice: top-k, soft routing): per-token combine weights (N, E); an
 *   expert serves the tokens with a nonzero weight, y_n = Σ_e w[n, e] · expert_e(x_n);
 * - `'indices'` (expert choice): each expert's C slots name the token they take, and a gate
 *   weighs that expert's output for it, y_n = Σ_{(e, c): indices[e, c] = n} gates[e, c] · expert_e(x_n);
 * - `'slots'` (Soft MoE): each expert's S slots are mixtures of all tokens (dispatch), and each
 *   token a mixture of all slot outputs (combine).
 */
export type RouteForm = 'weights' | 'indices' | 'slots';

/** What `route()` returns; which fields it holds is set by the router's {@link RouterTraits.form}. */
export interface RouteResult {
  /** Form 'weights': (N, E) combine weights, finite and ≥ 0; an expert serves the tokens with a nonzero weight. */
  weights?: Tensor;
  /** Form 'indices': (E, C) i64, the token each of expert e's C slots takes. */
  indices?: Tensor;
  /** Form 'indices': (E, C) the weight of expert e's output for that token (0: the slot is unused). */
  gates?: Tensor;
  /** Form 'slots': (N, E, S), slot_in[e, s] = Σ_n dispatch[n, e, s] · x_n. */
  dispatch?: Tensor;
  /** Form 'slots': (N, E, S), y_n = Σ_{e,s} combine[n, e, s] · expert_e(slot_in[e, s]). */
  combine?: Tensor;
  /** (): the load-balancing loss, added to the training loss times `auxWeight`. */
  aux?: Tensor;
  /** (): the router z-loss (the mean over tokens of logsumexp(logits)²), added times `zWeight`. */
  zloss?: Tensor;
  /**
   * (N, E): the router's distribution over experts (rows sum to 1), for the entropy metric.
   * Left out: the dispatch mass per expert, normalised per token.
   */
  probs?: Tensor;
}

/** The fields of a route result each form fills (besides the optional aux, zloss and probs). */
export const FORM_FIELDS: Readonly<Record<RouteForm, readonly (keyof RouteResult)[]>> = {
  weights: ['weights'],
  indices: ['indices', 'gates'],
  slots: ['dispatch', 'combine'],
};

/**
 * What a router promises about the weights (N, E) its `route()` returns, for any batch of
 * N tokens. The conformance suite (sdk/conformance/routers.ts) checks each promise.
 */
export interface RouterTraits {
  /** How `route()`'s result dispatches tokens ({@link RouteForm}); absent: `'weights'` (routers written before forms). */
  form?: RouteForm;
  /**
   * `'sparse'`: each token has at most `k` experts with a nonzero weight (top-k gating,
   * Switch), so an MoE layer runs only those. `'dense'`: any expert may get weight from any
   * token (soft routing, soft MoE).
   */
  routing: 'sparse' | 'dense';
  /** Sparse routers: experts per token at most, an integer ≥ 1 (and ≤ E in use). Ignored when dense. */
  k?: number;
  /**
   * Capacity factor c. Form 'weights': each expert takes at most ⌈c · N · k / E⌉ of a batch's
   * N tokens (k = E for a dense router); form 'indices': each expert has C = ⌈c · N / E⌉ slots.
   * Undefined: no limit.
   */
  capacity?: number;
  /** Form 'slots': slots per expert S, an integer ≥ 1. */
  slots?: number;
  /**
   * Whether a token may be left with no expert (its row of weights all 0), as a router with
   * a capacity does when a token's chosen experts are full. false: every token is weighted.
   */
  dropsTokens: boolean;
}

export interface Router<C = unknown> extends PluginInstance<C>, TrainerPlugin {
  /**
   * What `route()`'s weights promise (sparse or dense, capacity, dropped tokens): read by
   * the conformance suite and by anything that dispatches tokens, never inferred. May
   * depend on the config (`k`), not on the layer. Declare it: the suite fails a router
   * without it. Optional in the type only so that routers written before traits (plain
   * objects among them) still compile and run; `RouterBase` always has it.
   */
  readonly traits?: RouterTraits;
  /** Setup hook: the parameters of one MoE layer's router, by name (created in that order). */
  params(dims: RouterDims): Record<string, RouterParamSpec>;
  /**
   * Required: route the layer's tokens `x` (N, D) with this layer's `params` (shaped as
   * `params(dims)` declares): the fields of its form ({@link RouteResult}), as
   * {@link traits} promises; aux () and zloss () when the router has them; probs (N, E) for
   * the entropy metric. Traced: tensor ops only (topk, softmax, scatter, one_hot cover
   * routing decisions).
   */
  route(x: Tensor, params: Record<string, Tensor>, dims: RouterDims): RouteResult;
  /** Weight of the auxiliary loss in the training loss. */
  readonly auxWeight: number;
  /** Weight of the router z-loss in the training loss; absent: 0. */
  readonly zWeight?: number;
}
