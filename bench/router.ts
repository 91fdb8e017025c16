/**
 * The router benchmarks (issue 14).
 *
 * - router.forward: an MoE layer's forward and backward (loss = mean(y²)) with each router
 *   plugin — soft, topk k = 2, expert-choice c = 2, soft-moe — as the traced program at the
 *   layer's router hook, the experts run batched by the runtime (models/moe_dispatch.py),
 *   `GROUP` steps back to back and the last one's loss read back (as a training loop reads its
 *   loss every few steps: the round trip to TypeScript is paid once a group, not once a step),
 *   against the same router and batched experts written in plain PyTorch
 *   (`baselines/router_forward.py`: on a CPU the layer's per-expert Linears on the rows grouped
 *   by expert, on a GPU stacked parameters in one bmm, as the runtime runs them). The baseline
 *   builds the same layer from the same wire spec and seed, so the losses must agree
 *   (checked). The record sums the per-router medians; the note gives each router's ratio,
 *   and the target holds when every router's does.
 * - router.experts_batched: the same layer with 8 experts, batched against `batched: false`
 *   (the per-expert loop the layer ran before: one expert at a time over its tokens), with
 *   topk k = 2 (the record) and soft routing, and both again at the paper's experiment's
 *   scale (D 32, experts of 64, 512 tokens) in the note; two models of one build, in one
 *   runtime, alternating.
 *
 * One intra-op thread on every side.
 */
import { Runtime, type Tensor } from '../bridge/index.js';
import { expertChoice } from '../plugins/routers/expert-choice.js';
import { soft } from '../plugins/routers/soft.js';
import { softMoe } from '../plugins/routers/soft-moe.js';
import { topk } from '../plugins/routers/topk.js';
import type { Router } from '../sdk/families/routers/types.js';
import { Model } from '../sdk/model.js';
import { type MoEModelSpec, runtimeSpec } from '../sdk/model-spec.js';
import { alternateEpochs, type BenchOptions, type BenchResult, median, result, serveBaseline, using } from './lib.js';

const FORWARD_LIMIT = 1.15;
/** router.forward's steps per read-back; router.experts_batched reads every step (both of its sides pay the same round trip). */
const GROUP = 4;
const ENV = { OMP_NUM_THREADS: '1' };

interface Sizes { dim: number; hidden: number; experts: number; tokens: number }

const routers = (): { name: string; config: Record<string, unknown>; make: () => Router }[] => [
  { name: 'soft', config: {}, make: () => soft({}) },
  { name: 'topk', config: { k: 2 }, make: () => topk({ k: 2 }) },
  { name: 'expert-choice', config: { capacity: 2 }, make: () => expertChoice({ capacity: 2 }) },
  { name: 'soft-moe', config: { slots: 1 }, make: () => softMoe({ slots: 1 }) },
];

export async function benchRouter(opts: BenchOptions): Promise<BenchResult[]> {
  const s: Sizes = opts.quick ? { dim: 16, hidden: 16, experts: 4, tokens: 32 } : { dim: 128, hidden: 256, experts: 8, tokens: 1024 };
  const out: BenchResult[] = [];
  if (opts.wants('router.forward')) out.push(await benchForward(opts, s));
  if (opts.wants('router.experts_batched')) out.push(await benchBatched(opts, s));
  return out;
}

const layerSpec = (s: Sizes, router: Router, batched = true): MoEModelSpec => ({
  kind: 'moe', inputs: s.dim, outputs: s.dim, experts: s.experts, hidden: s.hidden, router, activation: 'gelu', bias: true, batched,
});

/**
 * `n` timed groups of `group` forward + backward passes of `model` on `x`, each group ending
 * with its last loss read back; a sample is a group's time over `group` (seconds a step).
 */
function steps(rt: Runtime, model: Model, x: Tensor, group = 1): (n: number) => Promise<{ seconds: number[]; loss: number }> {
  return async (n) => {
    const seconds: number[] = [];
    let loss = NaN;
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      loss = await rt.scope(async () => {
        let l: Tensor | null = null;
        for (let g = 0; g < group; g++) {
          rt.call('zero_grad', [model.handle], undefined, 0);
          l = (model.forward(x) as Tensor).square().mean();
          rt.call('backward', [l], undefined, 0);
        }
        return l!.item();
      });
      seconds.push((performance.now() - t0) / 1000 / group);
    }
    return { seconds, loss };
  };
}

async function benchForward(opts: BenchOptions, s: Sizes): Promise<BenchResult> {
  // short rounds, many of them: on a shared machine the load drifts, and both sides should see the same
  const o = opts.quick ? { warmup: 1, rounds: 1, perRound: 1 } : { warmup: 3, rounds: 12, perRound: 4 };
  return using(async (defer) => {
    // every baseline process starts at once (each imports torch), beside one runtime for all routers
    const cases = routers().map((r) => {
      const spec = layerSpec(s, r.make());
      const args = ['--spec', JSON.stringify(runtimeSpec(spec, 0)), '--router', r.name, '--config', JSON.stringify(r.config), '--tokens', String(s.tokens), '--seed', '1', '--group', String(GROUP)];
      return { ...r, spec, baseline: serveBaseline('router_forward.py', args, defer, ENV) };
    });
    const rt = await Runtime.start({ env: ENV });
    defer(() => rt.close());
    const x = rt.randn([s.tokens, s.dim], { seed: 1 });
    const per: { name: string; v: number; b: number; fast: number }[] = [];
    for (const c of cases) {
      const model = await Model.build(rt, c.spec, { seed: 0 });
      const { sdk, py, sdkLoss, pyLoss } = await alternateEpochs(`router.forward (${c.name})`, c.baseline, steps(rt, model, x, GROUP), o);
      c.baseline.ask(''); // done: the baseline exits
      model.free();
      const v = median(sdk) * 1000, b = median(py) * 1000;
      // each side's fastest group: the one that ran undisturbed, when the machine is loaded
      const fast = Math.min(...sdk) / Math.min(...py);
      opts.log(`router.forward ${c.name}: program ${v.toFixed(2)} ms, plain PyTorch ${b.toFixed(2)} ms a step (${(v / b).toFixed(2)}x; fastest groups ${fast.toFixed(2)}x); losses ${sdkLoss.toPrecision(7)} / ${pyLoss.toPrecision(7)}`);
      per.push({ name: c.name, v, b, fast });
    }
    const v = per.reduce((a, p) => a + p.v, 0), b = per.reduce((a, p) => a + p.b, 0);
    return result({
      name: 'router.forward', value: v, baseline: b, unit: 'ms', target: `<= ${FORWARD_LIMIT}x each`, met: per.every((p) => p.v / p.b <= FORWARD_LIMIT),
      note: `MoE layer D ${s.dim}, ${s.experts} GELU experts of ${s.hidden}, ${s.tokens} tokens, fwd+bwd, the loss read every ${GROUP} steps; sum of medians over routers: ${per.map((p) => `${p.name} ${(p.v / p.b).toFixed(2)}x`).join(', ')}; fastest groups: ${per.map((p) => `${p.name} ${p.fast.toFixed(2)}x`).join(', ')}; ${o.rounds * o.perRound} groups of ${GROUP} steps each, alternating; 1 thread`,
    });
  });
}

async function benchBatched(opts: BenchOptions, s: Sizes): Promise<BenchResult> {
  // alternating every step: the two layers see the same load, however it drifts
  const rounds = opts.quick ? 1 : 30, perRound = 1;
  // the paper's experiment's scale: few inputs, narrow experts (where per-expert overhead shows)
  const small: Sizes = opts.quick ? s : { dim: 32, hidden: 64, experts: 8, tokens: 512 };
  return using(async (defer) => {
    const rt = await Runtime.start({ env: ENV });
    defer(() => rt.close());
    const measure = async (make: () => Router, z: Sizes) => {
      const x = rt.randn([z.tokens, z.dim], { seed: 1 });
      const fast = await Model.build(rt, layerSpec(z, make()), { seed: 0 });
      const loop = await Model.build(rt, layerSpec(z, make(), false), { seed: 0 });
      const [a, b] = [steps(rt, fast, x), steps(rt, loop, x)];
      await a(2);
      await b(2);
      const times = { fast: [] as number[], loop: [] as number[] };
      let la = NaN, lb = NaN;
      for (let i = 0; i < rounds; i++) {
        const ra = await a(perRound), rb = await b(perRound);
        times.fast.push(...ra.seconds);
        times.loop.push(...rb.seconds);
        [la, lb] = [ra.loss, rb.loss];
      }
      if (!(Math.abs(la - lb) <= 1e-4 * Math.max(1, Math.abs(lb)))) throw new Error(`router.experts_batched: batched and per-expert layers disagree (loss ${la} vs ${lb})`);
      fast.free();
      loop.free();
      x.free();
      return { v: median(times.fast) * 1000, b: median(times.loop) * 1000 };
    };
    const top = await measure(() => topk({ k: 2 }), s);
    const dense = await measure(() => soft({}), s);
    const topSmall = await measure(() => topk({ k: 2 }), small);
    const denseSmall = await measure(() => soft({}), small);
    const fmt = (m: { v: number; b: number }) => `${(m.v / m.b).toFixed(2)}x (${m.v.toFixed(1)} vs ${m.b.toFixed(1)} ms)`;
    opts.log(`router.experts_batched: D ${s.dim}: topk k=2 ${fmt(top)}, soft ${fmt(dense)}; D ${small.dim}: topk k=2 ${fmt(topSmall)}, soft ${fmt(denseSmall)}`);
    return result({
      name: 'router.experts_batched', value: top.v, baseline: top.b, unit: 'ms', target: '< 1x', met: top.v < top.b,
      note: `MoE layer D ${s.dim}, ${s.experts} experts of ${s.hidden}, ${s.tokens} tokens, fwd+bwd, topk k=2, batched vs batched: false; soft routing ${fmt(dense)}; at D ${small.dim}, experts of ${small.hidden}, ${small.tokens} tokens: topk k=2 ${fmt(topSmall)}, soft ${fmt(denseSmall)}; medians of ${rounds * perRound} steps each, alternating; 1 thread`,
    });
  });
}
