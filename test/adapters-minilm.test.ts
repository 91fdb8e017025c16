// examples/manpages.ts (the groff text, the balanced split by page) on pages made here, and
// examples/adapters-minilm.ts run as a user runs it (tiny settings): all-MiniLM-L6-v2 from its
// package, the man pages of this machine, the head-only probe, the adapter plugins at one budget.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, describe, expect, it } from 'vitest';
import type { Run } from '../examples/adapters-lib.js';
import { loadManPages, MAN_ROOT, pageText, unescape } from '../examples/manpages.js';
import { runExample } from './helpers.js';

const OUT = mkdtempSync(join(tmpdir(), 'liaison-minilm-'));
afterAll(() => rmSync(OUT, { recursive: true, force: true }));

const MAN = `.\\" a comment
.TH LS 1
.SH NAME
ls \\- list directory contents
.SH SYNOPSIS
.B ls
[\\fI\\,OPTION\\/\\fR]...
.SH DESCRIPTION
.\\" Add any additional description here
.PP
List information about the FILEs (the current directory by default).
Sort entries if none of \\fB\\-cftuvSUX\\fR nor
.BR \\-\\-sort " is " given .
.TP
.SH "SEE ALSO"
dir(1)
`;
const MDOC = `.Dd May 1, 2020
.Sh NAME
.Nm cat
.Nd concatenate files
.Sh DESCRIPTION
The
.Nm
utility reads files; with
.Fl n Ar file
it numbers lines \\(em all of them.
.Sh EXIT STATUS
0
`;

describe('examples/manpages.ts', () => {
  it('reads NAME and DESCRIPTION out of man and mdoc groff, escapes and layout macros dropped', () => {
    expect(pageText(MAN)).toBe('ls - list directory contents. List information about the FILEs (the current directory by default). Sort entries if none of -cftuvSUX nor --sort is given.');
    expect(pageText(MDOC)).toBe('cat - concatenate files. The utility reads files; with n file it numbers lines - all of them.');
    expect(unescape('\\fBa\\fP \\(lqb\\(rq \\e \\*(Tm\\s-1c\\s0\\&')).toBe('a "b" \\ c');
    expect(pageText('.SH SYNOPSIS\nfoo\n')).toBe('');
  });

  it('keeps real pages only (no links, redirects, repeated text), balances the sections and holds out the first fifth by hash', () => {
    const root = join(OUT, 'man');
    for (const s of [1, 2, 3, 5, 8]) {
      const dir = join(root, `man${s}`);
      mkdirSync(dir, { recursive: true });
      const pages = s === 5 ? 6 : 12;
      for (let i = 0; i < pages; i++) writeFileSync(join(dir, `p${s}x${i}.${s}.gz`), gzipSync(`.SH NAME\np${s}x${i} \\- page ${i} of section ${s}\n.SH DESCRIPTION\nText number ${i}.\n`));
      writeFileSync(join(dir, `redirect.${s}.gz`), gzipSync(`.so man${s}/p${s}x0.${s}\n`));
      symlinkSync(join(dir, `p${s}x1.${s}.gz`), join(dir, `link.${s}.gz`));
    }
    writeFileSync(join(root, 'man2', 'again.2.gz'), gzipSync('.SH NAME\np1x0 \\- page 0 of section 1\n.SH DESCRIPTION\nText number 0.\n'));
    const d = loadManPages({ root });
    expect(d.available).toEqual({ 1: 12, 2: 12, 3: 12, 5: 6, 8: 12 }); // again.2 repeats p1x0's text
    expect(d.train.length).toBe(5 * 4);
    expect(d.test.length).toBe(5 * 2); // ceil(6 / 5) of each
    expect(new Set(d.test.map((p) => p.label))).toEqual(new Set([0, 1, 2, 3, 4]));
    const names = new Set(d.train.map((p) => p.name));
    expect(d.test.some((p) => names.has(p.name))).toBe(false);
    for (const p of [...d.train, ...d.test]) expect(p.text).toMatch(new RegExp(`^${p.name.split('.')[0]} - page \\d+ of section ${p.section}\\. Text`));
    expect(loadManPages({ root })).toEqual(d); // deterministic
    expect(loadManPages({ root, perClass: 3 }).train.length).toBe(5 * 2);
    expect(() => loadManPages({ root: join(OUT, 'none') })).toThrow(/only 0 usable pages/);
  });
});

describe.skipIf(!existsSync(join(MAN_ROOT, 'man5')))('examples/adapters-minilm.ts', () => {
  it('fine-tunes MiniLM on manual-page sections: the pretrained weights used, head only, full, lora, adalora, adapad at one budget, tables and plots', async () => {
    const dir = join(OUT, 'run');
    const env = { LIAISON_ADAPTERS_SEEDS: '1', LIAISON_ADAPTERS_RANKS: '1', LIAISON_MINILM_EPOCHS: '1', LIAISON_MINILM_PER_CLASS: '10', LIAISON_MINILM_TOKENS: '24', LIAISON_MINILM_LAYERS: '1' };
    const { code, out, err } = await runExample(['examples/adapters-minilm.ts', '--out', dir], env);
    expect(code, `${out}\n${err}`).toBe(0);
    expect(out).toMatch(/40 to train on, 10 held out, 24 tokens each/);
    expect(out).toMatch(/head only, random-init encoder +— +0 +1,925 +0% +[\d.]+%/);
    const j = JSON.parse(readFileSync(join(dir, 'adapters-minilm.json'), 'utf8')) as { similarity: { paraphrase: number; unrelated: number }[]; runs: Run[]; steps: number; modules: number; first: number; total: number };
    // pretrained: paraphrases far closer than unrelated sentences; at random init every text looks alike
    expect(j.similarity[0].paraphrase).toBeGreaterThan(j.similarity[0].unrelated + 0.25);
    expect(Math.abs(j.similarity[1].paraphrase - j.similarity[1].unrelated)).toBeLessThan(0.1);
    expect(j.first).toBe(5);
    expect(j.modules).toBe(6); // layer 5's query, key, value, attention output, feed-forward in and out
    expect(j.total).toBe(4 * (384 * 384 + 384) + 2 * 384 * 1536 + 1536 + 384 + 4 * 384 + 384 * 5 + 5);
    expect(j.steps).toBe(3); // one epoch of 40 pages in batches of 16
    expect(j.runs.map((r) => r.method)).toEqual(['lora', 'adalora', 'adapad', 'adapad-c1']);
    const lora = j.runs[0];
    expect(lora.params).toBe(4 * 768 + 2 * 1920); // one component: in + out of each module
    expect(Object.keys(lora.pattern)).toEqual(['query', 'key', 'value', 'attention.output.dense', 'intermediate.dense', 'output.dense'].map((m) => `encoder.layer.5.${m.includes('.') ? m : `attention.self.${m}`}`));
    // one component per module, nothing to grow: adapad trains what lora trains
    expect(j.runs[2].quality).toBeCloseTo(lora.quality, 6);
    for (const f of ['adapters-minilm.md', 'adapters-minilm.png']) expect(existsSync(join(dir, f)), f).toBe(true);
  }, 300_000);
});
