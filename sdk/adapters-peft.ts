/**
 * Adapters in Hugging Face PEFT's LoRA format (sdk/adapters.ts uses these): the tensors
 * `base_model.model.<module>.lora_A.weight` (r_m, in[, k…]) and `….lora_B.weight`
 * (out, r_m[, 1…]) with an `adapter_config.json` — what `PeftModel.from_pretrained` reads and
 * `save_pretrained` writes. PEFT computes y = W x + (alpha_m / r_m) · B A x, with no gate, so
 * an export keeps the active components only (gate ≠ 0), folds each gate into B's column and
 * gives each module alpha_m = scale · r_m in `alpha_pattern`; an import makes gates of ones.
 * The ghost term adds nothing to a forward, so it is not exported.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LiaisonError, type Tensor, type TensorData } from '../bridge/index.js';
import type { AdapterSite, LowRankFactors } from './adapter-sites.js';
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
  /** Exact module names with at least one active component. */
  target_modules: string[];
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
  const tensors: Record<string, Tensor> = {};
  const rank: Record<string, number> = {};
  const alpha: Record<string, number> = {};
  for (const m of set.modules) {
    const keep: bigint[] = [];
    gates[m].forEach((v, k) => { if (v !== 0) keep.push(BigInt(k)); });
    if (!keep.length) continue; // nothing of this module in the sum: PEFT gets no entry for it
    const f = set.factors[m];
    const site = set.sites[m];
    // PEFT's conv lora_A takes the base layer's kernel, stride and padding, not its dilation
    if (site.dilation.some((d) => d !== 1)) throw new LiaisonError('E_ARG', `AdapterSet.peftTensors: module '${m}' is a dilated convolution (dilation [${site.dilation}]); PEFT's LoRA convolution ignores dilation, so it would compute another function — export without it`, { param: 'dilation' });
    const idx = rt.tensor(BigInt64Array.from(keep), [keep.length], 'i64');
    const g = f.gate.indexSelect(0, idx).reshape([1, keep.length, ...site.kernel.map(() => 1)]);
    const a = f.A.indexSelect(0, idx);
    const b = f.B.indexSelect(1, idx);
    tensors[`${PREFIX}${m}.lora_A.weight`] = a.contiguous();
    tensors[`${PREFIX}${m}.lora_B.weight`] = b.mul(g);
    for (const t of [idx, g, a, b]) t.free();
    rank[m] = keep.length;
    alpha[m] = f.scale * keep.length; // PEFT's scale alpha_m / r_m is ours
  }
  const modules = Object.keys(rank);
  if (!modules.length) throw new LiaisonError('E_ARG', `AdapterSet.peftTensors: every gate is zero (modules ${set.modules.join(', ')}), so there is no component to export`, { param: 'gate' });
  const counts = new Map<number, number>();
  for (const m of modules) counts.set(rank[m], (counts.get(rank[m]) ?? 0) + 1);
  const r = [...counts.entries()].sort((x, y) => y[1] - x[1] || x[0] - y[0])[0][0];
  // PEFT reads a pattern key k as the regex (.*\.)?(k)$, first match wins: a name that ends another
  // (nested modules '0' and '3.0') is anchored so that it names only itself
  const key = (m: string) => (modules.some((o) => o.endsWith(`.${m}`)) ? `^${m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$` : m);
  const config: PeftLoraConfig = {
    peft_type: 'LORA', task_type: null, r, lora_alpha: alpha[modules.find((m) => rank[m] === r)!],
    target_modules: modules,
    rank_pattern: Object.fromEntries(modules.map((m) => [key(m), rank[m]])),
    alpha_pattern: Object.fromEntries(modules.map((m) => [key(m), alpha[m]])), lora_dropout: 0, bias: 'none', use_rslora: false,
    fan_in_fan_out: false, init_lora_weights: true, modules_to_save: null, base_model_name_or_path: null, revision: null,
    inference_mode: true, use_dora: false,
  };
  return { tensors, config };
}

/** @internal Write a PEFT adapter folder from tensors and a config (one round trip reads the tensors). */
export async function writePeftDir(dir: string, tensors: Record<string, Tensor>, config: PeftLoraConfig): Promise<void> {
  const names = Object.keys(tensors);
  const datas = await Promise.all(names.map((k) => tensors[k].data()));
  await mkdir(dir, { recursive: true });
  await writeSafetensors(join(dir, PEFT_WEIGHTS), Object.fromEntries(names.map((k, i) => [k, datas[i]])), { format: 'pt' });
  await writeFile(join(dir, PEFT_CONFIG), `${JSON.stringify(config, null, 2)}\n`);
}

function patternValue(pattern: Record<string, number> | undefined, module: string): number | undefined {
  if (!pattern) return undefined;
  if (module in pattern) return pattern[module];
  // PEFT's keys are patterns matched against the end of a module's name, first match wins
  for (const [k, v] of Object.entries(pattern)) {
    try {
      if (new RegExp(`^(?:.*\\.)?(?:${k})$`).test(module)) return v;
    } catch {
      // not a regular expression: only an exact name, tried above
    }
  }
  return undefined;
}

/** The factors PEFT-named tensors make on `model` (gates ones, scale alpha_m / r_m); uploads are owned by the caller. */
function factorsOf(model: Model, shapes: Record<string, readonly number[]>, get: (name: string) => Tensor, config: Partial<PeftLoraConfig>, source: string, who: string): { factors: Record<string, LowRankFactors>; owned: Tensor[] } {
  if (config.peft_type !== undefined && config.peft_type !== 'LORA') throw new LiaisonError('E_ARG', `${who}: ${source} holds a ${config.peft_type} adapter; only LORA is read`, { param: 'path' });
  if ((config as { use_dora?: boolean }).use_dora) throw new LiaisonError('E_ARG', `${who}: ${source} is a DoRA adapter (use_dora), which is not a low-rank sum`, { param: 'path' });
  const byModule = new Map<string, { A?: string; B?: string }>();
  for (const k of Object.keys(shapes)) {
    const hit = KEY.exec(k);
    if (!hit) continue;
    const e = byModule.get(hit[1]) ?? {};
    e[hit[2] as 'A' | 'B'] = k;
    byModule.set(hit[1], e);
  }
  if (!byModule.size) throw new LiaisonError('E_ARG', `${who}: ${source} has no LoRA tensors (base_model.model.<module>.lora_A.weight / lora_B.weight)`, { param: 'path' });
  const unknown = [...byModule.keys()].filter((m) => !model.hookModules.output.includes(m));
  if (unknown.length) throw new LiaisonError('E_ARG', `${who}: ${source} has adapters for ${unknown.join(', ')}, which the ${model.kind} model does not have; its modules are ${model.hookModules.output.join(', ')}`, { param: 'path' });
  const owned: Tensor[] = [];
  const factors: Record<string, LowRankFactors> = {};
  for (const [m, e] of byModule) {
    if (!e.A || !e.B) throw new LiaisonError('E_ARG', `${who}: ${source} has lora_${e.A ? 'A' : 'B'} but no lora_${e.A ? 'B' : 'A'} for module '${m}'`, { param: 'path' });
    const r = shapes[e.A][0];
    const alpha = patternValue(config.alpha_pattern, m) ?? config.lora_alpha ?? r;
    const scale = config.use_rslora ? alpha / Math.sqrt(r) : alpha / r;
    const A = get(e.A), B = get(e.B), gate = model.rt.ones([r]);
    owned.push(A, B, gate);
    factors[m] = { A, B, gate, scale };
  }
  return { factors, owned };
}

/** @internal The factors of the PEFT adapter saved in `dir`, uploaded. */
export async function readPeftDir(model: Model, dir: string): Promise<{ factors: Record<string, LowRankFactors>; owned: Tensor[] }> {
  const who = 'AdapterSet.importPeft';
  let config: Partial<PeftLoraConfig>;
  try {
    config = JSON.parse(await readFile(join(dir, PEFT_CONFIG), 'utf8')) as Partial<PeftLoraConfig>;
  } catch (e) {
    throw new LiaisonError('E_ARG', `${who}: cannot read ${join(dir, PEFT_CONFIG)} as JSON (${(e as Error).message})`, { param: 'dir', cause: e });
  }
  const file = await readSafetensors(join(dir, PEFT_WEIGHTS));
  const upload = (d: TensorData) => model.rt.tensor(d.data, d.shape, d.dtype);
  const shapes = Object.fromEntries(Object.entries(file.tensors).map(([k, d]) => [k, d.shape]));
  return factorsOf(model, shapes, (k) => upload(file.tensors[k]), config, dir, who);
}

/** @internal A checkpoint written by AdapterSet.save: the model's entries loaded, the adapters' uploaded. */
export async function readAdapterCheckpoint(model: Model, path: string): Promise<{ factors: Record<string, LowRankFactors>; owned: Tensor[] }> {
  const who = 'AdapterSet.load';
  const file = await readSafetensors(path);
  const text = file.metadata[META_ADAPTERS];
  if (!text) throw new LiaisonError('E_ARG', `${who}: ${path} has no '${META_ADAPTERS}' metadata (it was not written by AdapterSet.save)`, { param: 'path' });
  const shapes = Object.fromEntries(Object.entries(file.tensors).map(([k, d]) => [k, d.shape]));
  const { tensors } = await model.loadParsed(file, true, path);
  const used = new Set<string>();
  let ok = false;
  try {
    const out = factorsOf(model, shapes, (k) => { used.add(k); return tensors[k]; }, JSON.parse(text) as Partial<PeftLoraConfig>, path, who);
    ok = true;
    return out;
  } finally {
    for (const [k, t] of Object.entries(tensors)) if (!ok || !used.has(k)) t.free();
  }
}
