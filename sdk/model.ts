/**
 * Models: built by the runtime from a typed spec (sdk/model-spec.ts), or any `nn.Module`
 * adopted by handle; parameters, gradients, activations and state reachable by name as
 * remote tensors; checkpoints in safetensors; KV-cache policies and MoE routers installed
 * as traced programs at the model's hook points.
 *
 * ```ts
 * const model = await Model.build(rt, { kind: 'gpt', vocab: 128, context: 128 }, { seed: 0 });
 * const logits = model.forward(tokens);                       // (B, T, 128)
 * rt.call('backward', [logits.logSoftmax().mean().neg()]);
 * const g = model.grad('blocks.0.attn.qkv.weight');
 * model.setKVPolicy(slidingWindow({ budget: 64 }));
 * const out = model.generate(prompt, { steps: 100 });
 * await model.save('runs/gpt.safetensors');
 * ```
 *
 * Every method that returns a Tensor queues an op and returns at once, like the Tensor
 * API; the async ones wait for the runtime. Names are checked here against what the
 * runtime described when the model was made, so a wrong name fails at once, listing the
 * right ones.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { LiaisonError, packageRoot, type Runtime, Tensor, type TensorData } from '../bridge/index.js';
import { kvHookOptions, kvPolicyProgram } from './families/kv-policies/base.js';
import type { KVPolicy } from './families/kv-policies/types.js';
import { routeForm, routerProgram } from './families/routers/base.js';
import type { Router, RouterDims } from './families/routers/types.js';
import { HOOK_POINTS, type HookPointName, type LayerPointName, type ModulePointName, hookSites } from './hook-points.js';
import type { ModelLike, ParamInfo } from './hooks.js';
import { type ModelSpec, runtimeSpec, specJSON, specRouter } from './model-spec.js';
import { getPlugin, requirePlugin } from './plugin.js';
import type { Program } from './program.js';
import { readSafetensors, writeSafetensors } from './safetensors.js';

/** A state_dict entry, as the runtime describes it. */
export interface StateEntry {
  name: string;
  shape: number[];
  dtype: string;
}

/** What the runtime's describe() of a model handle holds. */
interface Description {
  type: string;
  kind: string;
  params: ParamInfo[];
  state: StateEntry[];
  /** Sites of the layer-indexed hook points, counted; of the module-named ones, by name (sdk/hook-points.ts). */
  hooks?: Partial<Record<string, number>>;
  hook_modules?: Partial<Record<string, string[]>>;
  module_geometry?: Record<string, ModuleGeometry>;
}

/** A module-named hook site's layer geometry, as the runtime describes it (what an adapter's factors must fit). */
export interface ModuleGeometry {
  kind: 'linear' | 'conv1d' | 'conv2d' | 'conv3d';
  /** In and out features (linear) or channels (conv). */
  in: number;
  out: number;
  /** Per spatial dim; [] for linear. padding 'same' only where it pads one side more (an even kernel). */
  kernel: number[]; stride: number[]; padding: number[] | 'same'; dilation: number[];
  groups: number;
  /** torch's padding_mode: 'zeros', 'reflect', 'replicate' or 'circular'. */
  padding_mode: string;
}

/** A safetensors file as `readSafetensors` returns it. */
type ParsedFile = { tensors: Record<string, TensorData>; metadata: Record<string, string> };

/** Checkpoint metadata key of the model's spec as JSON (its router as plugin name and config), written by {@link Model.save}. */
export const META_SPEC = 'liaison.spec';
/** Checkpoint metadata key of the liaison package version that wrote the file. */
export const META_VERSION = 'liaison.version';
/** Checkpoint metadata key of the model's kind ('mlp', 'gpt', …, 'module'). */
export const META_KIND = 'liaison.kind';

const LISTED = 20;
function listed(names: readonly string[]): string {
  if (!names.length) return 'none';
  return names.slice(0, LISTED).join(', ') + (names.length > LISTED ? `, … (${names.length} in all)` : '');
}

let version: string | undefined;
function liaisonVersion(): string {
  try {
    version ??= JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
  } catch {
    version = 'unknown';
  }
  return version;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** How {@link Model.selectModules}' errors word themselves: the error's `param`, and the words before the list of sites when a listed name is no site (`site`) or nothing matched (`none`). */
export interface SelectWords { param?: string; site?: string; none?: string }

export class Model implements ModelLike {
  /** 'mlp' | 'cnn' | 'gpt' | 'moe' | 'additive' | 'factory', or 'module' for an adopted module. */
  readonly kind: string;
  /** Trainable parameters, in named_parameters() order. */
  readonly params: readonly ParamInfo[];
  /** state_dict entries (parameters and buffers), in state_dict order: what checkpoints hold. */
  readonly stateInfo: readonly StateEntry[];
  /** How many sites each layer-indexed hook point has: attention layers (kv) and MoE layers (router). */
  readonly hookPoints: Readonly<Record<LayerPointName, number>>;
  /** The modules each module-named hook point can be installed on: `weight` and `output` (every nn.Linear and nn.Conv*d). */
  readonly hookModules: Readonly<Record<ModulePointName, readonly string[]>>;
  /** Those modules' geometry by name: kind, in/out, kernel, stride, padding, dilation, groups. */
  readonly moduleGeometry: Readonly<Record<string, Readonly<ModuleGeometry>>>;
  private readonly paramNames: Set<string>;
  private readonly stateNames: Set<string>;
  private captured: string[] = [];
  /** The programs installed per hook point and site (freed once no site uses them). */
  private readonly installed = Object.fromEntries(Object.keys(HOOK_POINTS).map((k) => [k, new Map<number | string, Program>()])) as Record<HookPointName, Map<number | string, Program>>;

  private constructor(readonly rt: Runtime, readonly handle: Tensor, d: Description, readonly spec: ModelSpec | null) {
    // the model outlives any rt.scope() it was made in (a scope cannot see into a Model)
    handle.keep();
    this.kind = d.kind;
    this.params = Object.freeze(d.params.map((p) => Object.freeze({ ...p })));
    this.stateInfo = Object.freeze(d.state.map((s) => Object.freeze({ ...s })));
    const sites = hookSites(d.hooks, d.hook_modules);
    this.hookPoints = Object.freeze(sites.counts);
    this.hookModules = Object.freeze(sites.modules);
    this.moduleGeometry = Object.freeze({ ...d.module_geometry });
    this.paramNames = new Set(d.params.map((p) => p.name));
    this.stateNames = new Set(d.state.map((s) => s.name));
  }

  /**
   * Build a model in the runtime. With `seed` the initial weights are the same every
   * time (the runtime's random stream is left alone). A GPT spec with `moe` gets its
   * router installed at every MoE layer. Resolves once the runtime has built it; a bad
   * spec rejects with E_ARG naming the field.
   */
  static async build(rt: Runtime, spec: ModelSpec, opts: { seed?: number } = {}): Promise<Model> {
    const handle = rt.call('model_build', [runtimeSpec(spec, opts.seed) as never]) as Tensor;
    const model = new Model(rt, handle, await describe(handle, 'Model.build'), spec);
    const router = specRouter(spec);
    if (router) {
      model.setRouter(router);
      await rt.flush(); // a router that does not trace fails here, not at the first forward
    }
    return model;
  }

  /**
   * A model around a handle the runtime already holds: a module adopted through the
   * pythonia hatch (`await rt.adopt(module)`), or another Model's handle. Its MoE layers,
   * if any, need `setRouter()` before a forward.
   */
  static async fromHandle(rt: Runtime, handle: Tensor): Promise<Model> {
    if (!(handle instanceof Tensor) || handle.rt !== rt) throw new LiaisonError('E_ARG', 'Model.fromHandle: handle must be a tensor handle of this runtime', { param: 'handle' });
    return new Model(rt, handle, await describe(handle, 'Model.fromHandle'), null);
  }

  /**
   * Build the model a checkpoint written by {@link save} describes (its `liaison.spec`
   * metadata) and load it. A router is made again from its registered plugin (its module
   * must have been imported) and saved config. Resolves with the model and the checkpoint's
   * other tensors and metadata, as {@link load} does.
   */
  static async fromCheckpoint(rt: Runtime, path: string): Promise<{ model: Model; tensors: Record<string, Tensor>; metadata: Record<string, string> }> {
    const file = await readSafetensors(path);
    const text = file.metadata[META_SPEC];
    if (!text) throw new LiaisonError('E_ARG', `Model.fromCheckpoint: ${path} has no '${META_SPEC}' metadata (it was not written by Model.save); build the model and call load()`, { param: 'path' });
    let spec: ModelSpec;
    try {
      spec = JSON.parse(text) as ModelSpec;
    } catch (e) {
      throw new LiaisonError('E_ARG', `Model.fromCheckpoint: the '${META_SPEC}' metadata of ${path} is not JSON`, { param: 'path', cause: e });
    }
    if (spec === null || typeof spec !== 'object' || Array.isArray(spec)) throw new LiaisonError('E_ARG', `Model.fromCheckpoint: the '${META_SPEC}' metadata of ${path} is ${text}, not a model spec object`, { param: 'path' });
    const holder = spec.kind === 'moe' ? spec : spec.kind === 'gpt' && spec.moe ? spec.moe : null;
    if (holder) {
      const r = holder.router as unknown as { plugin: string; config: object } | null;
      const field = spec.kind === 'moe' ? 'router' : 'moe.router';
      if (typeof r?.plugin !== 'string') throw new LiaisonError('E_ARG', `Model.fromCheckpoint: the '${META_SPEC}' metadata of ${path} has ${field} ${JSON.stringify(r)}, not {plugin, config}`, { param: 'path' });
      holder.router = getPlugin('router', r.plugin)(r.config) as Router;
    }
    const model = await Model.build(rt, spec);
    return { model, ...(await model.loadParsed(file, true, path)) };
  }

  // ---- parameters, gradients, activations ----

  /** The named parameter itself (in-place ops on it change the model). Unknown name: E_ARG listing the names. */
  param(name: string): Tensor {
    this.checkParam('param', name);
    return this.shaped(this.rt.call('model_param', [this.handle, name]) as Tensor, name);
  }

  /** The named parameter's gradient from the backward passes so far (zeros when it has none). */
  grad(name: string): Tensor {
    this.checkParam('grad', name);
    return this.shaped(this.rt.call('model_grad', [this.handle, name]) as Tensor, name);
  }

  /** A parameter's (or its gradient's) static shape, which the model's description gives (Tensor.shape). */
  private shaped(t: Tensor, name: string): Tensor {
    t.sh = this.params.find((p) => p.name === name)?.shape;
    return t;
  }

  private checkParam(method: string, name: string): void {
    if (!this.paramNames.has(name)) throw new LiaisonError('E_ARG', `Model.${method}: the ${this.kind} model has no parameter '${name}'; it has ${listed([...this.paramNames])}`, { param: 'name' });
  }

  /**
   * `model(*inputs)`. train (default true): training mode with autograd, so `backward`
   * reaches the parameters; false: eval mode (no dropout) without a graph.
   */
  forward(inputs: Tensor | Tensor[], opts: { train?: boolean } = {}): Tensor {
    const list = inputs instanceof Tensor ? [inputs] : inputs;
    if (!Array.isArray(list) || !list.every((t) => t instanceof Tensor)) throw new LiaisonError('E_ARG', 'Model.forward: inputs must be a tensor or a list of tensors', { param: 'inputs' });
    return this.rt.call('model_forward', [this.handle, list], { train: opts.train ?? true }) as Tensor;
  }

  /** Record the outputs of these submodules (e.g. 'acts.0', 'blocks.1.attn') at every forward; [] stops. */
  capture(names: string[]): void {
    if (!Array.isArray(names) || !names.every((n) => typeof n === 'string')) throw new LiaisonError('E_ARG', 'Model.capture: names must be a list of submodule names', { param: 'names' });
    this.rt.call('model_capture', [this.handle, names], undefined, 0);
    this.captured = [...names];
  }

  /** What the named captured submodule output in the last forward (detached). */
  activation(name: string): Tensor {
    if (!this.captured.includes(name)) throw new LiaisonError('E_ARG', `Model.activation: '${name}' is not captured; call capture([..., '${name}']) before the forward (captured: ${listed(this.captured)})`, { param: 'name' });
    return this.rt.call('model_activation', [this.handle, name]) as Tensor;
  }

  /**
   * () f32: the MoE layers' auxiliary losses from the last forward, summed; 0 without MoE.
   * `'aux'` (default): the routers' load-balancing losses; `'zloss'`: their z-losses.
   */
  auxLoss(kind: 'aux' | 'zloss' = 'aux'): Tensor {
    if (kind !== 'aux' && kind !== 'zloss') throw new LiaisonError('E_ARG', `Model.auxLoss: kind must be 'aux' or 'zloss', got ${JSON.stringify(kind)}`, { param: 'kind' });
    return this.rt.call('model_aux_loss', kind === 'aux' ? [this.handle] : [this.handle, kind]) as Tensor;
  }

  // ---- state and checkpoints ----

  /** The state_dict by name: tensors sharing the model's memory (not copies). */
  state(): Record<string, Tensor> {
    const n = this.stateInfo.length;
    if (n === 0) return {};
    const out = this.rt.call('model_state', [this.handle], undefined, n);
    const list = n === 1 ? [out as Tensor] : (out as Tensor[]);
    list.forEach((t, i) => { t.sh = this.stateInfo[i].shape; });
    return Object.fromEntries(this.stateInfo.map((s, i) => [s.name, list[i]]));
  }

  /**
   * Copy tensors into the named state entries. strict (default true): the names must be
   * exactly the model's, else E_ARG naming the missing and unexpected ones; otherwise the
   * entries that match are loaded and the rest ignored. A shape mismatch fails in the runtime.
   */
  loadState(tensors: Record<string, Tensor>, opts: { strict?: boolean } = {}): void {
    const strict = opts.strict ?? true;
    const names = Object.keys(tensors);
    for (const n of names) if (!(tensors[n] instanceof Tensor)) throw new LiaisonError('E_ARG', `Model.loadState: '${n}' is not a tensor`, { param: 'tensors' });
    const unexpected = names.filter((n) => !this.stateNames.has(n));
    const missing = this.stateInfo.map((s) => s.name).filter((n) => !(n in tensors));
    if (strict && (missing.length || unexpected.length)) {
      throw new LiaisonError('E_ARG', `Model.loadState: the tensors do not match the model's state: missing ${listed(missing)}; unexpected ${listed(unexpected)} (pass {strict: false} to load what matches)`, { param: 'tensors' });
    }
    const known = names.filter((n) => this.stateNames.has(n));
    this.rt.call('model_load_state', [this.handle, known, known.map((n) => tensors[n])], { strict: false }, 0);
  }

  /**
   * Write a safetensors checkpoint: the model's state under its state names, `extra`
   * tensors under their own names (optimizer or plugin state), and metadata (the spec as
   * JSON, the liaison version, `format: pt`, then `extra.metadata`). One round trip reads
   * everything; the file is then written from here, so this works with remote runtimes.
   */
  async save(path: string, extra: { tensors?: Record<string, Tensor>; metadata?: Record<string, string> } = {}): Promise<void> {
    const more = extra.tensors ?? {};
    const clash = Object.keys(more).filter((k) => this.stateNames.has(k));
    if (clash.length) throw new LiaisonError('E_ARG', `Model.save: extra tensors ${listed(clash)} have the names of model state entries; prefix them (e.g. 'optimizer.${clash[0]}')`, { param: 'extra' });
    const state = this.state();
    let datas: TensorData[];
    const entries = [...Object.entries(state), ...Object.entries(more)];
    try {
      datas = await Promise.all(entries.map(([, t]) => t.data()));
    } finally {
      for (const t of Object.values(state)) t.free();
    }
    const metadata: Record<string, string> = { format: 'pt', [META_VERSION]: liaisonVersion(), [META_KIND]: this.kind };
    if (this.spec) metadata[META_SPEC] = specJSON(this.spec);
    await writeSafetensors(path, Object.fromEntries(entries.map(([k], i) => [k, datas[i]])), { ...metadata, ...extra.metadata });
  }

  /**
   * Load a safetensors file, or a Hugging Face-style folder (`model.safetensors`, or a
   * sharded index), from the runtime's own disk, without the bytes passing through this
   * process. Local runtimes allow it; a tcp runtime needs `--allow-files`. Queued.
   */
  loadFile(path: string, opts: { strict?: boolean } = {}): void {
    this.rt.call('model_load_file', [this.handle, path], { strict: opts.strict ?? true }, 0);
  }

  /**
   * Write the state as safetensors on the runtime's disk (`path`, or `path/model.safetensors`
   * for a folder), inside the runtime's file root (`fileRoot` / `--file-root`). An existing
   * file is an E_ARG unless `overwrite` is true. Queued.
   */
  saveFile(path: string, opts: { overwrite?: boolean } = {}): void {
    this.rt.call('model_save_file', [this.handle, path], { overwrite: opts.overwrite ?? false }, 0);
  }

  /**
   * Load a safetensors checkpoint (this project's, or a Hugging Face file whose names
   * match): the model's entries are uploaded and loaded; every other tensor comes back
   * uploaded, by name, with the metadata. strict (default true): every state entry must
   * be in the file, else E_ARG naming the missing ones. Shapes are checked before upload.
   */
  async load(path: string, opts: { strict?: boolean } = {}): Promise<{ tensors: Record<string, Tensor>; metadata: Record<string, string> }> {
    return this.loadParsed(await readSafetensors(path), opts.strict ?? true, path);
  }

  /**
   * @internal The checks {@link load} makes, on a file already read (`readSafetensors`):
   * E_ARG naming the missing state entries (strict), E_SHAPE naming the entries whose shapes
   * differ. Nothing is sent: a caller (Trainer.resume) checks everything before it changes anything.
   */
  checkParsed(file: ParsedFile, strict: boolean, path: string): void {
    const { tensors } = file;
    const missing = this.stateInfo.filter((s) => !(s.name in tensors)).map((s) => s.name);
    if (strict && missing.length) throw new LiaisonError('E_ARG', `Model.load: ${path} lacks state entries of the model: missing ${listed(missing)} (pass {strict: false} to load what matches)`, { param: 'path' });
    const bad = this.stateInfo.filter((s) => s.name in tensors && !sameShape(s.shape, tensors[s.name].shape));
    if (bad.length) {
      throw new LiaisonError('E_SHAPE', `Model.load: ${path} does not fit the model: ${bad.slice(0, LISTED).map((s) => `${s.name} is [${tensors[s.name].shape}] in the file, [${s.shape}] in the model`).join('; ')}`, { param: 'path' });
    }
  }

  /**
   * @internal {@link load} of a file already read (Model.fromCheckpoint, Trainer.resume):
   * checked ({@link checkParsed}), then the model's entries loaded and the others uploaded.
   */
  async loadParsed(file: ParsedFile, strict: boolean, path: string): Promise<{ tensors: Record<string, Tensor>; metadata: Record<string, string> }> {
    this.checkParsed(file, strict, path);
    const { tensors, metadata } = file;
    const upload = (d: TensorData) => this.rt.tensor(d.data, d.shape, d.dtype);
    const mine = Object.fromEntries(this.stateInfo.filter((s) => s.name in tensors).map((s) => [s.name, upload(tensors[s.name])]));
    this.loadState(mine, { strict: false });
    for (const t of Object.values(mine)) t.free();
    const others = Object.fromEntries(Object.keys(tensors).filter((k) => !this.stateNames.has(k)).map((k) => [k, upload(tensors[k])]));
    await this.rt.flush();
    return { tensors: others, metadata };
  }

  // ---- hook points ----

  /**
   * Install a KV-cache policy at the attention layers (all, or `layers`); null removes
   * it (the cache then keeps everything). Used by generate(), perplexity().
   */
  setKVPolicy(policy: KVPolicy | null, opts: { layers?: number[] } = {}): void {
    if (policy !== null) requirePlugin(policy, 'kv-policy', 'KVPolicy', ['budget', 'cache', 'state', 'score'], 'Model.setKVPolicy: policy', 'policy');
    const layers = this.layers('setKVPolicy', 'kv', opts.layers);
    if (policy === null) {
      this.rt.call('model_hook', [this.handle, 'kv', null, { layers }], undefined, 0);
      this.track('kv', null, layers);
      return;
    }
    // the family's program, whether or not the policy extends the shared base: it needs
    // only the contract's members (meta, budget, state(), score())
    const program = kvPolicyProgram(this.rt, policy);
    this.rt.call('model_hook', [this.handle, 'kv', program.handle, { ...kvHookOptions(policy), layers }], undefined, 0);
    this.track('kv', program, layers);
  }

  /**
   * Install a router at the MoE layers (all, or `layers`). Its `params()` must match the
   * router parameters the model was built with (they are fixed at build time).
   */
  setRouter(router: Router, opts: { layers?: number[] } = {}): void {
    requirePlugin(router, 'router', 'Router', ['params', 'route'], 'Model.setRouter: router', 'router');
    const layers = this.layers('setRouter', 'router', opts.layers);
    const { dims, prefix } = this.moeLayout();
    const want = Object.entries(router.params(dims)).map(([n, p]) => `${n} [${p.shape}]`);
    const have = this.params.filter((p) => p.name.startsWith(`${prefix}.router.`)).map((p) => `${p.name.slice(prefix.length + 8)} [${p.shape}]`);
    if (want.join(', ') !== have.join(', ')) {
      throw new LiaisonError('E_ARG', `Model.setRouter: router '${router.meta.name}' declares parameters ${want.join(', ') || 'none'}, but the model's MoE layers were built with ${have.join(', ') || 'none'}; a router's parameters are fixed when the model is built`, { param: 'router' });
    }
    const program = routerProgram(this.rt, router, dims);
    const form = routeForm(router);
    this.rt.call('model_hook', [this.handle, 'router', program.handle, { layers, form }], undefined, 0);
    this.track('router', program, layers);
  }

  /** The MoE layers' width and expert count, from the parameter names (`….moe.experts.<e>.fc.weight`). */
  private moeLayout(): { dims: RouterDims; prefix: string } {
    let prefix: string | undefined;
    let experts = 0;
    let dim = 0;
    for (const p of this.params) {
      const m = /^(.*moe)\.experts\.(\d+)\.fc\.weight$/.exec(p.name);
      if (!m || (prefix !== undefined && m[1] !== prefix)) continue;
      prefix = m[1];
      experts = Math.max(experts, Number(m[2]) + 1);
      dim = p.shape[1];
    }
    if (prefix === undefined) throw new LiaisonError('E_ARG', `Model.setRouter: the ${this.kind} model has no MoE layer (a gpt spec with 'moe' and a 'moe' spec have them)`, { param: 'router' });
    return { dims: { dim, experts }, prefix };
  }

  /**
   * Install `program` at the weight hook point of the modules `modules` names (a regular
   * expression, Python `re` syntax, matched against whole module names, or a list of exact
   * names); null removes it there. The program takes the stored weight and returns the
   * weight the forward uses (same shape and dtype); the plugin's tensors it uses are
   * captured by it. sdk/weight-hooks.ts traces such programs ({@link weightHook}).
   */
  setWeightHook(modules: string | readonly string[], program: Program | null): string[] {
    return this.setModuleHook('setWeightHook', 'weight', modules, program);
  }

  /**
   * Install `program` at the output hook point of the modules `modules` names (as
   * {@link setWeightHook}); null removes it there. The program takes `[x, y]` (the module's
   * input and output) and returns what the model gets instead of y (y's shape and dtype),
   * after every forward of the module: an adapter adds its side path to y (sdk/adapters.ts).
   */
  setOutputHook(modules: string | readonly string[], program: Program | null): string[] {
    return this.setModuleHook('setOutputHook', 'output', modules, program);
  }

  /**
   * The program installed from here at `point` on `site` (a module name, or a layer index for
   * kv / router), or undefined: who owns a hook (sdk/adapters.ts refuses to clobber another's).
   */
  hookAt(point: HookPointName, site: number | string): Program | undefined {
    return this.installed[point].get(site);
  }

  /**
   * The modules of a module-named hook point that `modules` picks — a regular expression
   * matched against whole module names, or a list of exact names — in the model's order.
   * E_ARG (with `param`, starting with `who`) for a bad pattern, a listed name that is no site
   * of the point, or nothing matched, listing the model's sites (`words`: how the messages
   * name them). The one selection behind
   * setWeightHook, setOutputHook, weightHook and adapterSites.
   */
  selectModules(point: ModulePointName, modules: string | readonly string[], who: string, words: SelectWords = {}): string[] {
    const param = words.param ?? 'modules';
    const site = words.site ?? `a module with a ${point} hook point; the ${this.kind} model's are`;
    const none = words.none ?? ` with a ${point} hook point; the ${this.kind} model's are`;
    const sites = this.hookModules[point];
    let chosen: string[];
    if (typeof modules === 'string') {
      let rx: RegExp;
      try {
        rx = new RegExp(`^(?:${modules})$`);
      } catch (e) {
        throw new LiaisonError('E_ARG', `${who}: ${param} ${JSON.stringify(modules)} is not a regular expression`, { param, cause: e });
      }
      chosen = sites.filter((n) => rx.test(n));
    } else if (Array.isArray(modules) && modules.every((m) => typeof m === 'string')) {
      const unknown = modules.filter((n) => !sites.includes(n));
      if (unknown.length) throw new LiaisonError('E_ARG', `${who}: ${unknown.map((n) => `'${n}'`).join(', ')} is not ${site} ${listed(sites)}`, { param });
      chosen = sites.filter((n) => modules.includes(n));
    } else {
      throw new LiaisonError('E_ARG', `${who}: ${param} must be a regular expression (a string) or a list of module names, got ${JSON.stringify(modules)}`, { param });
    }
    if (!chosen.length) throw new LiaisonError('E_ARG', `${who}: ${JSON.stringify(modules)} matches no module${none} ${listed(sites)}`, { param });
    return chosen;
  }

  private setModuleHook(method: string, point: ModulePointName, modules: string | readonly string[], program: Program | null): string[] {
    const chosen = this.selectModules(point, modules, `Model.${method}`);
    const pattern = chosen.map(escapeRegExp).join('|');
    this.rt.call('model_hook', [this.handle, point, program?.handle ?? null, { modules: pattern }], undefined, 0);
    this.track(point, program, chosen);
    return chosen;
  }

  private layers(method: string, point: LayerPointName, layers?: number[]): number[] {
    const n = this.hookPoints[point];
    const what = HOOK_POINTS[point].what;
    if (n === 0) throw new LiaisonError('E_ARG', `Model.${method}: the ${this.kind} model has no ${what} layers to hook`, { param: 'model' });
    if (layers === undefined) return Array.from({ length: n }, (_, i) => i);
    if (!Array.isArray(layers) || !layers.every((i) => Number.isInteger(i) && i >= 0 && i < n)) {
      throw new LiaisonError('E_ARG', `Model.${method}: layers must be ${what} layer indices in [0, ${n}), got ${JSON.stringify(layers)}`, { param: 'layers' });
    }
    return layers;
  }

  private track(point: HookPointName, program: Program | null, sites: readonly (number | string)[]): void {
    const map = this.installed[point];
    const old = new Set(sites.map((i) => map.get(i)).filter((p): p is Program => p !== undefined));
    for (const i of sites) {
      if (program) map.set(i, program);
      else map.delete(i);
    }
    const inUse = new Set(Object.values(this.installed).flatMap((m) => [...m.values()]));
    for (const p of old) if (!inUse.has(p)) p.free(); // the model keeps its own reference to what it runs
  }

  // ---- decoding (GPT models) ----

  /**
   * (B, T0) i64 prompt -> (B, T0 + steps) i64, one token at a time through the KV cache
   * and its policy. temperature 0 (default) is greedy; above 0 samples, reproducibly with `seed`.
   * `lengths` (one per row) makes the prompts ragged: row b is left-padded, its tokens are
   * the last lengths[b] of its row and the first of them is at position 0; the padding is
   * returned as given. A model with rotary positions decodes past its context.
   */
  generate(prompt: Tensor, opts: { steps: number; temperature?: number; seed?: number; lengths?: number[] }): Tensor {
    if (!Number.isInteger(opts?.steps) || opts.steps < 0) throw new LiaisonError('E_ARG', `Model.generate: steps must be an integer >= 0, got ${opts?.steps}`, { param: 'steps' });
    const { lengths } = opts;
    if (lengths !== undefined && (!Array.isArray(lengths) || !lengths.every((n) => Number.isInteger(n) && n >= 1))) {
      throw new LiaisonError('E_ARG', `Model.generate: lengths must be integers >= 1 (one per prompt row), got ${JSON.stringify(lengths)}`, { param: 'lengths' });
    }
    const rows = lengths === undefined ? undefined : this.rt.tensor(BigInt64Array.from(lengths, (n) => BigInt(n)), [lengths.length], 'i64');
    try {
      return this.rt.call('generate', [this.handle, prompt, opts.steps], { temperature: opts.temperature ?? 0, seed: opts.seed, lengths: rows }) as Tensor;
    } finally {
      rows?.free();
    }
  }

  /**
   * Perplexity of held-out (B, T) tokens, decoded one at a time through the KV cache and
   * its policy (teacher forcing): tokens `prefill..T` are scored, each given all before it
   * as the cache keeps them; `prefill` (default 1) tokens go in at once first. The time is
   * the runtime's decoding time plus one round trip.
   */
  async perplexity(tokens: Tensor, opts: { prefill?: number } = {}): Promise<{ perplexity: number; nll: number; tokens: number; seconds: number; tokensPerSecond: number }> {
    const prefill = opts.prefill ?? 1;
    await this.rt.flush(); // time this evaluation, not what was queued before it
    const t0 = performance.now();
    const nll = this.rt.call('kv_eval', [this.handle, tokens, prefill]) as Tensor; // (B, T - prefill)
    const wide = nll.to('f64');
    const mean = wide.mean();
    try {
      const [m, info] = await Promise.all([mean.item(), nll.info()]);
      const seconds = (performance.now() - t0) / 1000;
      const count = info.shape.reduce((a, b) => a * b, 1);
      return { perplexity: Math.exp(m), nll: m, tokens: count, seconds, tokensPerSecond: count / seconds };
    } finally {
      for (const t of [nll, wide, mean]) t.free();
    }
  }

  /**
   * What each attention layer's cache held at the end of the last generate() or
   * perplexity(): its tokens (the most any batch row held) and its bytes (every buffer at
   * its allocated size: keys and values with their quantization scales and minima,
   * positions, the policy's state). `rowBytes`: apart from the cache, the attention rows it
   * keeps for its policy's next run (working memory: min(evict, 64) rows of its slots, fewer
   * where more would pass 1/8 of the cache's bytes, f16 beside quantized entries; 0 with no policy).
   */
  async kvCacheSize(): Promise<{ tokens: number[]; bytes: number[]; totalBytes: number; rowBytes: number[]; totalRowBytes: number }> {
    const t = this.rt.call('kv_cache_size', [this.handle]) as Tensor; // (L, 3) i64
    try {
      const flat = Array.from(await t.toArray() as BigInt64Array, Number);
      const col = (c: number) => flat.filter((_, i) => i % 3 === c);
      const [tokens, bytes, rowBytes] = [col(0), col(1), col(2)];
      const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
      return { tokens, bytes, totalBytes: sum(bytes), rowBytes, totalRowBytes: sum(rowBytes) };
    } finally {
      t.free();
    }
  }

  /**
   * Every attention layer's causal softmax weights in a plain forward of (B, T) i64
   * tokens (T <= context; eval mode, no grad): (L, B, H, T, T) f32.
   */
  attentionWeights(tokens: Tensor): Tensor {
    return this.rt.call('attention_weights', [this.handle, tokens]) as Tensor;
  }

  /** Drop the runtime's handle to the model and the programs installed from here. */
  free(): void {
    for (const p of new Set(Object.values(this.installed).flatMap((m) => [...m.values()]))) p.free();
    for (const m of Object.values(this.installed)) m.clear();
    this.handle.free();
  }
}

async function describe(handle: Tensor, who: string): Promise<Description> {
  const d = (await handle.info()) as unknown as Partial<Description>;
  if (!d || !Array.isArray(d.params) || !Array.isArray(d.state)) {
    throw new LiaisonError('E_ARG', `${who}: the handle holds a ${String((d as { type?: string })?.type ?? (d as { dtype?: string })?.dtype ?? 'value')}, not a model (an nn.Module)`, { param: 'handle' });
  }
  return d as Description;
}
