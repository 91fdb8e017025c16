// A PyTorch script that exists already, served (python-runtime/liaison_runtime/serve.py) and
// extended from TypeScript (sdk/served.ts): the plain digits script with nesterov and
// magnitude installed trains exactly as the Trainer does with them, on the same data order
// and init; the errors a service meets (a model name the script does not serve, a plugin
// family it cannot take, a script that dies). Every script started here is killed in
// afterAll; nothing waits on timing.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Runtime, Tensor } from '../bridge/index.js';
import { h2o, magnitude, nesterov, soft, topk } from '../plugins/index.js';
import { Dataset, Model, Service, Trainer } from '../sdk/index.js';
import { runExample, startRuntime } from './helpers.js';

const SCRIPT = 'examples/plain-pytorch/train_digits.py';
const EPOCHS = 2;
const ONE_THREAD = { OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' };
const GPT = { kind: 'gpt', vocab: 32, context: 64, dim: 16, layers: 2, heads: 2 } as const;
const made: Service[] = [];
const runtimes: Runtime[] = [];
const dir = mkdtempSync(join(tmpdir(), 'liaison-served-test-'));

afterAll(async () => {
  for (const s of made) await s.kill().catch(() => undefined);
  for (const rt of runtimes) await rt.close();
});

/** One runtime of its own for the file's references (started at first use). */
async function runtime(): Promise<Runtime> {
  if (!runtimes.length) runtimes.push(await startRuntime());
  return runtimes[0];
}

/** The served model's parameters, read over the wire, copied into `model` (on another runtime). */
async function copyWeights(from: Model, to: Model): Promise<void> {
  for (const p of from.params) {
    const d = await from.param(p.name).data();
    to.param(p.name).copy_(to.rt.tensor(d.data as Float32Array, p.shape));
  }
}

const config = () => ({ opt: nesterov({ lr: 0.05, momentum: 0.9 }), pruner: magnitude({ sparsity: 0.8, scope: 'layer', atEpoch: 1 }) });

describe('a plain PyTorch script served to a TypeScript service', () => {
  it('with nesterov and magnitude installed, gives the Trainer\'s losses on the same data order and init', async () => {
    const losses = join(dir, 'losses.json');
    const svc = await Service.launch(SCRIPT, { args: ['--epochs', String(EPOCHS), '--losses', losses], env: ONE_THREAD, waitForClientS: 120 });
    made.push(svc);
    expect(svc.models).toEqual(['model']);
    const served = await svc.model('model');
    const init = await Promise.all(served.params.map(async (p) => ({ name: p.name, shape: p.shape, data: (await served.param(p.name).data()).data as Float32Array })));

    // what a served script cannot take, refused before anything is installed
    await expect(svc.model('nope')).rejects.toMatchObject({ code: 'E_ARG', message: expect.stringMatching(/no model named 'nope'.*'model'/) });
    await expect(svc.install(config().opt, { model: 'nope' })).rejects.toMatchObject({ code: 'E_ARG' });
    await expect(svc.install(soft({}))).rejects.toMatchObject({ code: 'E_ARG', message: expect.stringMatching(/cannot take a router plugin/) });
    await expect(svc.install(h2o({ budget: 8 }))).rejects.toMatchObject({ code: 'E_ARG', message: expect.stringMatching(/cannot take a KV policy/) });

    const { opt, pruner } = config();
    await svc.install(opt);
    await svc.install(pruner);
    const epochs: number[] = [];
    await svc.watch((e) => { if (e.point === 'epochEnd') epochs.push(e.epoch); });
    await svc.ready();
    expect(await svc.finished()).toBe('exited with code 0');
    const got = JSON.parse(readFileSync(losses, 'utf8')) as number[];
    expect(epochs).toEqual([0, 1]); // the pruning event ran at the first epoch's end
    await svc.close();

    // the Trainer, on the same rows in the same order, from the same weights
    const rt = await runtime();
    const model = await Model.build(rt, { kind: 'mlp', sizes: [64, 128, 10] });
    const names = model.params.map((p) => p.name);
    init.forEach((w, i) => { model.param(names[i]).copy_(rt.tensor(w.data, w.shape)); });
    const [train] = (await Dataset.builtin(rt, 'digits')).split(0.2, 0);
    const t = config();
    const trainer = new Trainer({ model, optimizer: t.opt, plugins: [t.pruner], epochs: EPOCHS, batchSize: 64, seed: 0, loss: 'cross_entropy', logEvery: 1 });
    const want: number[] = [];
    trainer.on('progress', (e) => want.push(e.loss));
    await trainer.fit(train);
    expect(got.length).toBe(want.length);
    expect(got.length).toBe(EPOCHS * Math.ceil(1438 / 64));
    const worst = Math.max(...got.map((l, i) => Math.abs(l - want[i])));
    expect(worst).toBeLessThan(1e-5);
    expect(got.at(-1)!).toBeLessThan(got[0] / 2); // it did learn
  }, 180_000);

  it('a router into a served liaison MoE model; E_DEAD once the script dies (tcp, signed)', async () => {
    const script = join(dir, 'moe.py');
    // a liaison MoE model built by the script (its forward needs a router: a hook point), served
    // on tcp with a key (every message signed), epoch_end every 5 steps, training until killed
    writeFileSync(script, [
      'import torch, liaison_runtime',
      'from liaison_runtime.models import build',
      'spec = {"kind": "moe", "inputs": 6, "outputs": 2, "experts": 3, "hidden": 4, "activation": "relu",',
      '        "params": {"gate": {"shape": [6, 3], "init": "normal", "std": 0.5}}}',
      'm = build(spec, torch.device("cpu"))',
      'svc = liaison_runtime.serve(m, torch.optim.SGD(m.parameters(), lr=0.1), steps_per_epoch=5)',
      'x, y = torch.randn(16, 6), torch.randn(16, 2)',
      'while True:',
      '    svc.optimizer.zero_grad()',
      '    torch.nn.functional.mse_loss(m(x), y).backward()',
      '    svc.optimizer.step()',
    ].join('\n'));
    const key = 'a-key-only-this-test-knows-0123456789';
    const svc = await Service.launch(script, { env: { ...ONE_THREAD, LIAISON_SERVE_ENDPOINT: 'tcp://127.0.0.1:0', LIAISON_KEY: key }, waitForClientS: 120 });
    made.push(svc);
    expect(svc.rt.endpoint).toMatch(/^tcp:\/\/127\.0\.0\.1:\d+$/);
    expect((await svc.model('model')).params.map((p) => p.name)).toContain('moe.router.gate');
    await svc.install(topk({ k: 2 }));
    await svc.install(config().opt);
    // one service at a time: a second one connecting (with the key, as it must on tcp) is refused
    await expect(Service.connect(svc.rt.endpoint, { key })).rejects.toMatchObject({ code: 'E_ARG', message: expect.stringMatching(/another service is attached/) });
    const first = new Promise<number>((resolve) => { void svc.watch((e) => { if (e.point === 'epochEnd') resolve(e.step); }); });
    await svc.ready();
    expect(await first).toBe(5); // five steps whose forward ran the router at its hook point
    expect(svc.script!.child.kill('SIGKILL')).toBe(true);
    expect(await svc.finished()).toBe('was killed by SIGKILL');
    await expect(svc.install(magnitude({ sparsity: 0.5 }))).rejects.toMatchObject({ code: 'E_DEAD' });
    await expect(svc.model('model')).rejects.toMatchObject({ code: 'E_DEAD' });
    await svc.close(); // the long poll pending when it died does not hold this up
  }, 120_000);

  it('a KV policy into a served liaison GPT: the script\'s cached decoding keeps what the same policy keeps on a runtime of its own', async () => {
    const script = join(dir, 'gpt.py');
    const out = join(dir, 'gpt.json');
    // a tiny liaison GPT the script built; it decodes through svc.kv_eval / svc.generate, tells
    // the service at an evaluation point (where the service uninstalls the policy), decodes again
    writeFileSync(script, [
      'import json, sys, torch, liaison_runtime',
      'from liaison_runtime.models import build',
      'torch.manual_seed(0)',
      `m = build(${JSON.stringify(GPT)}, torch.device("cpu"))`,
      'svc = liaison_runtime.serve(m)  # waits for the service\'s ready() (Service.launch asks it to)',
      'tokens = torch.randint(0, 32, (2, 40))',
      'out = {"tokens": tokens.tolist(), "nll": svc.kv_eval(tokens, 8).tolist(), "gen": svc.generate(tokens[:, :8], 24).tolist()}',
      'svc.evaluation({"decoded": 1})',
      'out["full"] = svc.kv_eval(tokens, 8).tolist()',
      'json.dump(out, open(sys.argv[1], "w"))',
      'svc.close()',
    ].join('\n'));
    const svc = await Service.launch(script, { args: [out], env: ONE_THREAD, waitForClientS: 120 });
    made.push(svc);
    const served = await svc.model();
    const policy = () => h2o({ budget: 12, recent: 4 }); // per-token state (acc), evicting from the prefill on
    const installed = policy();
    await svc.install(installed);
    await svc.watch(async (e) => { if (e.point === 'evaluation') await svc.uninstall(installed); }, ['evaluation']);
    const rt = await runtime();
    const ref = await Model.build(rt, GPT);
    await copyWeights(served, ref);
    await svc.ready();
    expect(await svc.finished()).toBe('exited with code 0');
    const got = JSON.parse(readFileSync(out, 'utf8')) as Record<'tokens' | 'nll' | 'gen' | 'full', number[][]>;
    await svc.close();

    const tokens = rt.tensor(BigInt64Array.from(got.tokens.flat(), BigInt), [2, 40], 'i64');
    const prompt = rt.tensor(BigInt64Array.from(got.tokens.flatMap((r) => r.slice(0, 8)), BigInt), [2, 8], 'i64');
    const nll = async () => Array.from((await (rt.call('kv_eval', [ref.handle, tokens, 8]) as Tensor).data()).data as Float32Array);
    const worst = (a: number[], b: number[]) => Math.max(...a.map((x, i) => Math.abs(x - b[i])));
    ref.setKVPolicy(policy());
    const want = await nll();
    const gen = Array.from((await ref.generate(prompt, { steps: 24 }).data()).data as BigInt64Array, Number);
    ref.setKVPolicy(null);
    const full = await nll();
    expect(worst(got.nll.flat(), want)).toBeLessThan(1e-5);
    expect(got.gen.flat()).toEqual(gen);
    expect(worst(got.full.flat(), full)).toBeLessThan(1e-5); // uninstalled at the event: the full cache after it
    expect(worst(want, full)).toBeGreaterThan(1e-3); // the policy did decide what the cache kept
  }, 120_000);

  it('examples/serve-digits.ts: the fast variant starts the plain script, installs both plugins and reports each epoch', async () => {
    const out = join(dir, 'example');
    const { code, out: text, err } = await runExample(['examples/serve-digits.ts', '--out', out], { LIAISON_SERVED_EPOCHS: '2', ...ONE_THREAD });
    expect(code, `${text}\n${err}`).toBe(0);
    expect(text).toMatch(/it serves model/);
    expect(text).toMatch(/script exited with code 0/);
    // epoch 1 trained dense; its end pruned each weight to 80%, held through epoch 2
    const rows = [...text.matchAll(/^\| (\d) \| (\d+) \| ([\d.]+) \| ([\d.]+)% \| ([\d.]+)% \|$/gm)].map((m) => m.slice(1).map(Number));
    expect(rows.map((r) => r[0])).toEqual([1, 2]);
    expect(rows.map((r) => r[1])).toEqual([23, 46]);
    expect(rows[1][2]).toBeLessThan(rows[0][2]);
    for (const r of rows) expect(r[4]).toBeCloseTo(80, 0);
    expect(text).toMatch(/curves: .*serve-digits\.png/);
  }, 180_000);
});
