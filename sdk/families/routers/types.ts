/**
 * The `Router` family: how a mixture-of-experts layer weighs its experts per token
 * (soft-routed MoE, top-k gating with a load-balancing loss; docs/architecture.md, "Plugins and families").
 *
 * A plugin writes `route()` — per-token combine weights and an auxiliary loss — and
 * `params()`, the parameters each MoE layer creates for it, and declares its `traits`
 * (sparse or dense, capacity, whether it drops tokens), which its conformance suite
 * checks the weights against. `route()` is traced once into a program that the runtime
 * replays inside every MoE layer's forward pass, with autograd into the router's parameters.
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

export interface RouteResult {
  /** (N, E): combine weights; an expert gets only the tokens with a nonzero weight. */
  weights: Tensor;
  /** (): an auxiliary loss (load balancing), added to the training loss times `auxWeight`. */
  aux?: Tensor;
}

/**
 * What a router promises about the weights (N, E) its `route()` returns, for any batch of
 * N tokens. The conformance suite (sdk/conformance/routers.ts) checks each promise.
 */
export interface RouterTraits {
  /**
   * `'sparse'`: each token has at most `k` experts with a nonzero weight (top-k gating,
   * Switch), so an MoE layer runs only those. `'dense'`: any expert may get weight from any
   * token (soft routing, soft MoE).
   */
  routing: 'sparse' | 'dense';
  /** Sparse routers: experts per token at most, an integer ≥ 1 (and ≤ E in use). Ignored when dense. */
  k?: number;
  /**
   * Capacity factor c: each expert takes at most ⌈c · N · k / E⌉ of a batch's N tokens
   * (k = E for a dense router). Undefined: no limit.
   */
  capacity?: number;
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
   * `params(dims)` declares): weights (N, E), finite and ≥ 0, as {@link traits} promises;
   * aux () when the router has an auxiliary loss. Traced: tensor ops only (topk, softmax,
   * scatter, one_hot cover routing decisions).
   */
  route(x: Tensor, params: Record<string, Tensor>, dims: RouterDims): RouteResult;
  /** Weight of the auxiliary loss in the training loss. */
  readonly auxWeight: number;
}
