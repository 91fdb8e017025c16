/**
 * Knowledge distillation as an own training loop (examples/distill.ts, bench/loop_custom_ts.ts):
 * a student trained on a teacher's softened outputs and the labels, with its plugins (a
 * pruner, an optimizer) on the public loop parts of the SDK (sdk/loop.ts). `fit()` cannot
 * say this: its step is one model's forward and a fixed loss; here the step runs two
 * models, the teacher's forward without a graph inside the student's traced step.
 *
 * Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", 2015,
 * https://arxiv.org/abs/1503.02531: loss = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·CE(s, y).
 */
import type { Runtime, Tensor } from '../bridge/index.js';
import { type Dataset, epochSeed, lossOf, type Model, type MomentumOptimizer, type TrainerPlugin, TrainingLoop, type TrainStep } from '../sdk/index.js';

export interface DistillConfig {
  /** Softmax temperature T of both models' outputs. */
  temperature: number;
  /** Weight α of the soft (teacher) term; 1 − α goes to the labels' cross-entropy. */
  alpha: number;
}

/**
 * () f32: α·T²·KL(p_t ‖ p_s) over the batch (batchmean, as `F.kl_div(..., log_target=True)`)
 * + (1 − α)·cross-entropy with the labels. `student` (B, C) logits with a graph, `teacher`
 * (B, C) logits without one. Queued ops only: a traced step calls it.
 */
export function distillLoss(rt: Runtime, student: Tensor, teacher: Tensor, y: Tensor, c: DistillConfig): Tensor {
  const T = c.temperature;
  const logS = student.div(T).logSoftmax(-1);
  const logT = teacher.div(T).logSoftmax(-1);
  const kl = logT.exp().mul(logT.sub(logS)).sum(-1).mean();
  const ce = lossOf('cross_entropy', student, y, 1);
  return kl.mul(c.alpha * T * T).add(ce.mul(1 - c.alpha));
}

export interface DistillLoop {
  loop: TrainingLoop;
  step: TrainStep<{ x: object; y: object }>;
}

/** The student's loop (its optimizer and plugins attached) and its distillation step. */
export async function distillLoop(o: { student: Model; teacher: Model; optimizer: MomentumOptimizer; plugins: TrainerPlugin[] } & DistillConfig): Promise<DistillLoop> {
  const { student, teacher } = o;
  const loop = await TrainingLoop.create({ model: student, optimizer: o.optimizer, plugins: o.plugins });
  const step = loop.stepProgram({
    name: 'distill-step',
    inputs: { x: {}, y: {} },
    // the teacher's forward in eval mode, without a graph: only the student is trained
    loss: ({ x, y }) => distillLoss(loop.rt, student.forward(x, { train: true }), teacher.forward(x, { train: false }), y, o),
  });
  return { loop, step };
}

/**
 * One epoch of the loop over `train` in the Trainer's batch order (seed `seed`): every
 * step queued and paced by the loop, the losses read once at the end, then the epoch's
 * end (the pruner's rounds). Returns the epoch's mean loss.
 */
export async function distillEpoch(d: DistillLoop, train: Dataset, batchSize: number, seed = 0): Promise<number> {
  const { loop, step } = d;
  const rt = loop.rt;
  const e = loop.epoch;
  rt.manualSeed(epochSeed(seed, e));
  const losses: Tensor[] = [];
  for (const b of train.batches(batchSize, { shuffle: true, seed: epochSeed(seed, e) })) {
    const out = await step.run({ x: b.x, y: b.y });
    losses.push(out.loss);
    b.x.free();
    b.y.free();
  }
  const all = rt.stack(losses);
  const mean = all.mean();
  const read = mean.item();
  // freed in the read's own batch (a batch drops its frees after its reads): the epoch's
  // end then has nothing left to send, no extra round trip
  for (const t of [all, mean, ...losses]) t.free();
  const loss = await read;
  await loop.epochEnd({ loss });
  return loss;
}
