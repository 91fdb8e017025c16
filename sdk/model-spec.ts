/**
 * Typed model specs: what `Model.build()` takes, defined once. Each kind is a TypeBox schema
 * (a default and a help line per field, as plugin configs have); the TypeScript types are
 * `Static<>` of them, the wire names follow one rule ({@link wireName}: camelCase here,
 * snake_case on the wire), and {@link wireSchema} turns them into the JSON Schema that
 * ships with the runtime (python-runtime/liaison_runtime/models/spec.schema.json, written
 * by scripts/model-spec-schema.ts), which the runtime checks every spec against before it
 * builds (models/spec.py). docs/models.md's field tables are generated from the same
 * schemas. Field names are checked here, so a typo is refused before anything is sent;
 * values are checked by the runtime, which names the field, what it expected and what it got.
 */
import { type Static, type TObject, type TSchema, Type } from '@sinclair/typebox';
import { LiaisonError } from '../bridge/index.js';
import type { Router, RouterDims } from './families/routers/types.js';
import { describeValue } from './plugin.js';

/** A GPT's width when its spec gives none. Sent to the runtime explicitly ({@link runtimeSpec}), so the router's dims and the model built agree whatever the runtime's own default. */
export const GPT_DEFAULT_DIM = 64;

/** Schema keyword of a field whose wire form is another field (the router: its parameter specs). */
const WIRE = 'liaisonWire';

const posInt = (description: string, extra: object = {}) => Type.Integer({ minimum: 1, description, ...extra });
const posInts = <T = number[]>(description: string, minItems: number, maxItems?: number) =>
  Type.Unsafe<T>({ type: 'array', items: { type: 'integer', minimum: 1 }, minItems, ...(maxItems === undefined ? {} : { maxItems }), description });
const fraction = (description: string) => Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0, description });
const oneOf = <T extends string>(values: readonly T[], description: string, dflt: T) =>
  Type.Unsafe<T>({ type: 'string', enum: [...values], default: dflt, description });
const kindOf = <K extends string>(kind: K) => Type.Literal(kind, { description: 'Which kind of model.' });

export const MLPSpec = Type.Object({
  kind: kindOf('mlp'),
  sizes: posInts('Widths from input to output, at least two: `[64, 128, 10]`.', 2),
  activation: Type.Optional(oneOf(['relu', 'gelu', 'tanh'] as const, 'After every hidden layer.', 'relu')),
  bias: Type.Optional(Type.Boolean({ default: true, description: 'Linear layers with a bias.' })),
  dropout: Type.Optional(fraction('Dropout after each hidden activation, in [0, 1).')),
}, {
  additionalProperties: false,
  description: 'A multilayer perceptron: (B, sizes[0]) → (B, sizes[-1]). Parameters `layers.i.weight`, `layers.i.bias`; activations `acts.i`.',
});
/** A multilayer perceptron: (B, sizes[0]) -> (B, sizes[-1]). Layers are `layers.i`, activations `acts.i`. */
export type MLPSpec = Static<typeof MLPSpec>;

export const CNNSpec = Type.Object({
  kind: kindOf('cnn'),
  inChannels: Type.Optional(posInt('Input channels C.', { default: 1 })),
  image: posInts<[number, number]>('[height, width] of the input images.', 2, 2),
  channels: posInts('Output channels of each conv stage (each stage halves the image).', 1),
  kernel: Type.Optional(posInt('Conv kernel size.', { default: 3 })),
  hidden: Type.Optional(posInt('Width of the `fc` layer.', { default: 64 })),
  classes: posInt('Number of classes (the logits\' width).'),
}, {
  additionalProperties: false,
  description: 'A small convolutional classifier: per entry of `channels` a \'same\' conv (`convs.i`) + ReLU + 2×2 max-pool, then `fc` (hidden) + ReLU and `head` (classes). Takes (B, C, H, W), or (B, C·H·W) flat rows as scikit-learn stores images → (B, classes).',
});
/** A small convolutional classifier: per entry of `channels` a 'same' conv (`convs.i`) + ReLU + 2x2 max-pool, then `fc` + ReLU and `head`. */
export type CNNSpec = Static<typeof CNNSpec>;

/** One router parameter as the runtime takes it (the wire form of a `RouterParamSpec`). */
const RouterParamWire = {
  type: 'object',
  additionalProperties: false,
  required: ['shape'],
  properties: {
    shape: { type: 'array', items: { type: 'integer', minimum: 0 }, description: 'The parameter\'s shape.' },
    init: { type: 'string', enum: ['normal', 'zeros', 'ones', 'uniform'], default: 'normal', description: 'How it starts.' },
    std: { type: ['number', 'null'], minimum: 0, default: null, description: 'Standard deviation of a \'normal\' init (null: the runtime\'s default).' },
    bound: { type: ['number', 'null'], minimum: 0, default: null, description: 'Bound of a \'uniform\' init (null: the runtime\'s default).' },
  },
};

/** A spec's `router` field: a Router plugin instance here, its parameter specs (`params`) on the wire. */
const routerField = (description: string) => Type.Unsafe<Router>({
  description,
  [WIRE]: {
    name: 'params',
    schema: {
      type: 'object',
      propertyNames: { pattern: '^[A-Za-z_][A-Za-z0-9_]*$', description: 'an identifier (letters, digits, _; no dots)' },
      additionalProperties: RouterParamWire,
      default: {},
      description: 'The router\'s parameters by name, as its `params(dims)` declares them (the SDK sends them for `router`).',
    },
  },
});

export const MoESpec = Type.Object({
  experts: posInt('Experts per MoE layer E.'),
  hidden: posInt('Hidden width of each expert\'s 2-layer MLP.'),
  every: Type.Optional(posInt('Every `every`-th block (blocks every-1, 2·every-1, … counting from 0) is an MoE layer; 1: all.', { default: 1 })),
  router: routerField('Weighs the experts per token (a router plugin instance); its `params()` become each layer\'s `…moe.router.<name>` parameters.'),
  batched: Type.Optional(Type.Boolean({ default: true, description: 'Run the experts batched: on a CPU grouped by expert (one gather, each expert on its rows), on an accelerator stacked into one batched matmul per layer; false: one expert at a time over the tokens it serves.' })),
}, { additionalProperties: false, description: 'Mixture-of-experts feed-forward layers in a GPT.' });
/** Mixture-of-experts feed-forward layers in a GPT. */
export type MoESpec = Static<typeof MoESpec>;

export const GPTSpec = Type.Object({
  kind: kindOf('gpt'),
  vocab: posInt('Vocabulary size (128 for ASCII bytes, see sdk/text.ts).'),
  context: posInt('Longest sequence T of a forward; with learned positions also of prompt plus generated tokens (rotary models decode past it).'),
  dim: Type.Optional(posInt('Model width; a multiple of `heads`.', { default: GPT_DEFAULT_DIM })),
  layers: Type.Optional(posInt('Transformer blocks.', { default: 2 })),
  heads: Type.Optional(posInt('Attention heads; must divide `dim`.', { default: 4 })),
  mlpRatio: Type.Optional(posInt('Feed-forward width as a multiple of `dim`.', { default: 4 })),
  dropout: Type.Optional(fraction('Dropout in [0, 1).')),
  moe: Type.Optional(MoESpec),
  positions: Type.Optional(oneOf(['learned', 'rotary'] as const, 'Position encoding: `learned` adds a `wpe` table of `context` rows at the input; `rotary` (RoPE, half-split as GPT-NeoX/Llama) rotates q and k of every attention layer by their absolute position, has no `wpe`, needs an even head dim, and lets cached decoding run past `context`.', 'learned')),
  ropeBase: Type.Optional(Type.Number({ minimum: 1, default: 10000, description: 'RoPE\'s base θ: pair i of a head turns by position · θ^(−2i/D) (rotary positions only).' })),
  smearKeys: Type.Optional(Type.Boolean({ default: false, description: 'Smeared keys (Olsson et al. 2022): each attention key mixes in the previous token\'s, by a learnt weight per head (`blocks.i.attn.smear`), so that one layer can find where the current token occurred before and copy what followed (an induction head) without two layers composing; decoding keeps each layer\'s last raw key.' })),
}, {
  additionalProperties: false,
  description: 'A GPT-style decoder (pre-LN, learned or rotary positions, untied head): (B, T) i64 tokens, T ≤ context → (B, T, vocab) logits. Parameters `wte`, `wpe` (learned positions only), `blocks.i.{ln1, attn.qkv, attn.proj, ln2, mlp.fc, mlp.proj}` (and `attn.smear` with smeared keys), `ln_f`, `head`. Each attention layer is a KV-cache hook point, each MoE layer a router hook point.',
});
/** A GPT-style decoder: (B, T) i64 tokens -> (B, T, vocab) logits; attention layers are KV hook points, MoE layers router hook points. */
export type GPTSpec = Static<typeof GPTSpec>;

export const MoEModelSpec = Type.Object({
  kind: kindOf('moe'),
  inputs: posInt('Input width d.'),
  outputs: Type.Optional(posInt('Output width (1: a scalar regression, as the paper\'s teacher and student).', { default: 1 })),
  experts: posInt('Experts E.'),
  hidden: posInt('Hidden neurons of each expert H.'),
  router: routerField('Weighs the experts per input (a router plugin instance, dims `{ dim: inputs, experts }`); its `params()` become `moe.router.<name>`.'),
  activation: Type.Optional(oneOf(['relu', 'gelu', 'tanh', 'sigmoid'] as const, 'Each expert\'s activation between `fc` and `proj`.', 'relu')),
  bias: Type.Optional(Type.Boolean({ default: false, description: 'Biases on the experts\' `fc` and `proj`.' })),
  outputBias: Type.Optional(Type.Boolean({ default: false, description: 'A learnt `output_bias` (outputs,) added to the mixture.' })),
  batched: Type.Optional(Type.Boolean({ default: true, description: 'Run the experts batched: on a CPU grouped by expert (one gather, each expert on its rows), on an accelerator stacked into one batched matmul; false: one expert at a time over the inputs it serves.' })),
}, {
  additionalProperties: false,
  description: 'A mixture of experts on its own (the soft-routed MoE of "Guided by the Experts"): (B, inputs) → (B, outputs), y = Σ_e route(x)_e · proj_e(act(fc_e(x))). Parameters `moe.experts.<e>.fc.weight` (hidden, inputs), `moe.experts.<e>.proj.weight` (outputs, hidden), `moe.router.<name>`, `output_bias`. The layer is a router hook point, as a GPT\'s MoE layers are.',
});
/** A mixture of experts on its own: (B, inputs) -> (B, outputs), y = Σ_e route(x)_e · expert_e(x). */
export type MoEModelSpec = Static<typeof MoEModelSpec>;

export const AdditiveSpec = Type.Object({
  kind: kindOf('additive'),
  linear: posInt('Width d₁ of x: the columns of A₁ (the strongly convex part).'),
  relu: posInt('Width d₂ of u: the columns of A₂ (the part behind the ReLU).'),
}, {
  additionalProperties: false,
  description: 'The additive model of Liao & Kyrillidis, h = A₁x + ReLU(A₂u): rows [a1ᵢ, a2ᵢ] (B, d₁ + d₂) → (B, 1) a1ᵢ·x + ReLU(a2ᵢ·u). Parameters `x` and `u`, each N(0, 1/width) at the start.',
});
/** The additive model of Liao & Kyrillidis's experiment, h = A₁x + ReLU(A₂u). */
export type AdditiveSpec = Static<typeof AdditiveSpec>;

export const FactorySpec = Type.Object({
  kind: kindOf('factory'),
  ref: Type.String({ description: '`package.module:callable` (attributes may be dotted: `pkg.mod:Class.create`).' }),
  kwargs: Type.Optional(Type.Unsafe<Record<string, unknown>>({ type: 'object', default: {}, description: 'Keyword arguments for the callable, passed as they are (snake_case, as Python names them).' })),
}, {
  additionalProperties: false,
  description: 'Any `torch.nn.Module` a Python callable returns (`torch.nn:Linear` with `kwargs`); only runtimes that allow factories build these (a local one does). It must return one tensor to be called. Parameters: the module\'s own.',
});
/** Any `torch.nn.Module` a Python callable returns; only runtimes that allow factories build these. */
export type FactorySpec = Static<typeof FactorySpec>;

/** Every kind's schema, by kind, in the order docs and errors list them. */
export const MODEL_SPECS = { mlp: MLPSpec, cnn: CNNSpec, gpt: GPTSpec, moe: MoEModelSpec, additive: AdditiveSpec, factory: FactorySpec } as const;

export type ModelSpec = MLPSpec | CNNSpec | GPTSpec | MoEModelSpec | AdditiveSpec | FactorySpec;

/** The one rule from a spec field to its wire name: camelCase → snake_case (`mlpRatio` → `mlp_ratio`). */
export function wireName(field: string): string {
  return field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function checkFields(where: string, obj: object, allowed: string[]): void {
  for (const k of Object.keys(obj)) {
    if (!allowed.includes(k)) throw new LiaisonError('E_ARG', `Model.build: spec field '${where}${k}' is not known; allowed: ${allowed.join(', ')}`, { param: 'spec' });
  }
}

function isRouter(r: unknown): r is Router {
  const x = r as Partial<Router> | null;
  return !!x && typeof x.route === 'function' && typeof x.params === 'function' && typeof x.meta === 'object';
}

/** The width D of a GPT spec: `dim`, or {@link GPT_DEFAULT_DIM}. The one place the default is applied. */
export function gptDim(spec: GPTSpec): number {
  return spec.dim ?? GPT_DEFAULT_DIM;
}

/** The router dims of a spec's MoE layers (a GPT's with `moe`, or a standalone `moe` model's); null without any. */
export function moeDims(spec: GPTSpec | MoEModelSpec): RouterDims | null {
  if (spec.kind === 'moe') return { dim: spec.inputs, experts: spec.experts };
  return spec.moe ? { dim: gptDim(spec), experts: spec.moe.experts } : null;
}

/** The router a spec installs at its MoE layers, or null (a GPT without `moe`, another kind). */
export function specRouter(spec: ModelSpec): Router | null {
  if (spec.kind === 'moe') return spec.router;
  return spec.kind === 'gpt' && spec.moe ? spec.moe.router : null;
}

/** A router's parameter specs in wire form (the runtime calls the scale `std` for normal and `bound` for uniform inits). */
function routerWire(field: string, router: unknown, dims: RouterDims): Record<string, unknown> {
  if (!isRouter(router)) throw new LiaisonError('E_ARG', `Model.build: spec field '${field}' must be a Router plugin instance (with params() and route()), got ${describeValue(router)}`, { param: 'spec' });
  const params: Record<string, unknown> = {};
  for (const [name, p] of Object.entries(router.params(dims))) {
    const scale = p.std === undefined ? {} : p.init === 'normal' ? { std: p.std } : p.init === 'uniform' ? { bound: p.std } : {};
    params[name] = { shape: p.shape, init: p.init, ...scale };
  }
  return params;
}

function checkPositive(field: string, v: unknown): void {
  if (!Number.isInteger(v) || (v as number) < 1) throw new LiaisonError('E_ARG', `Model.build: spec field '${field}' must be a positive integer, got ${JSON.stringify(v)}`, { param: 'spec' });
}

const fieldsOf = (schema: TObject) => Object.keys(schema.properties);

/** A spec as the runtime's `model_build` takes it (snake_case; the router as its parameter specs). */
export function runtimeSpec(spec: ModelSpec, seed?: number): Record<string, unknown> {
  if (spec === null || typeof spec !== 'object') throw new LiaisonError('E_ARG', `Model.build: spec must be an object with a 'kind', got ${spec === null ? 'null' : typeof spec}`, { param: 'spec' });
  const schema = Object.hasOwn(MODEL_SPECS, spec.kind) ? MODEL_SPECS[spec.kind] : undefined;
  if (!schema) throw new LiaisonError('E_ARG', `Model.build: spec field 'kind' must be one of ${Object.keys(MODEL_SPECS).join(', ')}, got ${JSON.stringify(spec.kind)}`, { param: 'spec' });
  checkFields('', spec, fieldsOf(schema));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(spec)) if (v !== undefined && k !== 'moe' && !(spec.kind === 'moe' && k === 'router')) out[wireName(k)] = v;
  if (spec.kind === 'moe') {
    checkPositive('inputs', spec.inputs);
    checkPositive('experts', spec.experts);
    out.params = routerWire('router', spec.router, moeDims(spec)!);
  }
  if (spec.kind === 'gpt') out.dim = gptDim(spec);
  if (spec.kind === 'gpt' && spec.moe !== undefined) {
    const moe = spec.moe;
    if (moe === null || typeof moe !== 'object') throw new LiaisonError('E_ARG', `Model.build: spec field 'moe' must be an object {experts, hidden, every?, router}`, { param: 'spec' });
    checkFields('moe.', moe, fieldsOf(MoESpec));
    // the sizes the router's params() are asked about are checked first, so that a bad one
    // is named as itself (experts: 0 would otherwise surface as the router refusing its k)
    checkPositive('dim', gptDim(spec));
    checkPositive('moe.experts', moe.experts);
    checkPositive('moe.hidden', moe.hidden);
    if (moe.every !== undefined) checkPositive('moe.every', moe.every);
    const params = routerWire('moe.router', moe.router, moeDims(spec)!);
    out.moe = { experts: moe.experts, hidden: moe.hidden, ...(moe.every === undefined ? {} : { every: moe.every }), ...(moe.batched === undefined ? {} : { batched: moe.batched }), params };
  }
  if (seed !== undefined) out.seed = seed;
  return out;
}

/** The spec as JSON for checkpoint metadata: the router becomes its plugin id and config. */
export function specJSON(spec: ModelSpec): string {
  return JSON.stringify(spec, (k, v) => (k === 'router' && isRouter(v) ? { plugin: v.meta.name, family: v.meta.family, version: v.meta.version, config: v.config } : v));
}

// ---- the wire schema ----

type Json = Record<string, unknown>;

/** `seed` is Model.build's option, not a spec field; on the wire it rides in the spec. */
// the integers a TypeScript number holds exactly (torch's generators take -2^63 to 2^64 − 1)
const SEED = { type: ['integer', 'null'], minimum: -(2 ** 53), exclusiveMaximum: 2 ** 53, default: null, description: 'Seed of the initial weights (`Model.build`\'s `seed` option; null: drawn from the runtime\'s random stream, which is left alone either way).' };

/**
 * A field's schema as the runtime checks it: TypeBox's symbols dropped, objects in wire
 * form, and an optional field without a default made nullable with default null (a
 * client that spells "not given" as null, as Python's None, means the same).
 */
function wireField(s: TSchema, optional: boolean): Json {
  const wire = s[WIRE] as { name: string; schema: Json } | undefined;
  if (wire) return wire.schema;
  const out: Json = s.type === 'object' && s.properties ? wireObject(s as TObject) : (JSON.parse(JSON.stringify(s)) as Json);
  if (optional && out.default === undefined) {
    out.type = [out.type, 'null'];
    out.default = null;
  }
  return out;
}

function wireObject(schema: TObject, extra: Record<string, Json> = {}): Json {
  const required = new Set(schema.required ?? []);
  const properties: Record<string, Json> = {};
  const req: string[] = [];
  for (const [k, s] of Object.entries(schema.properties as Record<string, TSchema>)) {
    const wire = s[WIRE] as { name: string } | undefined;
    const name = wire?.name ?? wireName(k);
    properties[name] = wireField(s, !required.has(k));
    if (required.has(k) && !wire) req.push(name);
  }
  Object.assign(properties, extra);
  return { type: 'object', description: schema.description, additionalProperties: false, required: req, properties };
}

/**
 * The JSON Schema (draft 2020-12) of `model_build`'s spec as the runtime takes it: one
 * object per kind, chosen by `kind` (`discriminator`, as OpenAPI spells it; plain
 * validators read the `oneOf`). Written to the runtime's package by scripts/model-spec-schema.ts.
 */
export function wireSchema(): Json {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    $id: 'liaison:model-spec',
    title: 'Liaison model spec (model_build)',
    description: 'Generated from sdk/model-spec.ts by `npx tsx scripts/model-spec-schema.ts`; do not edit.',
    type: 'object',
    required: ['kind'],
    discriminator: { propertyName: 'kind' },
    oneOf: Object.values(MODEL_SPECS).map((s) => wireObject(s, { seed: SEED })),
  };
}
