// examples/moe-teacher-student.ts in its fast variant, run as a user runs it: the table's
// rows, the PNGs, and what the experiment is about — the soft student's neurons and router
// directions align with the teacher's over the feature-learning phase, fine-tuning brings
// the pruned student's loss down from where pruning left it — checked where the margins
// are wide. And the pruning surgery of examples/moe-lib.ts against the model it cuts.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Runtime } from '../bridge/index.js';
import { soft } from '../plugins/routers/soft.js';
import { Model } from '../sdk/index.js';
import { buildMoE, initStudent, keepByScale, keepOf, type MoESize, neuronScales, prune } from '../examples/moe-lib.js';
import { runExample, startRuntime } from './helpers.js';

const dirs: string[] = [];
afterAll(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

/** The markdown table's rows (header first) as trimmed cells, the separator checked and dropped. */
function markdownRows(path: string): string[][] {
  const rows = readFileSync(path, 'utf8').split('\n').filter((l) => l.startsWith('|')).map((l) => l.slice(1, -1).split('|').map((c) => c.trim()));
  expect(rows[1].every((c) => c === '---')).toBe(true);
  return [rows[0], ...rows.slice(2)];
}
const meanOf = (cell: string) => Number(cell.split(' ')[0]);

describe('examples/moe-teacher-student.ts', () => {
  it('learns the teacher with a soft student (alignment rises), prunes, fine-tunes, and contrasts a top-1 student', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'liaison-moe-ts-'));
    dirs.push(dir);
    const env = { LIAISON_MOE_STEPS: '500', LIAISON_MOE_FT_STEPS: '100', LIAISON_MOE_SAMPLES: '2048', LIAISON_MOE_POINTS: '2' };
    const { code, out, err } = await runExample(['examples/moe-teacher-student.ts', '--out', dir], env);
    expect(code, `${out}\n${err}`).toBe(0);
    const [header, ...rows] = markdownRows(join(dir, 'moe-teacher-student.md'));
    expect(header).toEqual(['student', 'phase', 'experts', 'neurons', 'steps', 'train loss', 'held-out loss', 'neuron alignment: mean (min)', 'router alignment: mean (min)']);
    const phases = ['init', 'feature learning', 'pruned by scale', 'fine-tuned (by scale)', 'pruned to best matches', 'fine-tuned (to best matches)', 'not pruned, trained on'];
    expect(rows.map((r) => `${r[0]}/${r[1]}`)).toEqual(['soft', 'top-1'].flatMap((k) => phases.map((p) => `${k}/${p}`)));
    const at = (kind: string, phase: string) => rows.find((r) => r[0] === kind && r[1] === phase)!;
    for (const r of rows) for (const c of [r[5], r[6]]) expect(Number.isFinite(Number(c)), r.join(' | ')).toBe(true);
    // feature learning: from 0.40 (neurons) and 0.28 (routers) at init to ~0.7 after 500 steps
    const [init, learnt] = [at('soft', 'init'), at('soft', 'feature learning')];
    expect(meanOf(learnt[7])).toBeGreaterThan(meanOf(init[7]) + 0.15);
    expect(meanOf(learnt[8])).toBeGreaterThan(meanOf(init[8]) + 0.15);
    expect(Number(learnt[6])).toBeLessThan(Number(init[6]) / 3);
    // the best-match rule keeps one student neuron per teacher neuron at most: ≤ 8 neurons
    expect(Number(at('soft', 'pruned to best matches')[3])).toBeLessThanOrEqual(8);
    // pruning costs training loss that fine-tuning wins back (to best matches: ≈ 0.4 → ≈ 0.1 here)
    for (const rule of ['by scale', 'to best matches']) {
      const [cut, tuned] = [at('soft', `pruned ${rule}`), at('soft', `fine-tuned (${rule})`)];
      expect(Number(tuned[5]), rule).toBeLessThan(Number(cut[5]));
    }
    for (const f of ['moe-teacher-student-loss.png', 'moe-teacher-student-alignment.png']) {
      const png = readFileSync(join(dir, f));
      expect([...png.subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
      expect(png.length).toBeGreaterThan(10_000);
    }
  }, 240_000);
});

describe('the soft router in a moe model, and examples/moe-lib.ts pruning', () => {
  let rt: Runtime;
  beforeAll(async () => { rt = await startRuntime(); });
  afterAll(async () => { await rt?.close(); });

  it("soft routing is the paper's mixture: y = Σ_e softmax(g(x))_e · expert_e(x), g linear or act(x·W1)·W2", async () => {
    const x = rt.randn([5, 6], { seed: 7 });
    // the experiment compares linear router directions: it refuses a non-linear router, saying why
    await expect(buildMoE(rt, { d: 6, experts: 3, hidden: 2 }, soft({ hidden: 4 }), 8)).rejects.toThrow(/needs a linear router/);
    for (const router of [soft({ std: 0.5 }), soft({ hidden: 4, activation: 'gelu', std: 0.5 })]) {
      const m = await Model.build(rt, { kind: 'moe', inputs: 6, outputs: 1, experts: 3, hidden: 2, router, activation: 'relu' }, { seed: 9 });
      const p = (n: string) => m.param(n);
      const logits = router.config.hidden > 0 ? x.matmul(p('moe.router.w1')).gelu().matmul(p('moe.router.w2')) : x.matmul(p('moe.router.gate'));
      const probs = logits.softmax(-1); // (5, 3)
      const outs = [0, 1, 2].map((e) => x.matmul(p(`moe.experts.${e}.fc.weight`).T).relu().matmul(p(`moe.experts.${e}.proj.weight`).T)); // (5, 1) each
      const want = outs.map((o, e) => o.mul(probs.narrow(1, e, 1))).reduce((a, b) => a.add(b));
      const [got, exp] = await Promise.all([m.forward(x, { train: false }).toArray(), want.toArray()]);
      expect(Array.from(got as Float32Array)).toEqual(Array.from(exp as Float32Array).map((v) => expect.closeTo(v, 5)));
      expect(m.params.filter((q) => q.name.startsWith('moe.router.')).map((q) => `${q.name} ${q.shape}`)).toEqual(router.config.hidden > 0 ? ['moe.router.w1 6,4', 'moe.router.w2 4,3'] : ['moe.router.gate 6,3']);
      m.free();
    }
  });

  it('keeps neurons by scale and by index, grouped by expert', () => {
    expect([...keepByScale([1, 0.1, 0.5, 0, 0, 0, 2, 0.7], 2, 0.3)]).toEqual([[0, [0]], [3, [0, 1]]]);
    expect([...keepOf([7, 0, 7, 3], 2)]).toEqual([[0, [0]], [1, [1]], [3, [1]]]);
  });

  it('surgery: keeping every expert computes the student with the dropped neurons zeroed; dropped experts leave the softmax', async () => {
    const size: MoESize = { d: 6, experts: 3, hidden: 3 };
    const student = await buildMoE(rt, size, soft({}), 1);
    await initStudent(student, size, 1, 0.5, 2);
    const x = rt.randn([5, 6], { seed: 3 });
    // drop neuron 1 of expert 0 and neurons 0, 2 of expert 2: expert 2 keeps 1, the pruned model has H' = 3
    const keep = keepOf([0, 2, 3, 4, 5, 7], 3);
    const { model, size: cut, neurons } = await prune(student, size, keep, soft({}), 4);
    expect([cut.experts, cut.hidden, neurons]).toEqual([3, 3, 6]);
    const y = Array.from(await model.forward(x, { train: false }).toArray() as Float32Array);
    const mask = (keepH: number[]) => rt.tensor(new Float32Array([0, 1, 2].map((h) => (keepH.includes(h) ? 1 : 0))), [1, 3]);
    student.loadState({
      'moe.experts.0.proj.weight': student.param('moe.experts.0.proj.weight').mul(mask([0, 2])),
      'moe.experts.2.proj.weight': student.param('moe.experts.2.proj.weight').mul(mask([1])),
    }, { strict: false });
    const want = Array.from(await student.forward(x, { train: false }).toArray() as Float32Array);
    expect(y).toEqual(want.map((v) => expect.closeTo(v, 5)));
    // expert 1 dropped: the scale rule leaves an expert out, and its router column with it
    const scales = await neuronScales(student, size);
    expect(scales[1]).toBe(0);
    const two = await prune(student, size, keepOf([0, 2, 7], 3), soft({}), 5);
    expect([two.size.experts, two.size.hidden]).toEqual([2, 2]);
    expect(two.model.params.find((p) => p.name === 'moe.router.gate')!.shape).toEqual([6, 2]);
    for (const m of [model, two.model, student]) m.free();
  });
});
