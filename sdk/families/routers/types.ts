/**
 * The `Router` family: how a mixture-of-experts layer weighs its experts per token
 * (soft-routed MoE, top-k gating with a load-balancing loss; docs/architecture.md, "Plugins and families").
 *
 * A plugin writes `route()` — per-token combine weights and an auxiliary loss — and
 * `params()`, the parameters each MoE layer creates for it. `route()` is traced once into
 * a program that the runtime replays inside every MoE layer's forward pass, with autograd
 * into the router's parameters.
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
  shape: number[];
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

export interface Router<C = unknown> extends PluginInstance<C>, TrainerPlugin {
  /** Setup hook: the parameters of one MoE layer's router, by name (created in that order). */
  params(dims: RouterDims): Record<string, RouterParamSpec>;
  /**
   * Required: route the layer's tokens `x` (N, D) with this layer's `params`. Traced:
   * tensor ops only (topk, softmax, scatter, one_hot cover routing decisions).
   */
  route(x: Tensor, params: Record<string, Tensor>, dims: RouterDims): RouteResult;
  /** Weight of the auxiliary loss in the training loss. */
  readonly auxWeight: number;
}
