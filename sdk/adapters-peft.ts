/**
 * Adapters in Hugging Face PEFT's LoRA format (sdk/adapters.ts uses these): the tensors
 * `base_model.model.<module>.lora_A.weight` (r_m, in[, k…]) and `….lora_B.weight`
 * (out, r_m[, 1…]) with an `adapter_config.json` — what `PeftModel.from_pretrained` reads and
 * `save_pretrained` writes. PEFT computes y = W x + (alpha_m / r_m) · B A x, with no gate, so
 * an export keeps the active components only (gate ≠ 0), folds each gate into B's column and
 * gives each module alpha_m = scale · r_m in `alpha_pattern`; an import makes gates of ones.
 * The ghost term adds nothing to a forward, so it is not exported.
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type DType, LiaisonError, type Tensor, type TensorData } from '../bridge/index.js';
import { type AdapterSite, adapterSites, type LowRankFactors, weightDtype } from './adapter-sites.js';
import type { Model } from './model.js';
import { readSafetensors, writeSafetensors } from './safetensors.js';

/** PEFT's LoRA config (adapter_config.json), as exported: every key PEFT's LoraConfig needs to load it. */
export interface PeftLoraConfig {
  peft_type: 'LORA';
  task_type: string | null;
  /** The most common rank (the modules' own ranks are in rank_pattern). */
  r: number;
  /** alpha of the modules of rank r (each module's own in alpha_pattern). */
  lora_alpha: number;
  /**
   * The modules with at least one active component: their exact names, or — when one of them
   * ends another module's name ('0' and '1.0'; PEFT's list form matches by suffix) — one regular
   * expression PEFT matches against whole names.
   */
  target_modules: string[] | string;
  rank_pattern: Record<string, number>;
  alpha_pattern: Record<string, number>;
  lora_dropout: number;
  bias: 'none';
  use_rslora: boolean;
  fan_in_fan_out: boolean;
  init_lora_weights: boolean;
  modules_to_save: string[] | null;
  base_model_name_or_path: string | null;
  revision: string | null;
  inference_mode: boolean;
  use_dora: boolean;
}

/** The metadata key of an adapter checkpoint's PEFT config (JSON), written by AdapterSet.save. */
export const META_ADAPTERS = 'liaison.adapters';
const PREFIX = 'base_model.model.';

/** What an export reads of an AdapterSet. */
interface AdapterSetLike {
  readonly model: Model;
  readonly modules: readonly string[];
  readonly sites: Record<string, AdapterSite>;
  readonly factors: Record<string, LowRankFactors>;
}
const KEY = /^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$/;
export const PEFT_WEIGHTS = 'adapter_model.safetensors';
export const PEFT_CONFIG = 'adapter_config.json';

/** @internal The compacted PEFT tensors of a set whose gates are `gates` (read once by the caller). */
export async function peftTensors(set: AdapterSetLike, gates: Record<string, Float32Array>): Promise<{ tensors: Record<string, Tensor>; config: PeftLoraConfig }> {
  const { rt } = set.model;
  const who = 'AdapterSet.peftTensors';
  const keeps: Record<string, bigint[]> = {};
  for (const m of set.modules) {
    const keep: bigint[] = [];
    gates[m].forEach((v, k) => { if (v !== 0) keep.push(BigInt(k)); });
    if (keep.length) keeps[m] = keep; // nothing of this module in the sum: PEFT gets no entry for it
  }
  const modules = Object.keys(keeps);
  if (!modules.length) throw new LiaisonError('E_ARG', `${who}: every gate is zero (modules ${set.modules.join(', ')}), so there is no component to export`, { param: 'gate' });
  // PEFT's conv lora_A takes the base layer's kernel, stride and padding, not its dilation
  const dilated = modules.find((m) => set.sites[m].dilation.some((d) => d !== 1));
  if (dilated !== undefined) throw new LiaisonError('E_ARG', `${who}: module '${dilated}' is a dilated convolution (dilation [${set.sites[dilated].dilation}]); PEFT's LoRA convolution ignores dilation, so it would compute another function — export without it`, { param: 'dilation' });
  const tensors: Record<string, Tensor> = {};
  const rank: Record<string, number> = {};
  const alpha: Record<string, number> = {};
  try {
    for (const m of modules) {
      const keep = keeps[m];
      const f = set.factors[m];
      const site = set.sites[m];
      const idx = rt.tensor(BigInt64Array.from(keep), [keep.length], 'i64');
      const g = f.gate.indexSelect(0, idx).reshape([1, keep.length, ...site.kernel.map(() => 1)]);
      const a = f.A.indexSelect(0, idx);
      const b = f.B.indexSelect(1, idx);
      tensors[`${PREFIX}${m}.lora_A.weight`] = a.contiguous();
      const dt = weightDtype(set.model, m);
      tensors[`${PREFIX}${m}.lora_B.weight`] = dt === 'f32' ? b.mul(g) : b.mul(g.to(dt)); // B's dtype, as A's
      for (const t of [idx, g, a, b]) t.free();
      rank[m] = keep.length;
      alpha[m] = f.scale * keep.length; // PEFT's scale alpha_m / r_m is ours
    }
  } catch (e) {
    for (const t of Object.values(tensors)) t.free();
    throw e;
  }
  const counts = new Map<number, number>();
  for (const m of modules) counts.set(rank[m], (counts.get(rank[m]) ?? 0) + 1);
  const r = [...counts.entries()].sort((x, y) => y[1] - x[1] || x[0] - y[0])[0][0];
  const esc = (m: string) => m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  // PEFT reads a pattern key k as the regex (.*\.)?(k)$ over the modules it wraps, first match wins
  // (peft >= 0.15): an exported name that ends another exported one ('0', '3.0') is anchored
  const key = (m: string) => (modules.some((o) => o.endsWith(`.${m}`)) ? `^${esc(m)}$` : m);
  // its list-form target_modules matches by suffix over the whole model: when that would wrap a
  // module we do not export, one regex (matched against whole names) names exactly ours
  const all = set.model.hookModules.output;
  const suffixed = modules.some((m) => all.some((o) => o !== m && o.endsWith(`.${m}`)));
  const config: PeftLoraConfig = {
    peft_type: 'LORA', task_type: null, r, lora_alpha: alpha[modules.find((m) => rank[m] === r)!],
    target_modules: suffixed ? `^(?:${modules.map(esc).join('|')})$` : modules,
    rank_pattern: Object.fromEntries(modules.map((m) => [key(m), rank[m]])),
    alpha_pattern: Object.fromEntries(modules.map((m) => [key(m), alpha[m]])), lora_dropout: 0, bias: 'none', use_rslora: false,
    fan_in_fan_out: false, init_lora_weights: true, modules_to_save: null, base_model_name_or_path: null, revision: null,
    inference_mode: true, use_dora: false,
  };
  return { tensors, config };
}

/** The safetensors metadata key tying an exported pair: the sha256 of the adapter_config.json written with it. */
const META_CONFIG_HASH = 'liaison.adapter_config_sha256';
const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

/**
 * @internal Write a PEFT adapter folder from tensors and a config (one round trip reads the
 * tensors). Both files are written beside their names, synced and renamed into place; the
 * weights carry the config's hash, so a pair torn by a crash between the renames is refused on import.
 */
export async function writePeftDir(dir: string, tensors: Record<string, Tensor>, config: PeftLoraConfig): Promise<void> {
  const names = Object.keys(tensors);
  const datas = await Promise.all(names.map((k) => tensors[k].data()));
  await mkdir(dir, { recursive: true });
  const text = `${JSON.stringify(config, null, 2)}\n`;
  const path = join(dir, PEFT_CONFIG);
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  try {
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await writeSafetensors(join(dir, PEFT_WEIGHTS), Object.fromEntries(names.map((k, i) => [k, datas[i]])), { format: 'pt', [META_CONFIG_HASH]: sha256(text) });
    await rename(tmp, path);
  } finally {
    await rm(tmp, { force: true });
  }
}

/** PEFT's reading of a pattern (rank_pattern, alpha_pattern): keys are regexes (.*\.)?(key)$, the first that matches wins. */
function patternValue(pattern: Record<string, number> | undefined, module: string): number | undefined {
  if (!pattern) return undefined;
  for (const [k, v] of Object.entries(pattern)) {
    let hit: boolean;
    try {
      hit = new RegExp(`^(?:.*\\.)?(?:${k})$`).test(module);
    } catch {
      hit = k === module; // not a regular expression here: an exact name
    }
    if (hit) return v;
  }
  return undefined;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
/** LoraConfig fields that make PEFT compute something other than W x + (alpha_m / r_m)·B A x, or touch other weights. */
const UNSUPPORTED = ['modules_to_save', 'layers_to_transform', 'layer_replication', 'trainable_token_indices', 'megatron_config', 'alora_invocation_tokens',
  'target_parameters', 'use_dora', 'lora_bias', 'use_qalora', 'use_bdlora', 'arrow_config', 'kasa_config', 'velora_config', 'monteclora_config'];

/** A LoRA config as PEFT would read it (its defaults: r 8, lora_alpha 8), checked field by field. */
function checkConfig(raw: unknown, source: string, who: string): Partial<PeftLoraConfig> {
  const bad = (msg: string) => new LiaisonError('E_ARG', `${who}: ${source}: ${msg}`, { param: 'path' });
  if (!isObject(raw)) throw bad(`the adapter config must be a JSON object, got ${raw === null ? 'null' : Array.isArray(raw) ? 'an array' : typeof raw}`);
  if (raw.peft_type !== undefined && raw.peft_type !== 'LORA') throw bad(`holds a ${String(raw.peft_type)} adapter (peft_type); only LORA is read`);
  const on = (v: unknown) => v !== undefined && v !== null && v !== false && !(Array.isArray(v) && !v.length) && !(isObject(v) && !Object.keys(v).length);
  const used = UNSUPPORTED.filter((k) => on(raw[k]));
  if (raw.bias !== undefined && raw.bias !== 'none') used.unshift('bias');
  if (used.length) throw bad(`sets ${used.map((k) => `${k} (${JSON.stringify(raw[k])})`).join(', ')}, which make PEFT compute more than the low-rank sum; such an adapter is not read`);
  const positive = (field: string, v: unknown) => {
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v) || v <= 0)) throw bad(`${field} must be a finite number > 0, got ${JSON.stringify(v)}`);
  };
  positive('r', raw.r);
  positive('lora_alpha', raw.lora_alpha);
  for (const p of ['rank_pattern', 'alpha_pattern'] as const) {
    const v = raw[p];
    if (v === undefined || v === null) continue;
    if (!isObject(v)) throw bad(`${p} must be an object of module patterns to numbers, got ${JSON.stringify(v)}`);
    for (const [k, n] of Object.entries(v)) positive(`${p}['${k}']`, n);
  }
  if (raw.use_rslora !== undefined && typeof raw.use_rslora !== 'boolean') throw bad(`use_rslora must be a boolean, got ${JSON.stringify(raw.use_rslora)}`);
  return raw as Partial<PeftLoraConfig>;
}

/** What an upload makes for one module: the file's keys of A and B, the rank and the scale. */
interface PlannedModule { module: string; A: string; B: string; r: number; scale: number }
const FLOATS: readonly DType[] = ['f32', 'f64', 'f16', 'bf16'];

/**
 * Everything about the adapter tensors of a file that can be wrong, checked on the host before
 * anything is sent or changed: keys (an allow-list: `base_model.model.<module>.lora_[AB].weight`
 * and `extra`), modules, shapes against the sites, r against the config, finite values.
 */
function planFactors(model: Model, tensors: Record<string, TensorData>, config: Partial<PeftLoraConfig>, source: string, who: string, extra: ReadonlySet<string> = new Set()): PlannedModule[] {
  const bad = (msg: string, code: 'E_ARG' | 'E_SHAPE' | 'E_DTYPE' = 'E_ARG') => new LiaisonError(code, `${who}: ${source}: ${msg}`, { param: 'path' });
  const byModule = new Map<string, { A?: string; B?: string }>();
  const unexpected: string[] = [];
  for (const k of Object.keys(tensors)) {
    const hit = KEY.exec(k);
    if (!hit) {
      if (!extra.has(k)) unexpected.push(k);
      continue;
    }
    const e = byModule.get(hit[1]) ?? {};
    e[hit[2] as 'A' | 'B'] = k;
    byModule.set(hit[1], e);
  }
  if (unexpected.length) throw bad(`holds tensors that are not LoRA factors (base_model.model.<module>.lora_A.weight / lora_B.weight): ${unexpected.slice(0, 8).join(', ')}${unexpected.length > 8 ? ` and ${unexpected.length - 8} more` : ''}; an adapter with other trained tensors (modules_to_save, DoRA, biases, embeddings) is not read`);
  if (!byModule.size) throw bad('has no LoRA tensors (base_model.model.<module>.lora_A.weight / lora_B.weight)');
  const all = model.hookModules.output;
  const unknown = [...byModule.keys()].filter((m) => !all.includes(m));
  if (unknown.length) throw bad(`has adapters for ${unknown.join(', ')}, which the ${model.kind} model does not have; its modules are ${all.join(', ')}`);
  const sites = Object.fromEntries(adapterSites(model, [...byModule.keys()], who).map((s) => [s.module, s]));
  return [...byModule].map(([m, e]) => {
    if (!e.A || !e.B) throw bad(`has lora_${e.A ? 'A' : 'B'} but no lora_${e.A ? 'B' : 'A'} for module '${m}'`);
    const site = sites[m];
    const a = tensors[e.A].shape, b = tensors[e.B].shape;
    const dims = 2 + site.kernel.length;
    if (a.length !== dims) throw bad(`${e.A} has shape [${a}]; lora_A of the ${site.kind} module '${m}' must be (r, in${site.kernel.length ? ', …kernel' : ''}), ${dims} dims`, 'E_SHAPE');
    const r = a[0];
    const wantA = [r, site.in, ...site.kernel], wantB = [site.out, r, ...site.kernel.map(() => 1)];
    for (const [k, s, w] of [[e.A, a, wantA], [e.B, b, wantB]] as const) {
      if (s.length !== w.length || s.some((d, i) => d !== w[i])) throw bad(`${k} has shape [${s}]; module '${m}' (${site.kind}, in ${site.in}, out ${site.out}${site.kernel.length ? `, kernel [${site.kernel}]` : ''}) with r = ${r} needs [${w}]`, 'E_SHAPE');
    }
    const rc = patternValue(config.rank_pattern, m) ?? config.r ?? 8;
    if (rc !== r) throw bad(`module '${m}' has r = ${r} in its tensors but ${rc} in the config (rank_pattern / r): the config is not the one these tensors were saved with`);
    for (const k of [e.A, e.B]) {
      const d = tensors[k];
      if (!FLOATS.includes(d.dtype)) throw bad(`${k} is ${d.dtype}; LoRA factors are floating point`, 'E_DTYPE');
      const v = d.data as ArrayLike<number>;
      for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) throw bad(`${k} holds ${v[i]} at flat index ${i}; LoRA factors must be finite`);
    }
    const alpha = patternValue(config.alpha_pattern, m) ?? config.lora_alpha ?? 8;
    return { module: m, A: e.A, B: e.B, r, scale: config.use_rslora ? alpha / Math.sqrt(r) : alpha / r };
  });
}

/** The planned factors uploaded in each module's weight dtype (gates ones); all freed if one upload fails. */
function uploadFactors(model: Model, plan: PlannedModule[], tensors: Record<string, TensorData>): { factors: Record<string, LowRankFactors>; owned: Tensor[] } {
  const { rt } = model;
  const owned: Tensor[] = [];
  const factors: Record<string, LowRankFactors> = {};
  const up = (d: TensorData, dt: DType) => {
    const data = d.dtype === dt ? d.data : dt === 'f64' ? Float64Array.from(d.data as ArrayLike<number>) : Float32Array.from(d.data as ArrayLike<number>);
    const t = rt.tensor(data, d.shape, dt);
    owned.push(t);
    return t;
  };
  try {
    for (const p of plan) {
      const dt = weightDtype(model, p.module);
      const A = up(tensors[p.A], dt), B = up(tensors[p.B], dt);
      const gate = rt.ones([p.r]);
      owned.push(gate);
      factors[p.module] = { A, B, gate, scale: p.scale };
    }
  } catch (e) {
    for (const t of owned) t.free();
    throw e;
  }
  return { factors, owned };
}

/** @internal The factors of the PEFT adapter saved in `dir`, uploaded. */
export async function readPeftDir(model: Model, dir: string): Promise<{ factors: Record<string, LowRankFactors>; owned: Tensor[] }> {
  const who = 'AdapterSet.importPeft';
  const cpath = join(dir, PEFT_CONFIG);
  let text: string;
  let raw: unknown;
  try {
    text = await readFile(cpath, 'utf8');
    raw = JSON.parse(text);
  } catch (e) {
    throw new LiaisonError('E_ARG', `${who}: cannot read ${cpath} as JSON (${(e as Error).message})`, { param: 'dir', cause: e });
  }
  const config = checkConfig(raw, cpath, who);
  const file = await readSafetensors(join(dir, PEFT_WEIGHTS));
  const hash = file.metadata[META_CONFIG_HASH];
  if (hash !== undefined && hash !== sha256(text)) throw new LiaisonError('E_ARG', `${who}: ${dir}: ${PEFT_CONFIG} is not the config ${PEFT_WEIGHTS} was exported with (an interrupted export?); export again`, { param: 'dir' });
  const plan = planFactors(model, file.tensors, config, dir, who);
  return uploadFactors(model, plan, file.tensors);
}

/** @internal A checkpoint written by AdapterSet.save: everything checked, then the model's entries loaded and the adapters' uploaded. */
export async function readAdapterCheckpoint(model: Model, path: string): Promise<{ factors: Record<string, LowRankFactors>; owned: Tensor[] }> {
  const who = 'AdapterSet.load';
  const file = await readSafetensors(path);
  model.checkParsed(file, true, path);
  const text = file.metadata[META_ADAPTERS];
  if (!text) throw new LiaisonError('E_ARG', `${who}: ${path} has no '${META_ADAPTERS}' metadata (it was not written by AdapterSet.save)`, { param: 'path' });
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new LiaisonError('E_ARG', `${who}: ${path}: its '${META_ADAPTERS}' metadata is not JSON (${(e as Error).message})`, { param: 'path', cause: e });
  }
  const config = checkConfig(raw, `${path} ('${META_ADAPTERS}')`, who);
  const state = new Set(model.stateInfo.map((s) => s.name));
  const plan = planFactors(model, file.tensors, config, path, who, state);
  const own = uploadFactors(model, plan, file.tensors);
  try {
    const mine = Object.fromEntries(Object.entries(file.tensors).filter(([k]) => state.has(k)));
    const { tensors } = await model.loadParsed({ tensors: mine, metadata: file.metadata }, true, path);
    for (const t of Object.values(tensors)) t.free(); // none: the file's other tensors are the adapters'
  } catch (e) {
    for (const t of own.owned) t.free();
    throw e;
  }
  return own;
}
