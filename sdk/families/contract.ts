/**
 * Trace-time checks of what a plugin hands back under names: the state a KV policy
 * threads from step to step, the record a router returns, the state an optimizer updates
 * in place. A misspelled or missing key there is not a crash: the runtime would quietly
 * keep the old state (or drop an auxiliary loss) and every later result would be wrong.
 * So unknown and missing keys are refused when the program is traced, naming the plugin,
 * the keys and the ones its contract expects.
 */
import { LiaisonError, Tensor } from '../../bridge/index.js';
import { describeValue, type PluginInstance } from '../plugin.js';

/** How errors name a plugin: `kv-policy 'h2o'`. */
export function pluginName(p: unknown): string {
  const meta = (p as Partial<PluginInstance> | null)?.meta;
  return meta && typeof meta.name === 'string' ? `${meta.family} '${meta.name}'` : `plugin ${describeValue(p)}`;
}

const quoted = (keys: readonly string[]) => (keys.length ? keys.map((k) => `'${k}'`).join(', ') : 'none');

/** What {@link checkKeys} expects of a record. */
export interface KeyRule {
  /** Keys that must be there (not undefined). */
  expected: readonly string[];
  /** Keys that may be there. */
  optional?: readonly string[];
  /** Keys whose values must be tensors (default: every expected and optional key). */
  tensors?: readonly string[];
  /** What to do, appended to the message. */
  fix?: string;
  /** The error's `param`. */
  param?: string;
}

/**
 * `record` must be an object whose keys are all of `rule.expected` and possibly some of
 * `rule.optional`: otherwise E_TRACE "`who`: `what` has unknown key 'accum', no 'acc';
 * expected 'acc'; `fix`".
 */
export function checkKeys(who: string, what: string, record: unknown, rule: KeyRule): void {
  const { expected, optional = [], fix = '', param } = rule;
  const tail = fix ? `; ${fix}` : '';
  if (record === null || typeof record !== 'object' || Array.isArray(record) || record instanceof Tensor) {
    throw new LiaisonError('E_TRACE', `${who}: ${what} must be an object with keys ${quoted(expected)}, got ${describeValue(record)}${tail}`, { param });
  }
  const rec = record as Record<string, unknown>;
  const keys = Object.keys(rec);
  const unknown = keys.filter((k) => !expected.includes(k) && !optional.includes(k));
  const missing = expected.filter((k) => rec[k] === undefined);
  const notTensor = (rule.tensors ?? [...expected, ...optional]).filter((k) => rec[k] !== undefined && !(rec[k] instanceof Tensor));
  if (!unknown.length && !missing.length && !notTensor.length) return;
  const problems = [
    ...(unknown.length ? [`unknown key${unknown.length > 1 ? 's' : ''} ${quoted(unknown)}`] : []),
    ...(missing.length ? [`no ${quoted(missing)}`] : []),
    ...notTensor.map((k) => `'${k}' that is ${describeValue(rec[k])}, not a tensor`),
  ];
  const opt = optional.length ? ` (and optionally ${quoted(optional)})` : '';
  throw new LiaisonError('E_TRACE', `${who}: ${what} has ${problems.join(', ')}; expected ${quoted(expected)}${opt}${tail}`, { param });
}

/**
 * After an optimizer's `update()` was traced: its state record must hold the very tensors
 * `init()` made, under the same keys. A replaced entry (`state.v = state.v.mul(β)`) or an
 * added one updates nothing in the runtime after the first step. Errors carry param 'state'.
 */
export function checkStateKept(who: string, param: string, state: Record<string, Tensor>, made: Record<string, Tensor>): void {
  const fix = 'update the tensors init() made in place (state.v.mul_(β).add_(g), copy_), and make every state entry in init()';
  checkKeys(who, `update()'s state of '${param}'`, state, { expected: Object.keys(made), fix, param: 'state' });
  const replaced = Object.keys(made).filter((k) => state[k] !== made[k]);
  if (replaced.length) {
    throw new LiaisonError('E_TRACE', `${who}: update() replaced state ${quoted(replaced)} of '${param}' with a new tensor (state.${replaced[0]} = …), which is lost after the step; ${fix}`, { param: 'state' });
  }
}
