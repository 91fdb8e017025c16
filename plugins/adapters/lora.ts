/**
 * LoRA: a fixed-rank update beside each frozen weight, ΔW = (alpha/r)·B·A with A (r, in)
 * and B (out, r) trained and W untouched; convolutions get A (r, in, k…) as a convolution
 * and B (out, r, 1…) as a 1×1 one, as PEFT does. A starts Kaiming-uniform and B at zero,
 * so training starts from the model as it is. The baseline of the adapter family: r is an
 * input, the same for every module. With `rslora` the scale is alpha/√r, which keeps the
 * update's size from shrinking as r grows.
 *
 * Method: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022,
 * https://arxiv.org/abs/2106.09685; rsLoRA: Kalajdzievski, "A Rank Stabilization Scaling
 * Factor for Fine-Tuning with LoRA", 2023, https://arxiv.org/abs/2312.03732.
 *
 * ```ts
 * const adapter = lora({ r: 8, targets: 'blocks\\.\\d+\\.attn\\..*' });
 * const trainer = new Trainer({ model, optimizer: adam({ lr: 1e-3 }), plugins: [adapter], epochs: 3 });
 * await trainer.fit(train);
 * await adapter.set!.exportPeft('out/adapter');  // PEFT's adapter_model.safetensors + adapter_config.json
 * ```
 */
import { type Static, Type } from '@sinclair/typebox';
import type { AdapterSite } from '../../sdk/adapters.js';
import { AdapterBase, AdapterFields } from '../../sdk/families/adapters/base.js';
import { definePlugin } from '../../sdk/plugin.js';

/** Config of {@link Lora}. */
export const LoraConfig = Type.Object({
  r: Type.Integer({ minimum: 1, default: 8, description: 'components per module: the rank of every update' }),
  ...AdapterFields,
}, { additionalProperties: false });
export type LoraConfig = Static<typeof LoraConfig>;

/** LoRA: rank `r` on every adapted module. */
export class Lora extends AdapterBase<LoraConfig> {
  protected rankOf(_site: AdapterSite): number {
    return this.config.r;
  }
}

/** The `lora` registration: `lora({ r, targets, alpha, rslora, seed, merge })`. */
export const lora = definePlugin({
  name: 'lora', version: '1.0.0', family: 'adapter', schema: LoraConfig,
  description: 'LoRA: a fixed-rank update (alpha/r)·B·A beside every adapted Linear / Conv weight, the base frozen (rsLoRA scaling as an option)',
  paper: 'https://arxiv.org/abs/2106.09685',
  create: (config, meta) => new Lora(config, meta),
});
