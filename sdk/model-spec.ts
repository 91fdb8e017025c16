/**
 * Typed model specs: what `Model.build()` takes. Each kind mirrors a builder of the
 * runtime (python-runtime/liaison_runtime/models/build.py); the fields are camelCase here
 * and snake_case on the wire, and {@link runtimeSpec} converts. Values are checked by the
 * runtime, which names the field it refuses; field names are checked here, so a typo is
 * refused before anything is sent.
 */
import { LiaisonError } from '../bridge/index.js';
import type { Router, RouterDims } from './families/routers/types.js';
import { describeValue } from './plugin.js';

/** A multilayer perceptron: (B, sizes[0]) -> (B, sizes[-1]). Layers are `layers.i`, activations `acts.i`. */
export interface MLPSpec {
  kind: 'mlp';
  /** Widths from input to output, at least two: `[64, 128, 10]`. */
  sizes: number[];
  /** After every hidden layer; default 'relu'. */
  activation?: 'relu' | 'gelu' | 'tanh';
  /** Linear layers with a bias; default true. */
  bias?: boolean;
  /** Dropout after each hidden activation, in [0, 1); default 0. */
  dropout?: number;
}

/**
 * A small convolutional classifier: per entry of `channels` a 'same' conv (`convs.i`) +
 * ReLU + 2x2 max-pool, then `fc` (hidden) + ReLU and `head` (classes). Takes (B, C, H, W),
 * or (B, C*H*W) flat rows as scikit-learn stores images.
 */
export interface CNNSpec {
  kind: 'cnn';
  /** Input channels C; default 1. */
  inChannels?: number;
  /** [height, width] of the input images. */
  image: [number, number];
  /** Output channels of each conv stage (each stage halves the image). */
  channels: number[];
  /** Conv kernel size; default 3. */
  kernel?: number;
  /** Width of the `fc` layer; default 64. */
  hidden?: number;
  /** Number of classes (the logits' width). */
  classes: number;
}

/** Mixture-of-experts feed-forward layers in a GPT. */
export interface MoESpec {
  /** Experts per MoE layer E. */
  experts: number;
  /** Hidden width of each expert's 2-layer MLP. */
  hidden: number;
  /** Every `every`-th block (blocks every-1, 2*every-1, … counting from 0) is an MoE layer; default 1 (all). */
  every?: number;
  /** Weighs the experts per token; its `params()` become each layer's `…moe.router.<name>` parameters. */
  router: Router;
}

/**
 * A GPT-style decoder (pre-LN, learned positions, untied head): (B, T) i64 tokens ->
 * (B, T, vocab) logits. Each attention layer is a KV-cache hook point (`setKVPolicy`);
 * each MoE layer a router hook point.
 */
export interface GPTSpec {
  kind: 'gpt';
  /** Vocabulary size (128 for ASCII bytes, see sdk/text.ts). */
  vocab: number;
  /** Longest sequence T, prompt plus generated tokens. */
  context: number;
  /** Model width; default 64. Must be a multiple of `heads`. */
  dim?: number;
  /** Transformer blocks; default 2. */
  layers?: number;
  /** Attention heads; default 4. */
  heads?: number;
  /** Feed-forward width as a multiple of `dim`; default 4. */
  mlpRatio?: number;
  /** Dropout in [0, 1); default 0. */
  dropout?: number;
  /** Make some feed-forward layers mixtures of experts. */
  moe?: MoESpec;
}

/**
 * The additive model of Liao & Kyrillidis's experiment, h = A₁x + ReLU(A₂u): row i of the
 * input is [a1ᵢ, a2ᵢ] (B, linear + relu) and the output (B, 1) is a1ᵢ·x + ReLU(a2ᵢ·u).
 * Parameters `x` (linear) and `u` (relu), both N(0, 1/width) at the start.
 */
export interface AdditiveSpec {
  kind: 'additive';
  /** Width of x: the columns of A₁ (the strongly convex part). */
  linear: number;
  /** Width of u: the columns of A₂ (the part behind the ReLU). */
  relu: number;
}

/**
 * Any `torch.nn.Module` a Python callable returns: `{kind: 'factory', ref: 'torch.nn:Linear',
 * kwargs: {in_features: 4, out_features: 2}}`. Only runtimes that allow factories build
 * these (a local one does).
 */
export interface FactorySpec {
  kind: 'factory';
  /** `package.module:callable` (attributes may be dotted: `pkg.mod:Class.create`). */
  ref: string;
  /** Keyword arguments for the callable, passed as they are (snake_case, as Python names them). */
  kwargs?: Record<string, unknown>;
}

export type ModelSpec = MLPSpec | CNNSpec | GPTSpec | AdditiveSpec | FactorySpec;

/** TypeScript field -> runtime field, per kind; the list is also what is allowed. */
const FIELDS: Record<ModelSpec['kind'], Record<string, string>> = {
  mlp: { kind: 'kind', sizes: 'sizes', activation: 'activation', bias: 'bias', dropout: 'dropout' },
  cnn: { kind: 'kind', inChannels: 'in_channels', image: 'image', channels: 'channels', kernel: 'kernel', hidden: 'hidden', classes: 'classes' },
  gpt: { kind: 'kind', vocab: 'vocab', context: 'context', dim: 'dim', layers: 'layers', heads: 'heads', mlpRatio: 'mlp_ratio', dropout: 'dropout', moe: 'moe' },
  additive: { kind: 'kind', linear: 'linear', relu: 'relu' },
  factory: { kind: 'kind', ref: 'ref', kwargs: 'kwargs' },
};
const MOE_FIELDS = ['experts', 'hidden', 'every', 'router'];

function checkFields(where: string, obj: object, allowed: string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw new LiaisonError('E_ARG', `Model.build: spec field '${where}${k}' is not known; allowed: ${allowed.join(', ')}`, { param: 'spec' });
  }
}

function isRouter(r: unknown): r is Router {
  const x = r as Partial<Router> | null;
  return !!x && typeof x.route === 'function' && typeof x.params === 'function' && typeof x.meta === 'object';
}

/** A GPT's width when its spec gives none. Sent to the runtime explicitly ({@link runtimeSpec}), so the router's dims and the model built agree whatever the runtime's own default. */
export const GPT_DEFAULT_DIM = 64;

/** The width D of a GPT spec: `dim`, or {@link GPT_DEFAULT_DIM}. The one place the default is applied. */
export function gptDim(spec: GPTSpec): number {
  return spec.dim ?? GPT_DEFAULT_DIM;
}

/** The router dims of a GPT spec's MoE layers. */
export function moeDims(spec: GPTSpec): RouterDims | null {
  return spec.moe ? { dim: gptDim(spec), experts: spec.moe.experts } : null;
}

function checkPositive(field: string, v: unknown): void {
  if (!Number.isInteger(v) || (v as number) < 1) throw new LiaisonError('E_ARG', `Model.build: spec field '${field}' must be a positive integer, got ${JSON.stringify(v)}`, { param: 'spec' });
}

/** A spec as the runtime's `model_build` takes it (snake_case; the router as its parameter specs). */
export function runtimeSpec(spec: ModelSpec, seed?: number): Record<string, unknown> {
  if (spec === null || typeof spec !== 'object') throw new LiaisonError('E_ARG', `Model.build: spec must be an object with a 'kind', got ${spec === null ? 'null' : typeof spec}`, { param: 'spec' });
  const names = FIELDS[spec.kind];
  if (!names) throw new LiaisonError('E_ARG', `Model.build: spec field 'kind' must be one of ${Object.keys(FIELDS).join(', ')}, got ${JSON.stringify(spec.kind)}`, { param: 'spec' });
  checkFields('', spec, Object.keys(names));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(spec)) if (v !== undefined && k !== 'moe') out[names[k]] = v;
  if (spec.kind === 'gpt') out.dim = gptDim(spec);
  if (spec.kind === 'gpt' && spec.moe !== undefined) {
    const moe = spec.moe;
    if (moe === null || typeof moe !== 'object') throw new LiaisonError('E_ARG', `Model.build: spec field 'moe' must be an object {experts, hidden, every?, router}`, { param: 'spec' });
    checkFields('moe.', moe, MOE_FIELDS);
    // the sizes the router's params() are asked about are checked first, so that a bad one
    // is named as itself (experts: 0 would otherwise surface as the router refusing its k)
    checkPositive('dim', gptDim(spec));
    checkPositive('moe.experts', moe.experts);
    checkPositive('moe.hidden', moe.hidden);
    if (moe.every !== undefined) checkPositive('moe.every', moe.every);
    if (!isRouter(moe.router)) throw new LiaisonError('E_ARG', `Model.build: spec field 'moe.router' must be a Router plugin instance (with params() and route()), got ${describeValue(moe.router)}`, { param: 'spec' });
    const params: Record<string, unknown> = {};
    for (const [name, p] of Object.entries(moe.router.params(moeDims(spec)!))) {
      // the runtime calls the scale `std` for normal and `bound` for uniform inits
      const scale = p.std === undefined ? {} : p.init === 'normal' ? { std: p.std } : p.init === 'uniform' ? { bound: p.std } : {};
      params[name] = { shape: p.shape, init: p.init, ...scale };
    }
    out.moe = { experts: moe.experts, hidden: moe.hidden, ...(moe.every === undefined ? {} : { every: moe.every }), params };
  }
  if (seed !== undefined) out.seed = seed;
  return out;
}

/** The spec as JSON for checkpoint metadata: the router becomes its plugin id and config. */
export function specJSON(spec: ModelSpec): string {
  return JSON.stringify(spec, (k, v) => (k === 'router' && isRouter(v) ? { plugin: v.meta.name, family: v.meta.family, version: v.meta.version, config: v.config } : v));
}
