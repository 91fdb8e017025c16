/**
 * The model spec's generated artifacts, from the TypeBox schemas in sdk/model-spec.ts (the
 * one place a model kind's fields are defined):
 *
 *  - python-runtime/liaison_runtime/models/spec.schema.json: the JSON Schema the runtime
 *    checks every `model_build` spec against (wire names, defaults, ranges);
 *  - the field tables of docs/models.md, between its `model-specs` markers.
 *
 *     npx tsx scripts/model-spec-schema.ts           # write both
 *     npx tsx scripts/model-spec-schema.ts --check   # exit 1 when either is stale
 *
 * test/model-spec-schema.test.ts fails when either is not what this script writes.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { TObject, TSchema } from '@sinclair/typebox';
import { MODEL_SPECS, MoESpec, wireName, wireSchema } from '../sdk/model-spec.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** Where the runtime's copy of the schema lives (shipped with the Python package). */
export const SPEC_SCHEMA = join(ROOT, 'python-runtime', 'liaison_runtime', 'models', 'spec.schema.json');
/** The page whose field tables are generated. */
export const MODEL_DOCS = join(ROOT, 'docs', 'models.md');

export const BEGIN = '<!-- model-specs:begin — generated from sdk/model-spec.ts by `npx tsx scripts/model-spec-schema.ts`; do not edit by hand -->';
export const END = '<!-- model-specs:end -->';

/** The schema file's text: stable key order as written, two-space indent, a final newline. */
export function renderSchema(): string {
  return `${JSON.stringify(wireSchema(), null, 2)}\n`;
}

const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** A field's kind in words, from its schema: `integer ≥ 1`, `"relu" | "gelu"`, `list of ≥ 2 × integer ≥ 1`. */
function kindOf(s: TSchema): string {
  if (s.const !== undefined) return `\`${JSON.stringify(s.const)}\``;
  if (Array.isArray(s.enum)) return s.enum.map((e) => `\`${JSON.stringify(e)}\``).join(' | ');
  if (s.liaisonWire) return 'a router plugin instance';
  if (s.type === 'integer' || s.type === 'number') {
    const lo = s.minimum !== undefined ? `≥ ${s.minimum}` : '';
    return s.exclusiveMaximum !== undefined ? `${s.type} in [${s.minimum ?? '−∞'}, ${s.exclusiveMaximum})` : `${s.type}${lo ? ` ${lo}` : ''}`;
  }
  if (s.type === 'array') {
    const n = s.minItems === s.maxItems ? `${s.minItems}` : `≥ ${s.minItems}`;
    return `list of ${n} × ${kindOf(s.items as TSchema)}`;
  }
  if (s.type === 'object') return s.properties ? 'object (below)' : 'map';
  return String(s.type);
}

function table(schema: TObject): string[] {
  const required = new Set(schema.required ?? []);
  const rows = Object.entries(schema.properties as Record<string, TSchema>).map(([k, s]) => {
    const wire = (s.liaisonWire as { name: string } | undefined)?.name ?? wireName(k);
    const dflt = required.has(k) ? 'required' : s.default !== undefined ? `\`${JSON.stringify(s.default)}\`` : 'none';
    return `| \`${k}\` | \`${wire}\` | ${cell(kindOf(s))} | ${dflt} | ${cell(s.description ?? '')} |`;
  });
  return ['| field | on the wire | value | default | |', '|---|---|---|---|---|', ...rows];
}

/** The generated section of docs/models.md, markers included. */
export function renderModelSection(): string {
  const out = [BEGIN, ''];
  for (const [kind, schema] of Object.entries(MODEL_SPECS)) {
    out.push(`#### \`${kind}\``, '', schema.description ?? '', '', ...table(schema), '');
    if (kind === 'gpt') out.push('`moe`:', '', ...table(MoESpec), '');
  }
  out.push(END);
  return out.join('\n');
}

/** docs/models.md with its generated section replaced (the markers must be there once each). */
export function renderModelDocs(page: string): string {
  const a = page.indexOf(BEGIN), b = page.indexOf(END);
  if (a < 0 || b < a) throw new Error(`${MODEL_DOCS} lacks the markers ${BEGIN} … ${END}`);
  return page.slice(0, a) + renderModelSection() + page.slice(b + END.length);
}

function main(): void {
  const page = readFileSync(MODEL_DOCS, 'utf8');
  const want: [string, string][] = [[SPEC_SCHEMA, renderSchema()], [MODEL_DOCS, renderModelDocs(page)]];
  if (process.argv.includes('--check')) {
    const stale = want.filter(([path, text]) => {
      try { return readFileSync(path, 'utf8') !== text; } catch { return true; }
    });
    for (const [path] of stale) console.error(`${path} is stale: run npx tsx scripts/model-spec-schema.ts`);
    if (stale.length) process.exit(1);
    return;
  }
  for (const [path, text] of want) writeFileSync(path, text);
  console.log(`wrote ${want.map(([p]) => p).join(', ')}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) main();
