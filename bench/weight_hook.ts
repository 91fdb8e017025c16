/**
 * sdk.weight_hook: one epoch of edge-popup-style training — a straight-through top-k mask
 * (keep half) over the frozen random weights of an MLP on the digits (64 → 128 → 128 → 10,
 * batch 64, 23 steps), gradient descent on the scores only — with the mask computed by
 * weight hooks (sdk/weight-hooks.ts) inside a traced step program, against the same written
 * in plain PyTorch (`baselines/weight_hook.py`, kept alive so that the two alternate, epoch
 * by epoch, on a noisy machine). The same model build, split, scores and batch orders on
 * both sides, so the epochs' mean losses must agree (checked). One intra-op thread on both
 * sides, as in sdk.train_step.
 */
import { Runtime, type Tensor } from '../bridge/index.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import { trace } from '../sdk/program.js';
import { straightThroughTopK, weightHook } from '../sdk/weight-hooks.js';
import { alternateEpochs, type BenchOptions, type BenchResult, median, result, serveBaseline, using } from './lib.js';

const HIDDEN = 128, LAYERS = 2, BATCH = 64, LR = 0.5, KEEP = 0.5, LIMIT = 1.25;

/** A model whose weights are frozen and masked by trained scores; its step program and an epoch runner. */
async function edgePopup(rt: Runtime, sizes: number[]): Promise<{ epoch: (x: Tensor, y: Tensor, n: number, seed: number) => Promise<number> }> {
  const model = await Model.build(rt, { kind: 'mlp', sizes }, { seed: 0 });
  for (const p of model.params) rt.call('set_requires_grad', [model.param(p.name), false], undefined, 0);
  const scores: Record<string, Tensor> = {};
  model.hookModules.weight.forEach((m, i) => {
    const s = scores[m] = rt.rand(model.params.find((p) => p.name === `${m}.weight`)!.shape, { seed: 1 + i });
    s.keep();
    rt.call('set_requires_grad', [s, true], undefined, 0);
  });
  weightHook(model, model.hookModules.weight, (w, site) => w.mul(straightThroughTopK(rt, scores[site.module], KEEP)), { name: 'edge-popup' });
  const list = Object.values(scores);
  const step = await trace(rt, { name: 'edge-popup-step', inputs: { x: { shape: ['B', sizes[0]] }, y: { dtype: 'i64', shape: ['B'] } } }, ({ x, y }) => {
    const loss = rt.call('cross_entropy', [model.forward(x), y]) as Tensor;
    rt.call('backward', [loss], undefined, 0);
    for (const s of list) s.sub_((rt.call('grad_of', [s]) as Tensor).mul(LR));
    rt.call('clear_grads', [list], undefined, 0);
    return loss;
  });
  return {
    async epoch(x, y, n, seed) {
      return rt.scope(async () => {
        const order = rt.call('randperm', [n], { seed }) as Tensor;
        const sizes = Array.from({ length: Math.ceil(n / BATCH) }, (_, i) => Math.min(BATCH, n - i * BATCH));
        // one split op per epoch rather than two narrow ops per step
        const xs = x.indexSelect(0, order).split(sizes), ys = y.indexSelect(0, order).split(sizes);
        const losses = xs.map((xb, i) => step.run({ x: xb, y: ys[i] }) as Tensor);
        return (rt.call('stack', [losses]) as Tensor).mean().item();
      });
    },
  };
}

export async function benchWeightHook(opts: BenchOptions): Promise<BenchResult[]> {
  return using(async (defer) => {
    const rounds = opts.quick ? 1 : 8;
    const perRound = opts.quick ? 1 : 3;
    const warmup = opts.quick ? 1 : 3;
    const env = { OMP_NUM_THREADS: '1' };
    const baseline = serveBaseline('weight_hook.py', ['--batch', String(BATCH), '--hidden', String(HIDDEN), '--layers', String(LAYERS), '--lr', String(LR), '--keep', String(KEEP)], defer, env);
    const rt = await Runtime.start({ env });
    defer(() => rt.close());
    const [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const n = train.size;
    const net = await edgePopup(rt, [64, ...Array(LAYERS).fill(HIDDEN), 10]);
    let epochs = 0;
    const sdkEpochs = async (k: number) => {
      const seconds: number[] = [];
      let loss = NaN;
      for (let i = 0; i < k; i++) {
        const t0 = performance.now();
        loss = await net.epoch(train.x, train.y, n, epochs++);
        seconds.push((performance.now() - t0) / 1000);
      }
      return { seconds, loss };
    };
    const { sdk: sdkS, py: pyS, sdkLoss, pyLoss } = await alternateEpochs('sdk.weight_hook', baseline, sdkEpochs, { warmup, rounds, perRound });
    const sdk = median(sdkS) * 1000, base = median(pyS) * 1000;
    opts.log(`sdk.weight_hook: weight hooks ${sdk.toFixed(1)} ms / epoch, plain PyTorch ${base.toFixed(1)} ms; last losses ${sdkLoss.toFixed(5)} / ${pyLoss.toFixed(5)}`);
    return [result({
      name: 'sdk.weight_hook', value: sdk, baseline: base, unit: 'ms', target: `<= ${LIMIT}x`, met: sdk / base <= LIMIT,
      note: `MLP 64-${HIDDEN}-${HIDDEN}-10 on digits, frozen weights, straight-through top-${KEEP} mask, 23 steps of ${BATCH}, GD on the scores; median of ${sdkS.length} epochs each, alternating; 1 thread`,
    })];
  });
}
