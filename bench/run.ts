/**
 * `npm run bench`: the bridge benchmarks, each against a real baseline measured in the
 * same run. Prints a table, then one JSON line per benchmark (docs/architecture.md, "Benchmarks").
 *
 *     npm run bench                       # all of them
 *     npm run bench -- roundtrip transfer # those whose name contains a word
 *     npm run bench -- --quick            # tiny sizes: checks they run, measures nothing
 *
 * Targets are printed, never enforced: the exit code says only whether every benchmark ran.
 */
import { pathToFileURL } from 'node:url';
import { benchBatched } from './bridge_batched.js';
import { benchParallelVsSequential, benchVsEigh } from './deflation.js';
import { benchLatency } from './bridge_latency.js';
import { benchPythonia } from './bridge_pythonia.js';
import { benchTransfer } from './bridge_transfer.js';
import { benchMomentumStep } from './momentum_step.js';
import { benchProgramReplay } from './sdk_program_replay.js';
import { benchTrainStep } from './sdk_train_step.js';
import { benchWeightHook } from './weight_hook.js';
import { benchEdgePopupStep } from './pruner_edge_popup.js';
import { benchPrunerMask } from './pruner_mask.js';
import { benchLoftComm } from './pruner_loft.js';
import { benchDecodeLong } from './kv.js';
import { benchPolicyProgram } from './kv_policy_program.js';
import { benchAdapters } from './adapters.js';
import { benchRouter } from './router.js';
import { benchDist } from './dist.js';
import { benchLoopCustomTs } from './loop_custom_ts.js';
import { benchLoopPythonOptimizer } from './loop_python_optimizer.js';
import { type Bench, type BenchOptions, type BenchResult, jsonLine, table } from './lib.js';

/** Benchmark groups: the names of the records each one yields, and how to run it. */
export const GROUPS: readonly { names: readonly string[]; run: Bench }[] = [
  { names: ['bridge.roundtrip', 'bridge.pipelined'], run: benchLatency },
  { names: ['bridge.transfer64mb', 'bridge.transfer64mb_socket'], run: benchTransfer },
  { names: ['bridge.vs_pythonia'], run: benchPythonia },
  { names: ['bridge.batched_ops', 'bridge.batched_ops_program'], run: benchBatched },
  { names: ['sdk.train_step'], run: benchTrainStep },
  { names: ['sdk.program_replay'], run: benchProgramReplay },
  { names: ['deflation.parallel_vs_sequential'], run: benchParallelVsSequential },
  { names: ['deflation.vs_eigh'], run: benchVsEigh },
  { names: ['momentum.step'], run: benchMomentumStep },
  { names: ['sdk.weight_hook'], run: benchWeightHook },
  { names: ['pruner.edge_popup_step'], run: benchEdgePopupStep },
  { names: ['pruner.mask_overhead'], run: benchPrunerMask },
  { names: ['pruner.loft_comm'], run: benchLoftComm },
  { names: ['kv.decode_long', 'kv.memory'], run: benchDecodeLong },
  { names: ['kv.policy_program'], run: benchPolicyProgram },
  { names: ['adapter.forward', 'adapad.step'], run: benchAdapters },
  { names: ['router.forward', 'router.experts_batched'], run: benchRouter },
  { names: ['dist.ddp_step', 'dist.parallel_deflation'], run: benchDist },
  { names: ['loop.custom_ts'], run: benchLoopCustomTs },
  { names: ['loop.python_optimizer'], run: benchLoopPythonOptimizer },
];

export const BENCHMARKS: readonly string[] = GROUPS.flatMap((g) => g.names);

/**
 * Run the groups holding a benchmark whose name contains one of `filters` (all when
 * empty) and return the records of the selected benchmarks. `quick` runs each at a tiny
 * size (what the test suite uses).
 */
export async function runBenchmarks(filters: readonly string[] = [], opts: Partial<Omit<BenchOptions, 'wants'>> = {}): Promise<BenchResult[]> {
  const wanted = (name: string) => !filters.length || filters.some((f) => name.includes(f));
  const o: BenchOptions = { quick: opts.quick ?? false, log: opts.log ?? ((l) => process.stderr.write(`  ${l}\n`)), wants: wanted };
  const out: BenchResult[] = [];
  for (const g of GROUPS) {
    if (!g.names.some(wanted)) continue;
    const t0 = Date.now();
    o.log(`[${g.names.join(', ')}]`);
    const rs = await g.run(o);
    o.log(`  (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    out.push(...rs.filter((r) => wanted(r.name)));
  }
  return out;
}

async function main(argv: string[]): Promise<number> {
  const quick = argv.includes('--quick');
  const filters = argv.filter((a) => !a.startsWith('--'));
  const unknown = filters.filter((f) => !BENCHMARKS.some((b) => b.includes(f)));
  if (unknown.length) {
    process.stderr.write(`no benchmark matches ${unknown.join(', ')}; there are: ${BENCHMARKS.join(', ')}\n`);
    return 2;
  }
  const t0 = Date.now();
  process.stderr.write(`Liaison benchmarks${quick ? ' (quick: tiny sizes, the numbers mean nothing)' : ''}; ` +
    'medians, each baseline measured in the same run. Noisy machines: read the ratios.\n');
  const results = await runBenchmarks(filters, { quick });
  console.log(`\n${table(results)}\n`);
  for (const r of results) console.log(jsonLine(r));
  process.stderr.write(`\n${results.length} benchmarks in ${((Date.now() - t0) / 1000).toFixed(0)} s; targets met: ${results.filter((r) => r.met).length}/${results.length}\n`);
  return 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(
    (code) => { process.exitCode = code; }, // no process.exit: leaving by itself proves the cleanup
    (e: unknown) => {
      process.stderr.write(`bench failed: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
      process.exit(1);
    },
  );
}
