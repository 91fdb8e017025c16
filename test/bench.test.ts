// The benchmarks still run: each at a tiny size (`--quick`), yielding well-formed records.
// Only the shape of the record is checked: a benchmark's figures never gate a test.
import { describe, expect, it } from 'vitest';
import { jsonLine } from '../bench/lib.js';
import { BENCHMARKS, GROUPS, runBenchmarks } from '../bench/run.js';

const KEYS = ['name', 'value', 'baseline', 'ratio', 'unit', 'target'];

describe('bench --quick', () => {
  for (const g of GROUPS) {
    it(`runs ${g.names.join(', ')}`, async () => {
      const results = await runBenchmarks([...g.names], { quick: true, log: () => undefined });
      expect(results.map((r) => r.name)).toEqual(g.names);
      for (const r of results) {
        const line = jsonLine(r);
        expect(line.startsWith(`{"name": "${r.name}", "value": `)).toBe(true);
        const rec = JSON.parse(line) as Record<string, unknown>;
        expect(Object.keys(rec)).toEqual(KEYS);
        for (const k of ['value', 'baseline', 'ratio'] as const) {
          expect(typeof rec[k]).toBe('number');
          expect(Number.isFinite(rec[k]) && (rec[k] as number) > 0, `${r.name}.${k} = ${String(rec[k])}`).toBe(true);
        }
        // the record rounds value, baseline and ratio to 4 significant digits (each off by at most
        // 5e-4 relative), so value / baseline recomputed from it may be off by up to 1.5e-3
        const exact = (rec.value as number) / (rec.baseline as number);
        expect(Math.abs((rec.ratio as number) - exact) / exact, `${r.name}.ratio`).toBeLessThan(1.6e-3);
        expect(typeof rec.unit).toBe('string');
        expect(typeof rec.target).toBe('string');
        expect((rec.target as string).length).toBeGreaterThan(0);
      }
    }, 180_000);
  }

  it('knows every benchmark of the brief', () => {
    expect([...BENCHMARKS].sort()).toEqual([
      'adapad.step', 'adapter.forward', 'bridge.batched_ops', 'bridge.batched_ops_program', 'bridge.pipelined', 'bridge.roundtrip', 'bridge.transfer64mb',
      'bridge.transfer64mb_socket', 'bridge.vs_pythonia', 'deflation.parallel_vs_sequential', 'deflation.vs_eigh', 'dist.ddp_step', 'dist.parallel_deflation', 'kv.decode_long', 'kv.memory', 'kv.policy_program', 'loop.custom_ts', 'loop.python_optimizer', 'momentum.step', 'pruner.edge_popup_step', 'pruner.loft_comm', 'pruner.mask_overhead', 'router.experts_batched', 'router.forward', 'sdk.program_replay', 'sdk.train_step', 'sdk.weight_hook',
    ]);
  });
});
