/**
 * The adapter benchmarks.
 *
 * - adapter.forward: a forward through a Linear 1024 → 1024 with a rank-16 adapter over 2,048
 *   tokens, the side path installed at the module's `output` hook (sdk/adapters.ts
 *   AdapterSet), against the same written in plain PyTorch (`baselines/adapter_forward.py`:
 *   `x @ W.T + b + ((x @ A.T) · scale) @ B.T`). Same build, x, A and B on both sides (seeded
 *   `rand`), so the outputs' means must agree (checked). Each forward ends by reading the
 *   mean back on both sides; no autograd graph. One intra-op thread on both sides.
 * - adapad.step: a Trainer epoch with `adapad` against the same with fixed-rank `lora` of the
 *   same total rank and width (plugins/adapters/), on an MLP 64 → 512 → 512 → 10 over the
 *   digits; the two Trainers alternate in one runtime, so both see the same machine. AdaPaD's steps carry
 *   its importance and its growth, traced (adapad at its default: no deflation loss; with
 *   `curvature` > 0 its Gram products come on top).
 */
import { Runtime, type Tensor } from '../bridge/index.js';
import { adapad } from '../plugins/adapters/adapad.js';
import { lora } from '../plugins/adapters/lora.js';
import { adam } from '../plugins/momentum/adam.js';
import { AdapterSet } from '../sdk/adapters.js';
import { Dataset } from '../sdk/data.js';
import { Model } from '../sdk/model.js';
import { Trainer } from '../sdk/trainer.js';
import { alternateEpochs, type BenchOptions, type BenchResult, median, result, serveBaseline, using } from './lib.js';

const FORWARD_LIMIT = 1.1, STEP_LIMIT = 1.2;

export async function benchAdapters(opts: BenchOptions): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  if (opts.wants('adapter.forward')) out.push(await benchForward(opts));
  if (opts.wants('adapad.step')) out.push(await benchAdapadStep(opts));
  return out;
}

async function benchForward(opts: BenchOptions): Promise<BenchResult> {
  const [dim, tokens, rank, scale] = opts.quick ? [64, 32, 4, 2] : [1024, 2048, 16, 2];
  return using(async (defer) => {
    const env = { OMP_NUM_THREADS: '1' };
    const baseline = serveBaseline('adapter_forward.py', ['--dim', String(dim), '--tokens', String(tokens), '--rank', String(rank), '--scale', String(scale)], defer, env);
    const rt = await Runtime.start({ env });
    defer(() => rt.close());
    const model = await Model.build(rt, { kind: 'mlp', sizes: [dim, dim] }, { seed: 0 });
    for (const p of model.params) rt.call('set_requires_grad', [model.param(p.name), false], undefined, 0);
    const x = rt.rand([tokens, dim], { seed: 1 });
    const A = rt.rand([rank, dim], { seed: 2 }).sub(0.5), B = rt.rand([dim, rank], { seed: 3 }).sub(0.5);
    const gate = rt.ones([rank]);
    const set = new AdapterSet(model, { 'layers.0': { A, B, gate, scale } });
    set.install();
    const forwards = async (n: number) => {
      const seconds: number[] = [];
      let loss = NaN;
      for (let i = 0; i < n; i++) {
        const t0 = performance.now();
        loss = await rt.scope(async () => (model.forward(x) as Tensor).mean().item());
        seconds.push((performance.now() - t0) / 1000);
      }
      return { seconds, loss };
    };
    const o = opts.quick ? { warmup: 1, rounds: 1, perRound: 1 } : { warmup: 3, rounds: 8, perRound: 5 };
    const { sdk: sdkS, py: pyS, sdkLoss, pyLoss } = await alternateEpochs('adapter.forward', baseline, forwards, o);
    set.free();
    const v = median(sdkS) * 1000, b = median(pyS) * 1000;
    opts.log(`adapter.forward: output hook ${v.toFixed(2)} ms, plain PyTorch ${b.toFixed(2)} ms per forward; output means ${sdkLoss.toPrecision(7)} / ${pyLoss.toPrecision(7)}`);
    return result({
      name: 'adapter.forward', value: v, baseline: b, unit: 'ms', target: `<= ${FORWARD_LIMIT}x`, met: v / b <= FORWARD_LIMIT,
      note: `Linear ${dim}->${dim} + rank-${rank} adapter (output hook) over ${tokens} tokens vs plain x@W.T+b+((x@A.T)*s)@B.T; median of ${sdkS.length} forwards each, alternating; 1 thread`,
    });
  });
}

async function benchAdapadStep(opts: BenchOptions): Promise<BenchResult> {
  const [hidden, rank, epochs] = opts.quick ? [32, 2, 1] : [512, 8, 8];
  return using(async (defer) => {
    const rt = await Runtime.start({ env: { OMP_NUM_THREADS: '1' } });
    defer(() => rt.close());
    const [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const sizes = [64, hidden, hidden, 10];
    const modules = sizes.length - 2; // the hidden Linears: the family leaves the head out
    const trainerFor = async (plugin: ReturnType<typeof lora> | ReturnType<typeof adapad>) => {
      const model = await Model.build(rt, { kind: 'mlp', sizes }, { seed: 0 });
      const trainer = new Trainer({ model, optimizer: adam({ lr: 1e-3 }), batchSize: 64, progress: 'none', seed: 0, plugins: [plugin] });
      defer(() => { trainer.free(); plugin.free(); model.free(); });
      return trainer;
    };
    // the same total rank and the same widths: lora r in each module; adapad r allocated per module
    // (maxRank) and a budget of r · modules, grown from 1 per module within the warm-up epoch, so
    // the difference is adapad's own work (deflation loss, importance, growth), not wider factors
    const fixed = await trainerFor(lora({ r: rank }));
    const steps = train.countBatches(64);
    const adaptive = await trainerFor(adapad({ budget: rank * modules, maxRank: rank, growEvery: Math.max(1, Math.floor(steps / (rank * modules))) }));
    const times = { lora: [] as number[], adapad: [] as number[] };
    const epoch = async (which: 'lora' | 'adapad') => {
      const h = await (which === 'lora' ? fixed : adaptive).fit(train, { epochs: 1 });
      times[which].push(h[0].seconds);
    };
    await epoch('lora'); // warm-up: traces both steps; adapad grows to its budget here
    await epoch('adapad');
    times.lora.length = times.adapad.length = 0;
    for (let i = 0; i < epochs; i++) {
      await epoch('adapad');
      await epoch('lora');
    }
    const v = median(times.adapad) / steps * 1000, b = median(times.lora) / steps * 1000;
    opts.log(`adapad.step: adapad ${v.toFixed(2)} ms, lora ${b.toFixed(2)} ms per step`);
    return result({
      name: 'adapad.step', value: v, baseline: b, unit: 'ms', target: `<= ${STEP_LIMIT}x`, met: v / b <= STEP_LIMIT,
      note: `Trainer step, MLP 64-${hidden}-${hidden}-10 on digits, batch 64, Adam; adapad budget ${rank * modules} (max ${rank} per module, spent in the warm-up) vs lora r ${rank} on ${modules} modules; median of ${epochs} epochs of ${steps} steps each, alternating; 1 thread`,
    });
  });
}
