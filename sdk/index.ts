/**
 * `liaison/sdk`: plugin families, programs, models and the training loop, on top of the
 * bridge. The reference plugins are in `liaison/plugins`; the conformance suites a plugin
 * runs against are in `liaison/sdk/conformance`.
 *
 * ```ts
 * import { Runtime } from 'liaison';
 * import { Dataset, Model, Trainer } from 'liaison/sdk';
 * import { gd } from 'liaison/plugins';
 *
 * const rt = await Runtime.start();
 * const [train, test] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
 * const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 128, 10] });
 * const trainer = new Trainer({ model, optimizer: gd({ lr: 0.1 }), epochs: 5 });
 * await trainer.fit(train, { eval: test });
 * ```
 */
/**
 * TypeBox, the schema builder of every plugin config: re-exported so that a plugin package
 * uses the SDK's own copy (`import { Type, type Static } from 'liaison/sdk'`), whose schemas
 * `definePlugin` validates, and needs no dependency of its own on `@sinclair/typebox`.
 */
export { Type, type Static, type TSchema, type TObject, type TProperties } from '@sinclair/typebox';
export * from './plugin.js';
export * from './hooks.js';
export * from './program.js';
export * from './model-spec.js';
export * from './model.js';
export * from './hook-points.js';
export * from './weight-hooks.js';
export * from './adapters.js';
export * from './units.js';
export * from './text.js';
export * from './data.js';
export * from './trainer.js';
export { Service, type ServiceOptions, type ServedEvent, type ServedPlugin, type LaunchOptions } from './served.js';
export * from './trainer-types.js';
export { TrainerConfig, resolveTrainerConfig } from './trainer-config.js';
export { TrainingLoop, type TrainingLoopOptions, TrainStep, type StepOutput, type StepSpec, StepWindow } from './loop.js';
export { epochSeed } from './trainer-source.js';
export type { NonFiniteMode } from './nonfinite.js';
export { evaluate, lossOf, type EvaluateOptions, type LossKind } from './evaluate.js';
export { MetricsLog, readMetrics, type MetricRecord, type MetricKind } from './metrics.js';
export { writeSafetensors, readSafetensors, parseSafetensors } from './safetensors.js';
export { plotLines, type PlotSpec, type Series } from './plot.js';
export * from './families/momentum/types.js';
export * from './families/momentum/base.js';
export * from './families/momentum/schedule.js';
export * from './families/pruners/types.js';
export * from './families/pruners/base.js';
export * from './families/pruners/score.js';
export * from './families/pruners/subnets.js';
export * from './families/pruners/loft-rounds.js';
export * from './families/deflators/types.js';
export * from './families/deflators/base.js';
export * from './families/deflators/errors.js';
export * from './workers/index.js';
export { PCA, type PCAOptions, checkDeflator, covarianceOf } from './pca.js';
export * from './families/routers/types.js';
export * from './families/routers/base.js';
export * from './families/kv-policies/types.js';
export * from './families/kv-policies/base.js';
export * from './families/adapters/types.js';
export * from './families/adapters/base.js';
export * from './families/adapters/allocation.js';
export * from './families/adapters/deflation.js';
export * from './families/adapters/growth.js';
export * from './families/adapters/curvature.js';
