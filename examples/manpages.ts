/**
 * A labelled text task that ships with the operating system: the Debian manual pages under
 * /usr/share/man, each page's NAME and DESCRIPTION as text, labelled by its section (1 user
 * commands, 2 system calls, 3 library functions, 5 file formats, 8 administration commands).
 * Used by examples/adapters-minilm.ts.
 *
 * Pages are groff (`man` or `mdoc` macros), gzipped. A page that is a link or a `.so`
 * redirect to another is skipped (its text is the other's), and so is one whose text another
 * page already gave; so are the Google Cloud SDK's 16,631 generated `gcloud_*` pages of
 * section 1 (one tool's, alike: a sample of section 1 would be nearly all of them). The classes are balanced (every section the size of the smallest, or
 * `perClass`), and the split is by page, deterministic: within a section the pages are
 * ordered by a hash of their file name, the first `perClass` kept, and the first fifth of
 * those held out.
 */
import { lstatSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';

export const MAN_ROOT = '/usr/share/man';
export const SECTIONS = [1, 2, 3, 5, 8] as const;

/** One page: its file name, section (the label is its index in SECTIONS) and text. */
export interface ManPage {
  name: string;
  section: number;
  label: number;
  text: string;
}

// font, size and quoting macros whose arguments are text (man: .B .I .BR …; mdoc: .Nm .Nd .Xr …)
const TEXT_MACROS = new Set(['B', 'I', 'BR', 'BI', 'IB', 'IR', 'RB', 'RI', 'SM', 'SB', 'Nm', 'Nd', 'Xr', 'Fn', 'Fa', 'Ft', 'Ar', 'Fl', 'Cm', 'Pa', 'Em', 'Sy', 'Va', 'Dv', 'Er', 'Ev', 'Li', 'Ql', 'Dq', 'Sq', 'Pq', 'Op', 'Ic', 'Tn', 'Ux', 'Bx', 'Dl', 'It', 'Lk', 'Mt', 'Aq', 'Ao', 'Ac', 'St', 'Lb', 'Vt']);
// mdoc's callable macros inside a text macro's line (`.Fl a Ar file` -> "-a file")
const MDOC_INLINE = /^(?:Ar|Fl|Cm|Pa|Xr|Ns|Em|Sy|Va|Dv|Er|Ev|Li|Ql|Dq|Sq|Pq|Op|Ic|Fn|Fa|Ft|Nm|Aq|Ao|Ac|Oo|Oc|Pf|No|Tn|Ux|Bx|Lk|Mt|Vt)$/;

/** groff escapes -> plain text (fonts and sizes dropped, the common glyphs spelled). */
export function unescape(s: string): string {
  return s
    .replace(/\\f(?:\[[^\]]*\]|\([A-Za-z]{2}|[A-Za-z0-9])/g, '')
    .replace(/\\s[+-]?\d/g, '')
    .replace(/\\\*(?:\[[^\]]*\]|\(..|.)/g, '')
    .replace(/\\\((?:em|en|hy)/g, '-').replace(/\\\((?:lq|rq|dq)/g, '"').replace(/\\\((?:aq|oq|cq)/g, "'")
    .replace(/\\\(../g, '').replace(/\\\[[^\]]*\]/g, '')
    // one pass, so that the backslash \e gives is not read as an escape again
    .replace(/\\(.)/g, (_, c: string) => (c === 'e' ? '\\' : '&c,/%|^:)'.includes(c) ? '' : c));
}

/** A macro line's arguments, "quoted strings" kept whole. */
function args(line: string): string[] {
  return [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
}

/** The text of a page's NAME and DESCRIPTION sections (empty when it has neither). */
export function pageText(groff: string): string {
  const out: Record<'NAME' | 'DESCRIPTION', string[]> = { NAME: [], DESCRIPTION: [] };
  let section: string | null = null;
  for (const raw of groff.split('\n')) {
    if (/^['.]\s*\\"/.test(raw)) continue; // comment
    const head = /^[.']\s*(SH|Sh)\s+(.*)$/.exec(raw);
    if (head) {
      const title = head[2].replace(/"/g, '').trim().toUpperCase();
      section = title === 'NAME' || title === 'DESCRIPTION' ? title : null;
      continue;
    }
    if (section === null) continue;
    let line = raw;
    if (/^[.']/.test(raw)) {
      const [macro, ...rest] = args(raw.slice(1).trim());
      if (!macro || !TEXT_MACROS.has(macro)) continue; // layout: .PP .TP .RS .nf .Bl …
      line = rest.filter((w) => !MDOC_INLINE.test(w)).join(macro.length === 2 && /[a-z]/.test(macro[1]) ? ' ' : '');
      if (macro === 'Nd') line = `- ${line}`;
    }
    out[section as 'NAME' | 'DESCRIPTION'].push(unescape(line));
  }
  const join1 = (xs: string[]) => xs.join(' ').replace(/\s+/g, ' ').trim();
  const name = join1(out.NAME), desc = join1(out.DESCRIPTION);
  return name || desc ? `${name}. ${desc}`.trim() : '';
}

/** FNV-1a of a string: the pages' order, the same on every machine. */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** Every usable page of `section` under `root`, in hash order. */
export function sectionPages(section: number, root = MAN_ROOT, maxChars = 1000): ManPage[] {
  const dir = join(root, `man${section}`);
  let files: string[];
  try {
    files = readdirSync(dir);
  } catch {
    return [];
  }
  const label = SECTIONS.indexOf(section as (typeof SECTIONS)[number]);
  const pages: ManPage[] = [];
  for (const name of files) {
    if (name.startsWith('gcloud')) continue;
    const path = join(dir, name);
    if (!lstatSync(path).isFile()) continue; // a link: another page's text
    let groff: string;
    try {
      const raw = readFileSync(path);
      groff = (name.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8');
    } catch {
      continue;
    }
    if (/^\.so\s/m.test(groff.split('\n').filter((l) => !/^['.]\s*\\"/.test(l)).slice(0, 3).join('\n'))) continue; // a redirect
    const text = pageText(groff).slice(0, maxChars);
    if (text.length >= 20) pages.push({ name, section, label, text });
  }
  return pages.sort((a, b) => fnv1a(a.name) - fnv1a(b.name) || (a.name < b.name ? -1 : 1));
}

/**
 * The task: `perClass` pages of each section (default, and at most, the smallest section's
 * count), the first fifth of each section held out. Pages whose text another page gave are
 * dropped first (the lower section keeps it).
 */
export function loadManPages(opts: { perClass?: number; root?: string; maxChars?: number } = {}): { train: ManPage[]; test: ManPage[]; available: Record<number, number> } {
  const seen = new Set<string>();
  const bySection = SECTIONS.map((s) => sectionPages(s, opts.root, opts.maxChars).filter((p) => !seen.has(p.text) && !!seen.add(p.text)));
  const available = Object.fromEntries(SECTIONS.map((s, i) => [s, bySection[i].length]));
  const n = Math.min(opts.perClass ?? Infinity, ...bySection.map((p) => p.length));
  if (n < 2) throw new Error(`manual pages: only ${n} usable pages in some section of ${SECTIONS.join(', ')} under ${opts.root ?? MAN_ROOT} (install man pages: apt-get install manpages manpages-dev)`);
  const held = Math.ceil(n / 5);
  return {
    train: bySection.flatMap((p) => p.slice(held, n)),
    test: bySection.flatMap((p) => p.slice(0, held)),
    available,
  };
}
