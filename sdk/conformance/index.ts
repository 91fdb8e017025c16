/**
 * Conformance suites: one per plugin family, the same cases for every plugin of it.
 *
 * ```ts
 * import { runConformance } from 'liaison/sdk/conformance';
 * const report = await runConformance(signSgd, { rt });      // a factory (or an instance)
 * for (const r of report.results) console.log(r.status, r.name, r.reason ?? r.error?.message ?? '');
 * if (!report.ok) process.exit(1);
 * ```
 *
 * From a test framework, list the cases with {@link conformanceCases} and run each as its
 * own test with `only: [name]` (docs/writing-a-plugin.md shows it for vitest).
 */
import { LiaisonError } from '../../bridge/index.js';
import { adapterCases } from './adapters.js';
import type { Family, PluginInstance } from '../plugin.js';
import { deflatorCases } from './deflators.js';
import { kvPolicyCases } from './kv-policies.js';
import { momentumCases } from './momentum.js';
import { prunerCases } from './pruners.js';
import { routerCases } from './routers.js';
import { type CaseDef, type ConformanceCase, type ConformanceOptions, type ConformanceReport, resolveCases, runCases, sample, type Subject } from './suite.js';

export { check, values, ConformanceFailure, type CaseContext, type CaseDef, type CaseResult, type ConformanceCase, type ConformanceOptions, type ConformanceReport, type SkipRule, type Subject } from './suite.js';
export { adapterCases, deflatorCases, kvPolicyCases, momentumCases, prunerCases, routerCases };

const SUITES: Record<Family, () => CaseDef<never>[]> = {
  'momentum-optimizer': momentumCases as () => CaseDef<never>[],
  pruner: prunerCases as () => CaseDef<never>[],
  deflator: deflatorCases as () => CaseDef<never>[],
  router: routerCases as () => CaseDef<never>[],
  'kv-policy': kvPolicyCases as () => CaseDef<never>[],
  adapter: adapterCases as () => CaseDef<never>[],
};

function suite(family: Family): CaseDef<PluginInstance>[] {
  const make = SUITES[family];
  if (!make) throw new LiaisonError('E_ARG', `conformance: no suite for family ${JSON.stringify(family)}; the families are ${Object.keys(SUITES).join(', ')}`, { param: 'family' });
  return make() as CaseDef<PluginInstance>[];
}

/**
 * The cases of a family's suite. Given a plugin (factory or instance), the cases that do
 * not apply to it come back as `{ name, skip: reason }` — judged from its config and
 * class, or declared in `options.skip` — and the rest as `{ name, run }`.
 */
export function conformanceCases(family: Family, subject?: Subject, options: Pick<ConformanceOptions, 'config' | 'skip'> = {}): ConformanceCase[] {
  return resolveCases(suite(family), subject, options);
}

/**
 * Run a plugin through its family's suite (the family is read from its registration).
 * Resolves with every case's result; a failing case never throws, it is reported.
 */
export async function runConformance(subject: Subject, options: ConformanceOptions): Promise<ConformanceReport> {
  const family = sample(subject, options.config).meta.family;
  return runCases(subject, family, suite(family), options);
}

/** One line per case and a summary, for scripts. */
export function formatReport(report: ConformanceReport): string {
  const mark = { passed: 'ok  ', failed: 'FAIL', skipped: 'skip' } as const;
  const lines = report.results.map((r) => `  ${mark[r.status]} ${r.name}${r.reason ? ` (${r.reason})` : ''}${r.error ? `\n         ${r.error.message}` : ''}`);
  return [`${report.plugin}: ${report.passed} passed, ${report.failed} failed, ${report.skipped} skipped`, ...lines].join('\n');
}
