/**
 * The Trainer's config: a TypeBox schema (defaults and one description per field live
 * here; it doubles as JSON Schema for services and docs) and its validation, which names
 * the field it refuses.
 */
import { type Static, Type } from '@sinclair/typebox';
import { checkAgainstSchema } from './plugin.js';

export const TrainerConfig = Type.Object({
  epochs: Type.Integer({ minimum: 1, default: 10, description: 'epochs fit() trains when not told otherwise' }),
  batchSize: Type.Integer({ minimum: 1, default: 64, description: 'rows per training step' }),
  loss: Type.Union([Type.Literal('cross_entropy'), Type.Literal('mse')], { default: 'cross_entropy', description: "training loss: 'cross_entropy' (class indices; logits (B, C) or (B, T, C)) or 'mse' (regression)" }),
  logEvery: Type.Integer({ minimum: 1, default: 50, description: 'read the loss back and log it every this many steps (and at every epoch end)' }),
  evalEvery: Type.Integer({ minimum: 1, default: 1, description: 'evaluate on the eval set every this many epochs (and after the last)' }),
  evalBatchSize: Type.Integer({ minimum: 1, default: 1024, description: 'rows per forward pass when evaluating' }),
  seed: Type.Integer({ minimum: 0, default: 0, description: "seed of the batch order and of the runtime's random stream (reseeded per epoch, so a resumed run draws what a straight one does)" }),
  shuffle: Type.Boolean({ default: true, description: 'shuffle the rows every epoch (seeded)' }),
  dropLast: Type.Boolean({ default: false, description: 'drop the last batch of an epoch when it is smaller than batchSize' }),
  progress: Type.Union([Type.Literal('auto'), Type.Literal('bar'), Type.Literal('none')], { default: 'auto', description: "progress bar on stderr: 'auto' (only on a terminal), 'bar' (always) or 'none'" }),
  metricsFile: Type.Optional(Type.String({ minLength: 1, description: 'JSONL file that gets one record per logged step, epoch, evaluation and checkpoint (appended)' })),
  tensorboardDir: Type.Optional(Type.String({ minLength: 1, description: "TensorBoard log folder, written by the runtime when its Python has tensorboard (otherwise a one-line notice)" })),
  checkpointDir: Type.Optional(Type.String({ minLength: 1, description: 'folder for checkpoints (epoch-<n>.safetensors), written every checkpointEvery epochs' })),
  checkpointEvery: Type.Integer({ minimum: 1, default: 1, description: 'epochs between checkpoints when checkpointDir is set' }),
  checkpointSnapshots: Type.Boolean({ default: false, description: 'the checkpoints written to checkpointDir also hold the snapshots (trainer.snapshot), restored on resume' }),
  nonFinite: Type.Union([Type.Literal('error'), Type.Literal('skip')], { default: 'error', description: "a step whose loss is NaN or infinite: 'error' stops the run with E_NONFINITE naming the step (the parameters as the step before left them), 'skip' leaves the parameters and optimizer state untouched by it and counts it in the metrics (skipped)" }),
  inFlight: Type.Integer({ minimum: 1, maximum: 64, default: 8, description: 'training steps sent ahead of the runtime before the loop waits (sent in groups of half as many, each group one round trip)' }),
}, { additionalProperties: false });
export type TrainerConfig = Static<typeof TrainerConfig>;

/**
 * `config` checked against {@link TrainerConfig}, defaults filled in. Unknown fields,
 * wrong kinds and out-of-range values throw E_ARG naming the field and what it must be
 * (the same check as plugin configs: sdk/plugin.ts checkAgainstSchema).
 */
export function resolveTrainerConfig(config: unknown): TrainerConfig {
  return checkAgainstSchema(TrainerConfig, config, 'Trainer', ['model', 'optimizer', 'plugins']);
}
