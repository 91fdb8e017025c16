/**
 * A plugin written outside this repository's plugins/: sign-SGD with momentum ("signum",
 * Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems", ICML 2018,
 * https://arxiv.org/abs/1802.04434). Each parameter moves by a fixed step against the
 * sign of its momentum, whatever the gradient's magnitude:
 *
 *     m ← β·m + (1 − β)·g        param ← param − η·sign(m)
 *
 * The script runs the MomentumOptimizer conformance suite on it, prints the results, then
 * trains an MLP on scikit-learn's digits with it through the Trainer and prints held-out
 * accuracy. Written against the SDK exactly as a third-party package would be.
 *
 *     npx tsx examples/custom-plugin.ts
 *     LIAISON_EXAMPLE_EPOCHS=2 npx tsx examples/custom-plugin.ts   # a quicker run
 */
import { type Static, Type } from '@sinclair/typebox';
import { Runtime, type Tensor } from '../bridge/index.js';
import { formatReport, runConformance } from '../sdk/conformance/index.js';
import { Dataset } from '../sdk/data.js';
import { MomentumOptimizerBase } from '../sdk/families/momentum/base.js';
import type { StepHyper } from '../sdk/families/momentum/types.js';
import type { ParamInfo } from '../sdk/hooks.js';
import { Model } from '../sdk/model.js';
import { definePlugin } from '../sdk/plugin.js';
import { Trainer } from '../sdk/trainer.js';

/** Config of {@link SignSGD}: defaults and one help line per field. */
export const SignSGDConfig = Type.Object({
  lr: Type.Number({ exclusiveMinimum: 0, default: 0.002, description: 'step size η: how far each entry moves per step' }),
  beta: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.9, description: 'momentum β of the gradient average whose sign is taken (0: plain signSGD)' }),
}, { additionalProperties: false });
export type SignSGDConfig = Static<typeof SignSGDConfig>;

/** Sign-SGD with momentum: one state tensor per parameter, updated in place. */
export class SignSGD extends MomentumOptimizerBase<SignSGDConfig> {
  override init(_param: Tensor, info: ParamInfo, rt: Runtime): Record<string, Tensor> {
    return { m: rt.zeros(info.shape) };
  }

  /** Traced once into the Trainer's step program: tensor ops only. */
  update(param: Tensor, grad: Tensor, { m }: Record<string, Tensor>, { lr }: StepHyper): void {
    m.lerp_(grad, 1 - this.config.beta); // m ← β·m + (1 − β)·g, in place
    param.sub_(m.sign().mul(lr));
  }
}

/** The registration: `signSgd({ lr, beta })` validates and fills in defaults. */
export const signSgd = definePlugin({
  name: 'sign-sgd',
  version: '0.1.0',
  family: 'momentum-optimizer',
  schema: SignSGDConfig,
  description: 'sign-SGD with momentum (signum): a fixed step against the sign of the averaged gradient',
  paper: 'https://arxiv.org/abs/1802.04434',
  create: (config, meta) => new SignSGD(config, meta),
});

async function main(): Promise<void> {
  const epochs = Number(process.env.LIAISON_EXAMPLE_EPOCHS ?? 10);
  const rt = await Runtime.start();
  try {
    // 1. The family's conformance suite, as any MomentumOptimizer runs it.
    const report = await runConformance(signSgd, { rt });
    console.log(formatReport(report));
    if (!report.ok) process.exitCode = 1;

    // 2. Train with it: an MLP on the digits (8×8 images, 10 classes), 20% held out.
    const [train, test] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 64, 10] }, { seed: 0 });
    const trainer = new Trainer({ model, optimizer: signSgd({ lr: 0.002 }), epochs, batchSize: 64, loss: 'cross_entropy', progress: 'none' });
    await trainer.fit(train);
    const { accuracy, loss } = await trainer.evaluate(test);
    console.log(`sign-sgd, ${epochs} epochs: held-out accuracy ${((accuracy ?? 0) * 100).toFixed(1)}% (loss ${loss.toFixed(3)}) on ${test.size} digits`);
  } finally {
    await rt.close();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
