/**
 * Plugins: one validating registration per algorithm.
 *
 * A plugin file declares a TypeBox schema for its config (defaults and one `description`
 * per field live there), a class that implements its family's contract, and registers
 * both once with {@link definePlugin}:
 *
 * ```ts
 * export const SlidingWindowConfig = Type.Object({
 *   budget: Type.Integer({ minimum: 1, default: 256, description: 'tokens kept per layer and head' }),
 * }, { additionalProperties: false });
 * export type SlidingWindowConfig = Static<typeof SlidingWindowConfig>;
 * export class SlidingWindow extends KVPolicyBase<SlidingWindowConfig> { score(...) { ... } }
 * export const slidingWindow = definePlugin({
 *   name: 'sliding-window', version: '1.0.0', family: 'kv-policy', schema: SlidingWindowConfig,
 *   description: 'keep the most recent tokens', create: (config) => new SlidingWindow(config),
 * });
 * const policy = slidingWindow({ budget: 64 });   // validated; defaults filled in
 * ```
 *
 * A bad config is a {@link LiaisonError} with code E_ARG that names the field, says what
 * it must be and what it got. The schema doubles as JSON Schema (`slidingWindow.schema`).
 */
import { type Static, type TObject, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { LiaisonError } from '../bridge/index.js';

/** The plugin families the SDK knows (docs/architecture.md, "Plugins and families"). */
export const FAMILIES = ['momentum-optimizer', 'pruner', 'deflator', 'router', 'kv-policy', 'adapter'] as const;
export type Family = (typeof FAMILIES)[number];

/** What every plugin instance carries, whatever its family. */
export interface PluginInstance<C = unknown> {
  /** The registration it was made from: name, version, family, schema. */
  readonly meta: PluginMeta;
  /** The validated config, defaults filled in. Frozen. */
  readonly config: Readonly<C>;
}

export interface PluginMeta<S extends TObject = TObject> {
  /** kebab-case, unique within the family, e.g. `sliding-window`. */
  readonly name: string;
  /** semver of the algorithm's implementation (bump when its results change). */
  readonly version: string;
  readonly family: Family;
  /** The config schema (TypeBox, hence JSON Schema). */
  readonly schema: S;
  /** One line: what the algorithm does. */
  readonly description: string;
  /** The paper it implements, as a URL or a citation, when there is one. */
  readonly paper?: string;
}

export interface PluginDefinition<S extends TObject, P extends PluginInstance<Static<S>>> extends PluginMeta<S> {
  /** Build an instance from a validated config. */
  create(config: Static<S>, meta: PluginMeta<S>): P;
}

/** A registered plugin: call it with a (partial) config to get a validated instance. */
export interface PluginFactory<S extends TObject = TObject, P extends PluginInstance<Static<S>> = PluginInstance<Static<S>>> extends PluginMeta<S> {
  (config?: Partial<Static<S>>): P;
  /** The config with every default filled in, validated (throws like the factory). */
  resolve(config?: Partial<Static<S>>): Static<S>;
}

const registry = new Map<string, PluginFactory>();

const NAME = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;
const SEMVER = /^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/;

/**
 * Register a plugin. Throws E_ARG when the registration itself is wrong (a name that is
 * not kebab-case, an unknown family, a schema field without a default or a description,
 * a name already taken in the family).
 */
export function definePlugin<S extends TObject, P extends PluginInstance<Static<S>>>(def: PluginDefinition<S, P>): PluginFactory<S, P> {
  const where = `definePlugin('${def.name}')`;
  if (typeof def.name !== 'string' || !NAME.test(def.name)) throw new LiaisonError('E_ARG', `${where}: name must be kebab-case (e.g. 'sliding-window')`);
  if (!SEMVER.test(def.version ?? '')) throw new LiaisonError('E_ARG', `${where}: version must be semver (e.g. '1.0.0'), got ${JSON.stringify(def.version)}`);
  if (!FAMILIES.includes(def.family)) throw new LiaisonError('E_ARG', `${where}: family must be one of ${FAMILIES.join(', ')}, got ${JSON.stringify(def.family)}`);
  if (!def.description) throw new LiaisonError('E_ARG', `${where}: a one-line description is required`);
  if (def.schema?.type !== 'object' || typeof def.schema.properties !== 'object') throw new LiaisonError('E_ARG', `${where}: schema must be a TypeBox Type.Object`);
  for (const [field, s] of Object.entries(def.schema.properties as Record<string, TSchema>)) {
    const optional = !(def.schema.required ?? []).includes(field);
    if (s.default === undefined && !optional) throw new LiaisonError('E_ARG', `${where}: config field '${field}' needs a default (or Type.Optional)`);
    if (!s.description) throw new LiaisonError('E_ARG', `${where}: config field '${field}' needs a description (its help line)`);
  }
  const key = `${def.family}/${def.name}`;
  if (registry.has(key)) throw new LiaisonError('E_ARG', `${where}: a ${def.family} named '${def.name}' is already registered`);
  const meta: PluginMeta<S> = Object.freeze({
    name: def.name, version: def.version, family: def.family, schema: def.schema, description: def.description,
    ...(def.paper ? { paper: def.paper } : {}),
  });
  const resolve = (config: Partial<Static<S>> = {}) => validateConfig(meta, config);
  const factory = ((config?: Partial<Static<S>>) => {
    const instance = def.create(Object.freeze(resolve(config)) as Static<S>, meta);
    if (instance.meta !== meta) throw new LiaisonError('E_INTERNAL', `${where}: create() must return an instance built with the meta it was given`);
    return instance;
  }) as PluginFactory<S, P>;
  Object.defineProperty(factory, 'name', { value: def.name, writable: true }); // writable: Object.assign below sets it again
  Object.assign(factory, meta, { resolve });
  registry.set(key, factory as unknown as PluginFactory);
  return factory;
}

/**
 * Check a config against a plugin's schema: unknown fields, wrong kinds and out-of-range
 * values throw E_ARG naming the field; missing fields take their defaults.
 */
export function validateConfig<S extends TObject>(meta: PluginMeta<S>, config: unknown): Static<S> {
  return checkAgainstSchema(meta.schema, config, `${meta.family} '${meta.name}'`);
}

/**
 * `config` checked against a TypeBox object `schema`, defaults filled in (a field given
 * as `undefined` takes its default): the one validation behind plugin configs and the
 * Trainer's. Unknown fields, wrong kinds and out-of-range values throw E_ARG whose message
 * starts with `who`, names the field, quotes its description and says what it got.
 * `otherFields` are accepted names that live outside the schema (listed first when a
 * field is unknown; the caller takes them out before calling).
 */
export function checkAgainstSchema<S extends TObject>(schema: S, config: unknown, who: string, otherFields: readonly string[] = []): Static<S> {
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new LiaisonError('E_ARG', `${who}: config must be an object, got ${config === null ? 'null' : Array.isArray(config) ? 'an array' : typeof config}`);
  }
  const known = Object.keys(schema.properties);
  for (const k of Object.keys(config)) {
    if (!known.includes(k)) throw new LiaisonError('E_ARG', `${who}: unknown config field '${k}'; the fields are ${[...otherFields, ...known].join(', ')}`, { param: k });
  }
  const clean = Object.fromEntries(Object.entries(config).filter(([, v]) => v !== undefined));
  const value = Value.Default(schema, Value.Clone(clean));
  const first = Value.Errors(schema, value).First();
  if (first) {
    const field = first.path.replace(/^\//, '').replace(/\//g, '.') || '(config)';
    // the field's own schema carries its description (a union's error may point at a member)
    const s = (schema.properties as Record<string, TSchema>)[field] ?? (first.schema as TSchema);
    const help = s.description ? ` (${s.description})` : '';
    throw new LiaisonError('E_ARG', `${who}: config field '${field}'${help}: ${expected(s, first.message, first.value)}, got ${shown(first.value)}`, { param: field });
  }
  return value as Static<S>;
}

/** What a field must be, for its error: the allowed values of a union of literals (TypeBox says only "expected union value"). */
function expected(s: TSchema, message: string, value: unknown): string {
  const options = Array.isArray(s.anyOf) ? (s.anyOf as TSchema[]) : null;
  if (options?.length && options.every((o) => o.const !== undefined)) return `expected one of ${options.map((o) => shown(o.const)).join(', ')}`;
  // TypeBox refuses NaN and ±Infinity as "expected number"
  if (typeof value === 'number' && !Number.isFinite(value)) return 'expected a finite number';
  return message.toLowerCase();
}

/**
 * A value as an error message shows it: JSON, except what JSON cannot say — NaN and
 * ±Infinity (which JSON.stringify turns into null), undefined, bigints, functions.
 */
export function shown(v: unknown): string {
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  if (v === undefined) return 'undefined';
  if (typeof v === 'bigint') return `${v}n`;
  if (typeof v === 'function') return `a function${v.name ? ` (${v.name})` : ''}`;
  try {
    return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? String(x) : typeof x === 'bigint' ? `${x}n` : x)) ?? String(v);
  } catch {
    return String(v); // a cycle
  }
}

/**
 * What a value is, for an error that expected a plugin of some family: "a momentum-optimizer
 * plugin 'gd'", "a plain object", "null", "a number".
 */
export function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (typeof v !== 'object' && typeof v !== 'function') return `a ${typeof v} (${shown(v)})`;
  const meta = (v as Partial<PluginInstance>).meta;
  if (meta && typeof meta.name === 'string' && typeof meta.family === 'string') return `a ${meta.family} plugin '${meta.name}'`;
  const fam = (v as { family?: unknown }).family;
  if (typeof v === 'function' && typeof fam === 'string') return `the ${fam} factory '${v.name}' itself (call it for an instance: ${v.name}({ … }))`;
  if (typeof v === 'function') return `a function${v.name ? ` (${v.name})` : ''}`;
  if (Array.isArray(v)) return 'a list';
  const cls = (v as object).constructor?.name;
  return cls && cls !== 'Object' ? `a ${cls}` : 'a plain object';
}

/**
 * Check that `value` is a plugin of `family` with the members its contract needs, before
 * anything calls them (untyped JavaScript can pass anything): E_ARG "`who` must be a
 * `contract` …, got …" (`who` names the setter and its argument).
 */
export function requirePlugin(value: unknown, family: Family, contract: string, members: readonly string[], who: string, param: string): void {
  const v = value as Record<string, unknown> | null;
  const meta = (v as Partial<PluginInstance> | null)?.meta;
  const missing = v === null || (typeof v !== 'object' && typeof v !== 'function') ? members : members.filter((m) => v[m] === undefined);
  const wrongFamily = meta && typeof meta.family === 'string' && meta.family !== family;
  if (!wrongFamily && !missing.length) return;
  const why = wrongFamily ? '' : ` (it lacks ${missing.join(', ')})`;
  throw new LiaisonError('E_ARG', `${who} must be a ${contract} (a '${family}' plugin instance), got ${describeValue(value)}${why}`, { param });
}

/** Every registered plugin, optionally of one family, in registration order. */
export function plugins(family?: Family): PluginFactory[] {
  return [...registry.values()].filter((p) => !family || p.family === family);
}

/** A registered plugin by family and name (E_ARG listing the names when there is none). */
export function getPlugin(family: Family, name: string): PluginFactory {
  const p = registry.get(`${family}/${name}`);
  if (!p) throw new LiaisonError('E_ARG', `no ${family} named '${name}' is registered; there are: ${plugins(family).map((q) => q.name).join(', ') || 'none'}`);
  return p;
}

/** The shared base: holds meta and config, so a plugin class writes only its core. */
export abstract class PluginBase<C> implements PluginInstance<C> {
  constructor(readonly config: Readonly<C>, readonly meta: PluginMeta) {}
  /** `family/name@version`, for logs and checkpoints. */
  get id(): string {
    return `${this.meta.family}/${this.meta.name}@${this.meta.version}`;
  }
}
