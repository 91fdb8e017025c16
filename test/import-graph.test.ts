/**
 * The import graph of the TypeScript source: no cycles (type-only imports count: a cycle of
 * types still ties two modules' concerns together), and one-way layers
 * examples → plugins → sdk → bridge. Imports are read with TypeScript's own pre-processor,
 * so `import type`, `export … from` and dynamic `import()` are all seen.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(import.meta.dirname, '..');
/** Lowest first: a module may import its own layer and those below it. */
const LAYERS = ['bridge', 'sdk', 'plugins', 'examples'] as const;

type Graph = Map<string, string[]>;

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const f of readdirSync(dir)) {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

/** Every relative import of every module under `dirs`, as paths relative to the repository. */
function importGraph(dirs: readonly string[]): Graph {
  const g: Graph = new Map();
  for (const file of dirs.flatMap((d) => sources(join(ROOT, d)))) {
    const deps: string[] = [];
    for (const { fileName } of ts.preProcessFile(readFileSync(file, 'utf8'), true, true).importedFiles) {
      if (!fileName.startsWith('.')) continue; // a package
      const target = resolve(dirname(file), fileName).replace(/\.js$/, '.ts');
      if (existsSync(target)) deps.push(relative(ROOT, target));
    }
    g.set(relative(ROOT, file), deps);
  }
  return g;
}

/** Each cycle of `g` once, as the path around it (Tarjan's strongly connected components). */
function cycles(g: Graph): string[][] {
  let next = 0;
  const index = new Map<string, number>(), low = new Map<string, number>();
  const stack: string[] = [], onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next); low.set(v, next); next++;
    stack.push(v); onStack.add(v);
    for (const w of g.get(v) ?? []) {
      if (!index.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)); }
      else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const scc: string[] = [];
    let w: string;
    do { w = stack.pop()!; onStack.delete(w); scc.push(w); } while (w !== v);
    if (scc.length > 1 || (g.get(v) ?? []).includes(v)) found.push(scc.reverse());
  };
  for (const v of g.keys()) if (!index.has(v)) visit(v);
  return found;
}

/** Imports that go up a layer (bridge importing sdk, sdk importing plugins, …). */
function upward(g: Graph): string[] {
  const layer = (p: string) => LAYERS.indexOf(p.split('/')[0] as (typeof LAYERS)[number]);
  const bad: string[] = [];
  for (const [from, deps] of g) for (const to of deps) if (layer(to) > layer(from)) bad.push(`${from} imports ${to}`);
  return bad;
}

describe('import graph', () => {
  const g = importGraph(LAYERS);

  it('finds the source and reads type-only imports', () => {
    expect(g.size).toBeGreaterThan(40);
    // tensor.ts needs the runtime contract only as a type
    expect(g.get('bridge/tensor.ts')).toContain('bridge/contract.ts');
  });

  it('has no cycle in bridge/, sdk/, plugins/ or examples/', () => {
    expect(cycles(g).map((c) => c.join(' → '))).toEqual([]);
  });

  it('imports one way: examples → plugins → sdk → bridge', () => {
    expect(upward(g)).toEqual([]);
  });

  it('keeps the runtime contract free of implementations', () => {
    // a group of runtimes implements bridge/contract.ts; it must not drag one process's code in
    const impl = ['bridge/process-runtime.ts', 'bridge/queue.ts', 'bridge/tensor.ts', 'bridge/connection.ts', 'bridge/python.ts'];
    expect(g.get('bridge/contract.ts')!.filter((d) => impl.includes(d))).toEqual([]);
  });

  it('the checks find what they look for', () => {
    const bad: Graph = new Map([['bridge/a.ts', ['bridge/b.ts']], ['bridge/b.ts', ['bridge/c.ts']], ['bridge/c.ts', ['bridge/a.ts']], ['sdk/x.ts', ['plugins/y.ts']], ['plugins/y.ts', []]]);
    expect(cycles(bad)).toEqual([['bridge/a.ts', 'bridge/b.ts', 'bridge/c.ts']]);
    expect(upward(bad)).toEqual(['sdk/x.ts imports plugins/y.ts']);
    expect(cycles(new Map([['bridge/self.ts', ['bridge/self.ts']]]))).toEqual([['bridge/self.ts']]);
  });
});
