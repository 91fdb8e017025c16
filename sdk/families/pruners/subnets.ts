/**
 * Subnetworks of an MLP made by masking hidden neurons: the pieces that randomly masked
 * neurons, dropout, multi-sample dropout and independent subnet training share
 * (plugins/pruners/masked-neurons.ts; docs/pruning.md). A subnet is the MLP's weights with
 * a 0/1 mask over its hidden neurons (all hidden layers side by side, (1, H)) applied to
 * the hidden activations; it trains by gradient descent on copies of the weights, and the
 * copies are merged back entry by entry over the subnets that held each entry. Pure
 * functions of tensors: queued ops, traceable (a batched worker placement traces them).
 */
import { LiaisonError, type Runtime, type Tensor } from '../../../bridge/index.js';
import type { Dataset } from '../../data.js';
import type { ModelLike } from '../../hooks.js';
import type { MLPSpec } from '../../model-spec.js';
import type { Model } from '../../model.js';

/** Per round: the merged dense network's training loss, held-out accuracy when given, the bytes sent. */
export interface MaskedRound { round: number; loss: number; accuracy?: number; bytes: { up: number; down: number } | null }
export interface MaskedTrainOptions {
  rounds: number;
  /** Held-out rows: the merged network's accuracy on them each round. */
  eval?: Dataset;
  onRound?: (r: MaskedRound) => void | Promise<void>;
  /** Where the subnets run (docs/workers.md): 'batched' (default, one traced program per round), 'sequential', or 'ranks' (spread over a runtime group's ranks, docs/distributed.md). */
  placement?: string;
}

/** An MLP's layers: weight (out, in) and bias (out,) per layer; each hidden layer's neurons at an offset of the (1, H) mask. */
export interface MLPLayout {
  /** Widths from input to output, `[64, 300, 100, 10]`. */
  sizes: number[];
  bias: boolean;
  act: 'relu' | 'gelu' | 'tanh';
  /** Parameter names in the order of a weight list: `layers.0.weight`, `layers.0.bias`, … */
  names: string[];
  /** Where hidden layer l's neurons start in the mask. */
  offsets: number[];
  /** H: hidden neurons in all. */
  hidden: number;
}

/** The layout of an `mlp` model built from a spec; E_ARG naming the kind for any other model. */
export function mlpLayout(model: ModelLike, who: string): MLPLayout {
  const { kind, spec } = model as Partial<Model>;
  if (spec?.kind !== 'mlp') throw new LiaisonError('E_ARG', `${who}: masks the hidden neurons of an 'mlp' model; this model's kind is '${kind ?? 'unknown'}'`, { param: 'model' });
  const mlp = spec as MLPSpec;
  const sizes = [...mlp.sizes as number[]];
  const bias = mlp.bias ?? true;
  const hidden = sizes.slice(1, -1);
  return {
    sizes, bias, act: mlp.activation ?? 'relu',
    names: sizes.slice(1).flatMap((_, i) => [`layers.${i}.weight`, ...(bias ? [`layers.${i}.bias`] : [])]),
    offsets: hidden.map((_, l) => hidden.slice(0, l).reduce((a, b) => a + b, 0)),
    hidden: hidden.reduce((a, b) => a + b, 0),
  };
}

/**
 * S subnets' masks over all hidden neurons, (S, H) f32 0/1: `'bernoulli'` keeps each
 * neuron in each subnet with probability `keep`; `'partition'` deals each hidden layer's
 * neurons, shuffled, round-robin to the S subnets (each neuron in exactly one; sizes
 * differ by at most one).
 */
export function neuronMasks(rt: Runtime, split: 'bernoulli' | 'partition', subnets: number, keep: number, widths: readonly number[], seed: number): Tensor {
  const H = widths.reduce((a, b) => a + b, 0);
  if (split === 'bernoulli') return rt.rand([subnets, H], { seed }).lt(keep).to('f32');
  const owner = rt.cat(widths.map((n, l) => rt.call('randperm', [n], { seed: seed + 7919 * (l + 1) }) as Tensor)).remainder(subnets);
  return owner.unsqueeze(0).eq((rt.call('arange', [subnets]) as Tensor).unsqueeze(1)).to('f32');
}

/** x (N, in) → (N, out) through weights `w` (layout order); hidden activations × mask (1, H) × `scale` (1/ξ keeps their expectation). No mask: the dense net. */
export function maskedForward(x: Tensor, w: readonly Tensor[], mask: Tensor | null, lay: MLPLayout, scale = 1): Tensor {
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

/**
 * () f32, the loss of logits `out` (N, C) against class indices `y` (N,): `'mse'`
 * ½‖out − onehot(y)‖² per row (the paper's), or `'cross_entropy'`.
 */
export function subnetLoss(kind: 'mse' | 'cross_entropy', out: Tensor, y: Tensor, n: number, classes: number): Tensor {
  const rt = out.rt;
  if (kind === 'cross_entropy') return rt.call('cross_entropy', [out, y]) as Tensor;
  const target = (rt.call('one_hot', [y], { num_classes: classes }) as Tensor).to('f32');
  return (rt.call('mse_loss', [out, target], { reduction: 'sum' }) as Tensor).div(2 * n);
}

/**
 * `steps` gradient-descent steps from `start` (not changed): fresh leaf copies, `loss(t, w)`
 * the step's 0-d loss. Returns the trained copies, no longer requiring a gradient.
 */
export function localDescent(rt: Runtime, start: readonly Tensor[], steps: number, lr: number, loss: (t: number, w: Tensor[]) => Tensor): Tensor[] {
  const w = start.map((t) => t.clone());
  for (const p of w) rt.call('set_requires_grad', [p], { flag: true }, 0);
  for (let t = 0; t < steps; t++) {
    if (t > 0) rt.call('clear_grads', [w], undefined, 0);
    rt.call('backward', [loss(t, w)], undefined, 0);
    // in place on a leaf that requires grad: the runtime runs it without autograd
    for (const p of w) p.sub_((rt.call('grad_of', [p]) as Tensor).mul(lr));
  }
  for (const p of w) rt.call('set_requires_grad', [p], { flag: false }, 0);
  return w;
}

/** Which entries of parameter i (layout order) a subnet with this (1, H) mask held: all their neurons kept. (out, in) or (out,). */
export function held(i: number, mask: Tensor, lay: MLPLayout): Tensor {
  const l = Math.floor(i / (lay.bias ? 2 : 1));
  const isWeight = !lay.bias || i % 2 === 0;
  const last = lay.sizes.length - 2;
  const neurons = (k: number) => mask.narrow(1, lay.offsets[k], lay.sizes[k + 1]).reshape([lay.sizes[k + 1]]);
  const out = l < last ? neurons(l) : mask.rt.ones([lay.sizes[l + 1]]); // the logits are no neurons
  if (!isWeight) return out;
  const inn = l > 0 ? neurons(l - 1) : mask.rt.ones([lay.sizes[0]]); // nor are the inputs
  return mask.rt.call('outer', [out, inn]) as Tensor;
}

/**
 * The subnets' copies combined: per entry, the mean over the subnets that held it
 * (`'holders'`, the paper's) or over all S (`'all'`, local-SGD averaging); an entry no
 * subnet held keeps its shared value (`'keep'`) or becomes 0 (`'zero'`, MaskedNTK's code).
 * A copy that did not hold an entry left it at the shared value: no gradient reached it.
 */
export function mergeByHolders(shared: readonly Tensor[], copies: readonly { w: readonly Tensor[]; mask: Tensor }[], lay: MLPLayout, combine: 'holders' | 'all', unheld: 'keep' | 'zero'): Tensor[] {
  const sum = (ts: Tensor[]) => ts.reduce((a, b) => a.add(b));
  return shared.map((s, i) => {
    const holds = copies.map((c) => held(i, c.mask, lay));
    const count = sum(holds);
    const mean = combine === 'holders' ? sum(copies.map((c, k) => c.w[i].mul(holds[k]))).div(count.clamp(1)) : sum(copies.map((c) => c.w[i])).div(copies.length);
    return mean.where(count.gt(0), unheld === 'keep' ? s : 0);
  });
}
