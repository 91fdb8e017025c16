/**
 * The `Adapter` family: low-rank updates trained beside a frozen model (LoRA, AdaLoRA,
 * AdaPaD; docs/adapters.md, docs/architecture.md "Plugins and families").
 *
 * An adapter sits on chosen nn.Linear / nn.Conv*d modules (its sites, sdk/adapters.ts). On
 * a module whose weight is W (out, in) — or (out, in, k…) for a convolution — it holds up to
 * r rank-1 components and the module computes
 *
 *     y = W x + scale · B · diag(gate) · A x        A (r, in[, k…]), B (out, r[, 1…]), gate (r,)
 *
 * through the module's `output` hook (the side path; the stored W is never written while
 * training). The plugin decides r per module, how A, B and the gate start and what happens
 * to them during training (a fixed rank, a budget schedule over singular values, components
 * that join one by one); {@link AdapterBase} (base.ts) does the rest in a Trainer: it picks
 * the sites, declares A and B as the Trainer's parameters, freezes every parameter of the
 * model and keeps its buffers (a norm's running statistics) as they were, installs the side
 * paths, checkpoints the gates, and merges at the end when asked.
 * Everything a plugin does per step runs at the Trainer's hook points: there is no call a
 * user must make per step.
 */
import type { AdapterSet } from '../../adapters.js';
import type { TrainerPlugin } from '../../hooks.js';
import type { PluginInstance } from '../../plugin.js';

export interface Adapter<C = unknown> extends PluginInstance<C>, TrainerPlugin {
  /**
   * The AdapterSet once attached (null before `attach()`): the sites, the factors of each
   * module (A (r, in[, k…]), B (out, r[, 1…]), gate (r,), scale), merge / unmerge, save /
   * load and the PEFT export.
   */
  readonly set: AdapterSet | null;
  /**
   * Components in the sum per module (gate ≠ 0), by module name (`layers.0`: 8). LoRA: r
   * everywhere; AdaLoRA: its triplets whose singular value E_k is not zero — 0 everywhere
   * before the first step, since E starts at zero; the budget's view, what the mask keeps,
   * is `allocation()`; AdaPaD: the components that have joined. It changes during training
   * for the adaptive plugins, and is what an export holds (one round trip).
   */
  rankPattern(): Promise<Record<string, number>>;
  /**
   * Parameters of the components in the sum (A's rows and B's columns of each active
   * component, the gate folded into B): what an exported adapter file holds, to the entry.
   * One round trip.
   */
  parameterCount(): Promise<number>;
  /**
   * Take the side paths off the model and drop what the plugin made (its gates, its state).
   * The factors A and B are the Trainer's parameters: `trainer.free()` drops them.
   */
  free(): void;
}
