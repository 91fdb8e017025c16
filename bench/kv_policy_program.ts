/**
 * kv.policy_program: greedy decoding with the Scissorhands policy as the traced program
 * installed at every layer's `kv` hook (plugins/kv-policies/scissorhands.ts, replayed by the
 * runtime per layer per step) against the same policy hand-written in Python
 * (`baselines/kv_scissorhands.py`): a plain callable made through the pythonia hatch
 * (docs/python-hatch.md), adopted by the runtime and installed with `model_hook` at the same
 * hook of the same model. Same runtime, model,
 * prompt and hook options (budget, evict, …): only the policy's calling path differs. The
 * generated tokens must agree, or the two were not the same policy.
 *
 * The hatch opens once per Node process and refuses a process that already used pythonia
 * (bridge.vs_pythonia does), so the measurement runs in a child Node process
 * (`node --import tsx bench/kv_policy_program.ts --child SIZE`), which prints one JSON line.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startWithPython } from '../bridge/index.js';
import { scissorhands } from '../plugins/kv-policies/scissorhands.js';
import { kvHookOptions } from '../sdk/families/kv-policies/base.js';
import { BASELINES, type BenchOptions, type BenchResult, median, result } from './lib.js';
import { decoder, fixedPrompt } from './kv.js';

interface Size { steps: number; budget: number; rounds: number; quick: boolean }
interface ChildReport { traced: number[]; python: number[]; which: string; shape: string; same: boolean }

export async function benchPolicyProgram(opts: BenchOptions): Promise<BenchResult[]> {
  const size: Size = opts.quick ? { steps: 24, budget: 8, rounds: 1, quick: true } : { steps: 1024, budget: 128, rounds: 5, quick: false };
  const r = await runChild(size, opts.log);
  if (!r.same) throw new Error('kv.policy_program: the traced program and the Python policy generated different tokens: not the same policy');
  const v = median(r.traced), b = median(r.python);
  opts.log(`kv.policy_program: traced ${(v * 1000).toFixed(0)} ms, hand-written Python ${(b * 1000).toFixed(0)} ms per decode of ${size.steps} tokens`);
  return [result({
    name: 'kv.policy_program', value: v * 1000, baseline: b * 1000, unit: 'ms', target: '<= 1.2x', met: v / b <= 1.2,
    note: `greedy decode of ${size.steps} tokens, scissorhands budget ${size.budget} at every layer: traced program vs a Python callable at the same hook (pythonia hatch); ${r.which}, ${r.shape}; median of ${r.traced.length} each, alternating, 1 thread; ${(size.steps / v).toFixed(0)} vs ${(size.steps / b).toFixed(0)} tokens/s`,
  })];
}

/** Run the measurement in a child Node process (see the header); resolves with its report. */
function runChild(size: Size, log: (l: string) => void): Promise<ChildReport> {
  const file = fileURLToPath(import.meta.url);
  // one intra-op thread, as the other runtime benchmarks: the hatch's interpreter takes no --threads, so
  // OpenMP's own variable sets it (two threads' spin-waits on a busy 2-core machine cost 10x)
  const env = { ...process.env, OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' };
  const child = spawn(process.execPath, ['--import', 'tsx', file, '--child', JSON.stringify(size)], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '', err = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => {
    err = (err + s).slice(-4000);
    for (const l of s.split('\n')) if (l.startsWith('kv.policy_program:')) log(l);
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{"traced"'));
      if (code === 0 && line) resolve(JSON.parse(line) as ChildReport);
      else reject(new Error(`kv.policy_program's child exited with ${code}:\n${err.trim()}\n${out.trim()}`));
    });
  });
}

async function child(size: Size): Promise<ChildReport> {
  const rt = await startWithPython();
  try {
    const sys = await rt.python.import('sys');
    await (await sys.path).insert(0, BASELINES);
    const base = await rt.python.import('kv_scissorhands');
    const { model, spec, which } = await decoder(rt, size.quick);
    const policy = scissorhands({ budget: size.budget });
    const { window, threshold } = policy.config;
    // the Python policy, handed to the runtime by reference: model_hook takes any callable
    const pyHook = await rt.adopt(await base.scissorhands(window, policy.recent, threshold));
    const layers = Array.from({ length: model.hookPoints.kv }, (_, i) => i);
    const prompt = fixedPrompt(16, spec.vocab);
    const p = rt.tensor(prompt, [1, prompt.length], 'i64');

    const decode = async (side: 'traced' | 'python'): Promise<{ seconds: number; tokens: string }> => {
      // the same hook options (budget, evict, state init, …) on both sides
      if (side === 'traced') model.setKVPolicy(policy);
      else rt.call('model_hook', [model.handle, 'kv', pyHook, { ...kvHookOptions(policy), layers }], undefined, 0);
      await rt.flush();
      const t0 = performance.now();
      const out = model.generate(p, { steps: size.steps });
      const data = (await out.toArray()) as BigInt64Array;
      const seconds = (performance.now() - t0) / 1000;
      out.free();
      return { seconds, tokens: data.join(',') };
    };
    const warm = size.quick ? 0 : 1;
    for (let i = 0; i < warm; i++) { await decode('traced'); await decode('python'); }
    const traced: number[] = [], python: number[] = [];
    const last = { traced: '', python: '' };
    for (let r = 0; r < size.rounds; r++) {
      const order: ('traced' | 'python')[] = r % 2 ? ['python', 'traced'] : ['traced', 'python'];
      for (const side of order) {
        const d = await decode(side);
        (side === 'traced' ? traced : python).push(d.seconds);
        last[side] = d.tokens;
        process.stderr.write(`kv.policy_program: ${side} ${(size.steps / d.seconds).toFixed(1)} tokens/s\n`);
      }
    }
    p.free();
    pyHook.free();
    model.free();
    return { traced, python, which, shape: `${spec.layers} layers, dim ${spec.dim}, ${spec.heads} heads`, same: last.traced === last.python };
  } finally {
    await rt.close();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv[2] === '--child') {
  child(JSON.parse(process.argv[3]) as Size).then(
    (r) => { console.log(JSON.stringify(r)); },
    (e: unknown) => {
      process.stderr.write(`${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
