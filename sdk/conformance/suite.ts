/**
 * The machinery shared by every family's conformance suite: cases, skips, the runner.
 *
 * A suite is a list of named cases that check a family's *contract* — shapes, invariants,
 * that the traced parts trace, that the plugin works installed in a model or a Trainer —
 * never one algorithm's numbers. Any plugin of the family runs the same cases, ours or a
 * third party's. A case that cannot apply to a plugin is skipped with a reason (a dense
 * router has no "k chosen experts"); a plugin author may skip more, also with a reason,
 * as Hono's shared router suite does.
 *
 * The suites are framework-agnostic: {@link runConformance} returns results, and a test
 * framework wraps one case per test (docs/writing-a-plugin.md shows it for vitest).
 */
import { LiaisonError, type Runtime, type Tensor } from '../../bridge/index.js';
import type { Family, PluginFactory, PluginInstance } from '../plugin.js';

/** What a plugin under test is given as: its registered factory (preferred) or one instance. */
export type Subject<P extends PluginInstance = PluginInstance> = PluginFactory | P;

/** A skip a plugin's author declares: these cases do not apply, and why. */
export interface SkipRule {
  /** Why, in a sentence a reviewer can check. */
  reason: string;
  /** Case names, as {@link conformanceCases} lists them. */
  cases: string[];
}

/** How a suite runs. */
export interface ConformanceOptions {
  /** The runtime the cases use (tiny models; CPU is enough). */
  rt: Runtime;
  /**
   * Config the suite builds the plugin with (factory subjects only), merged under the
   * fields a case sets itself (e.g. a KV policy's `budget`). Iterative plugins pass what
   * they need to reach the suite's tolerances, e.g. `{ steps: 200 }`.
   */
  config?: Record<string, unknown>;
  /** Cases skipped on purpose, each with its reason. */
  skip?: SkipRule[];
  /** Run only these cases (by name); the rest are left out of the results. */
  only?: string[];
  /** Deflators: the largest per-component error √(2 − 2|⟨u, v⟩|) accepted (default 0.01). */
  tolerance?: number;
  /** Seed of every random tensor the cases draw (default 0). */
  seed?: number;
}

/** What a case gets. */
export interface CaseContext<P extends PluginInstance> {
  readonly rt: Runtime;
  readonly options: Readonly<ConformanceOptions>;
  readonly seed: number;
  /** The plugin as given to the suite: its factory, or one instance. */
  readonly subject: Subject<P>;
  /**
   * The plugin under test: a fresh instance per call from a factory (built with
   * `options.config`, then `overrides`), or the given instance itself (overrides are
   * then not applied; read {@link CaseContext.canOverride}).
   */
  plugin(overrides?: Record<string, unknown>): P;
  /** Whether {@link CaseContext.plugin} can apply overrides (the subject is a factory). */
  readonly canOverride: boolean;
  /** Stop this case as not applicable to this plugin; the reason is reported. */
  skip(reason: string): never;
}

/** One check of a family's contract. `skipFor` says, before running, when it cannot apply. */
export interface CaseDef<P extends PluginInstance> {
  name: string;
  /** A reason this case does not apply to `plugin` (judged from its config and class), or undefined. */
  skipFor?(plugin: P, subject: Subject<P>): string | undefined;
  run(ctx: CaseContext<P>): Promise<void>;
}

/** A case as listed for one plugin: runnable, or skipped with its reason. */
export type ConformanceCase<P extends PluginInstance = PluginInstance> =
  | { name: string; run(ctx: CaseContext<P>): Promise<void>; skip?: undefined }
  | { name: string; skip: string };

/** The outcome of one case. */
export interface CaseResult {
  name: string;
  status: 'passed' | 'failed' | 'skipped';
  /** Why it was skipped. */
  reason?: string;
  /** Why it failed. */
  error?: Error;
  ms: number;
}

/** A run of one plugin through its family's suite. */
export interface ConformanceReport {
  /** `family/name@version`. */
  plugin: string;
  family: Family;
  results: CaseResult[];
  passed: number;
  failed: number;
  skipped: number;
  /** No case failed. */
  ok: boolean;
}

/** A failed contract check: names the case's expectation and what the plugin did. */
export class ConformanceFailure extends Error {
  override name = 'ConformanceFailure';
}

/** Thrown by `ctx.skip(reason)`: the case does not apply; reported as skipped. */
class Skip extends Error {
  override name = 'Skip';
}

/** Throw a {@link ConformanceFailure} with `message` unless `ok`. */
export function check(ok: boolean, message: string | (() => string)): asserts ok {
  if (!ok) throw new ConformanceFailure(typeof message === 'string' ? message : message());
}

/** Values of a tensor as plain numbers (i64 read as numbers). */
export async function values(t: Tensor): Promise<number[]> {
  return Array.from((await t.data()).data as ArrayLike<number | bigint>, Number);
}

/** Whether the subject is a registered factory (a function) rather than one instance. */
export function isFactory<P extends PluginInstance>(s: Subject<P>): s is PluginFactory {
  return typeof s === 'function';
}

/** An instance of the subject, for listing cases (no runtime needed: configs only). */
export function sample<P extends PluginInstance>(subject: Subject<P>, config?: Record<string, unknown>): P {
  return (isFactory(subject) ? subject(config as never) : subject) as P;
}

/** Resolve `defs` for one plugin: skips judged from the plugin and declared by its author. */
export function resolveCases<P extends PluginInstance>(defs: CaseDef<P>[], subject?: Subject<P>, opts: Pick<ConformanceOptions, 'config' | 'skip'> = {}): ConformanceCase<P>[] {
  const known = new Set(defs.map((d) => d.name));
  for (const rule of opts.skip ?? []) {
    if (!rule.reason) throw new LiaisonError('E_ARG', `conformance: a skip rule needs a reason (cases ${rule.cases.join(', ')})`, { param: 'skip' });
    for (const c of rule.cases) {
      if (!known.has(c)) throw new LiaisonError('E_ARG', `conformance: skip names no case '${c}'; the cases are: ${[...known].join('; ')}`, { param: 'skip' });
    }
  }
  const instance = subject === undefined ? undefined : sample(subject, opts.config);
  return defs.map((d) => {
    const declared = opts.skip?.find((r) => r.cases.includes(d.name));
    if (declared) return { name: d.name, skip: `${declared.reason} (skipped by the plugin's author)` };
    const own = instance && subject ? d.skipFor?.(instance, subject) : undefined;
    if (own) return { name: d.name, skip: own };
    return { name: d.name, run: d.run };
  });
}

/** Run resolved cases against `subject`; failures are collected, never thrown. */
export async function runCases<P extends PluginInstance>(subject: Subject<P>, family: Family, defs: CaseDef<P>[], opts: ConformanceOptions): Promise<ConformanceReport> {
  const first = sample(subject, opts.config); // validates opts.config against the schema
  if (first.meta.family !== family) {
    throw new LiaisonError('E_ARG', `conformance: ${first.meta.family} '${first.meta.name}' given to the ${family} suite`, { param: 'plugin' });
  }
  const seed = opts.seed ?? 0;
  const ctx: CaseContext<P> = {
    rt: opts.rt,
    options: opts,
    seed,
    subject,
    canOverride: isFactory(subject),
    plugin: (overrides) => (isFactory(subject) ? subject({ ...(opts.config ?? {}), ...(overrides ?? {}) } as never) : subject) as P,
    skip: (reason) => { throw new Skip(reason); },
  };
  const results: CaseResult[] = [];
  for (const c of resolveCases(defs, subject, opts)) {
    if (opts.only && !opts.only.includes(c.name)) continue;
    const t0 = performance.now();
    if (c.skip !== undefined) {
      results.push({ name: c.name, status: 'skipped', reason: c.skip, ms: 0 });
      continue;
    }
    try {
      await opts.rt.scope(() => c.run(ctx));
      results.push({ name: c.name, status: 'passed', ms: performance.now() - t0 });
    } catch (e) {
      const ms = performance.now() - t0;
      if (e instanceof Skip) results.push({ name: c.name, status: 'skipped', reason: e.message, ms });
      else results.push({ name: c.name, status: 'failed', error: e instanceof Error ? e : new Error(String(e)), ms });
    }
  }
  const count = (s: CaseResult['status']) => results.filter((r) => r.status === s).length;
  const m = first.meta;
  return {
    plugin: `${m.family}/${m.name}@${m.version}`, family, results,
    passed: count('passed'), failed: count('failed'), skipped: count('skipped'), ok: count('failed') === 0,
  };
}

/** The cases every family shares: the registration and its config schema. */
export function registrationCases<P extends PluginInstance>(): CaseDef<P>[] {
  return [
    {
      name: 'config schema: every field has a default (or is optional) and a description',
      async run({ plugin }) {
        const { schema } = plugin().meta;
        const required = new Set<string>(schema.required ?? []);
        for (const [field, s] of Object.entries(schema.properties as Record<string, { default?: unknown; description?: string }>)) {
          check(s.default !== undefined || !required.has(field), `config field '${field}' has no default`);
          check(typeof s.description === 'string' && s.description.length > 0, `config field '${field}' has no description`);
        }
      },
    },
    {
      name: 'config: the defaults validate and an unknown field is refused with E_ARG naming it',
      skipFor: (_p, subject) => (isFactory(subject) ? undefined : 'given an instance, not its factory: nothing to validate a config with'),
      async run({ subject }) {
        if (!isFactory(subject)) throw new ConformanceFailure('needs the factory');
        const p = subject();
        for (const field of Object.keys(p.meta.schema.properties)) {
          const optional = !(p.meta.schema.required ?? []).includes(field);
          check(optional || (p.config as Record<string, unknown>)[field] !== undefined, `config field '${field}' is missing from the default config (its default was not filled in)`);
        }
        let err: unknown;
        try { subject({ noSuchField: 1 } as never); } catch (e) { err = e; }
        check(err instanceof LiaisonError && err.code === 'E_ARG' && /noSuchField/.test(err.message),
          () => `an unknown config field should throw E_ARG naming it; got ${err instanceof Error ? `${err.name}: ${err.message}` : 'no error'}`);
      },
    },
  ];
}
