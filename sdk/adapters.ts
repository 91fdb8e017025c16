/**
 * Adapters' mechanism: low-rank updates ΔW = scale · B · diag(gate) · A on a model's
 * nn.Linear / nn.Conv*d modules, added to each module's output through its `output` hook
 * point (docs/protocol.md "Hook points") while the stored weights stay untouched — merged
 * into them and back out, saved, and exchanged with Hugging Face PEFT (sdk/adapters-peft.ts).
 * Every adapter plugin (the `adapter` family, sdk/families/adapters/) builds on this.
 *
 * ```ts
 * const [site] = adapterSites(model, 'layers\\.0');                  // in 8, out 16
 * const A = rt.randn([4, site.in]).mul(0.1), B = rt.zeros([site.out, 4]);
 * const set = new AdapterSet(model, { 'layers.0': { A, B, gate: rt.ones([4]), scale: 2 } });
 * set.install();                                                     // y = W x + 2·B·A x
 * await set.merge();                                                 // W += 2·B·A, hooks off
 * await set.exportPeft('runs/adapter');                              // PeftModel.from_pretrained reads it
 * ```
 *
 * The side path of a module is one traced program, installed once: linear `y + (x Aᵀ ⊙ g) Bᵀ`,
 * conv `y + conv(conv(x, A) ⊙ g, B)` with g = scale · gate, so a forward costs two thin
 * matmuls (or convolutions) and no round trip; A, B, gate and ghost are captured tensors,
 * read live at every forward (a plugin updates them in place) and reached by autograd.
 */
import { LiaisonError, type Tensor } from '../bridge/index.js';
import { type AdapterSite, checkFactors, deltaOf, type LowRankFactors, adapterSites, sideProgram, weightDtype } from './adapter-sites.js';
import { META_ADAPTERS, type PeftLoraConfig, peftTensors, readAdapterCheckpoint, readPeftDir, writePeftDir } from './adapters-peft.js';
import type { Model } from './model.js';
import { define, noGrad, type Program } from './program.js';

export { type AdapterSite, adapterSites, type LowRankFactors } from './adapter-sites.js';
export { META_ADAPTERS, type PeftLoraConfig } from './adapters-peft.js';

export class AdapterSet {
  readonly sites: Record<string, AdapterSite>;
  readonly factors: Record<string, LowRankFactors>;
  /** The side-path programs this set installed, by module (the model frees them when they come off). */
  private programs: Record<string, Program> | null = null;
  private isMerged = false;
  /** Whether the side paths were on when merge() took them off: unmerge() puts back only that. */
  private wasInstalled = false;
  /** Factors this set made itself (importPeft, load), freed with it. */
  private owned: Tensor[] = [];

  /** Keys of `factors` are module names; each module's A, B, gate (and ghost) must fit its site. */
  constructor(readonly model: Model, factors: Record<string, LowRankFactors>) {
    const who = 'AdapterSet';
    if (factors === null || typeof factors !== 'object' || !Object.keys(factors).length) throw new LiaisonError('E_ARG', `${who}: factors must map at least one module name to {A, B, gate, scale}`, { param: 'factors' });
    const sites = adapterSites(model, Object.keys(factors), who);
    this.sites = Object.fromEntries(sites.map((s) => [s.module, s]));
    for (const s of sites) checkFactors(s, factors[s.module], who);
    this.factors = { ...factors };
  }

  /** The modules, in the order of the factors given (a file's order for importPeft and load). */
  get modules(): string[] {
    return Object.keys(this.sites);
  }

  /** Whether the update is written into the stored weights now (and the side paths are off). */
  get merged(): boolean {
    return this.isMerged;
  }

  /** Whether the side paths are on the model now. */
  get installed(): boolean {
    return this.programs !== null;
  }

  /**
   * Put the side paths on the model's modules (one traced program each). A merged set, or a
   * module whose output hook someone else installed (another AdapterSet): E_ARG.
   */
  install(): void {
    if (this.isMerged) throw new LiaisonError('E_ARG', `AdapterSet.install: the set is merged into the weights (${this.modules.join(', ')}); unmerge() puts the side paths back`, { param: 'state' });
    if (this.programs) return;
    const taken = this.modules.filter((m) => this.model.hookAt('output', m) !== undefined);
    if (taken.length) throw new LiaisonError('E_ARG', `AdapterSet.install: module${taken.length > 1 ? 's' : ''} ${taken.map((m) => `'${m}'`).join(', ')} already ha${taken.length > 1 ? 've' : 's'} an output hook (another adapter set?); remove() or free() that one first`, { param: 'state' });
    const programs: Record<string, Program> = {};
    for (const m of this.modules) {
      programs[m] = sideProgram(this.model, this.sites[m], this.factors[m]);
      this.model.setOutputHook([m], programs[m]);
    }
    this.programs = programs;
  }

  /** Take this set's side paths off: only where the program installed is still its own. */
  private uninstall(): void {
    if (!this.programs) return;
    const mine = this.modules.filter((m) => this.model.hookAt('output', m) === this.programs![m]);
    if (mine.length) this.model.setOutputHook(mine, null);
    this.programs = null;
  }

  /**
   * W += scale·B·diag(gate)·A in each stored weight (no grad), side paths off; idempotent.
   * A module with a weight hook: E_ARG (the model computes f(W)x + ΔWx unmerged but would compute
   * f(W + ΔW)x merged, another function).
   */
  async merge(): Promise<void> {
    if (this.isMerged) return;
    const hooked = this.modules.filter((m) => this.model.hookAt('weight', m) !== undefined);
    if (hooked.length) throw new LiaisonError('E_ARG', `AdapterSet.merge: module${hooked.length > 1 ? 's' : ''} ${hooked.map((m) => `'${m}'`).join(', ')} ha${hooked.length > 1 ? 've' : 's'} a weight hook, which would transform ΔW along with W: merged ≠ unmerged; remove the weight hook or keep the adapter unmerged`, { param: 'model' });
    await this.writeDeltas(1);
    this.wasInstalled = this.programs !== null;
    this.uninstall();
    this.isMerged = true;
  }

  /** W −= the same (exact up to f32 rounding while the factors are unchanged), side paths back on if they were on; idempotent. */
  async unmerge(): Promise<void> {
    if (!this.isMerged) return;
    await this.writeDeltas(-1);
    this.isMerged = false;
    if (this.wasInstalled) this.install();
    await this.model.rt.flush();
  }

  /** W ± ΔW for every module, as one program run without autograd: the factors are trainable, and ΔW must not join a graph. */
  private async writeDeltas(sign: 1 | -1): Promise<void> {
    const { rt } = this.model;
    const weights = this.modules.map((m) => this.model.param(m ? `${m}.weight` : 'weight')); // the root module ('') of an adopted nn.Linear
    const program = define(rt, { name: sign > 0 ? 'adapter-merge' : 'adapter-unmerge' }, () => noGrad(rt, () => {
      this.modules.forEach((m, i) => {
        const d = deltaOf(this.sites[m], this.factors[m], weightDtype(this.model, m));
        if (sign > 0) weights[i].add_(d);
        else weights[i].sub_(d);
      });
    }));
    try {
      program.run();
      await rt.flush();
    } finally {
      program.free();
      for (const w of weights) w.free();
    }
  }

  /** Side paths off: the model computes its base function again. A merged set: E_ARG (unmerge first). */
  remove(): void {
    if (this.isMerged) throw new LiaisonError('E_ARG', 'AdapterSet.remove: the set is merged into the weights; unmerge() first, or keep the merged model', { param: 'state' });
    this.uninstall();
  }

  /** The gates' values, per module (one round trip); a non-finite gate: E_ARG naming the module and component. */
  private async gates(): Promise<Record<string, Float32Array>> {
    const f32 = this.modules.map((m) => this.factors[m].gate.to('f32'));
    let vals: Float32Array[];
    try {
      vals = (await Promise.all(f32.map((t) => t.toArray()))) as Float32Array[];
    } finally {
      for (const t of f32) t.free();
    }
    this.modules.forEach((m, i) => {
      const k = vals[i].findIndex((v) => !Number.isFinite(v));
      if (k >= 0) throw new LiaisonError('E_ARG', `AdapterSet: module '${m}': gate[${k}] is ${vals[i][k]}; a gate must be finite (a diverged training?)`, { param: `factors.${m}.gate` });
    });
    return Object.fromEntries(this.modules.map((m, i) => [m, vals[i]]));
  }

  /** Active components per module (gate ≠ 0): the rank pattern. */
  async rankPattern(): Promise<Record<string, number>> {
    const g = await this.gates();
    return Object.fromEntries(this.modules.map((m) => [m, g[m].filter((v) => v !== 0).length]));
  }

  /** Parameters of the active components (A's rows and B's columns): what an adapter file holds. */
  async parameterCount(): Promise<number> {
    const ranks = await this.rankPattern();
    return this.modules.reduce((n, m) => {
      const s = this.sites[m];
      return n + ranks[m] * (s.in * s.kernel.reduce((a, b) => a * b, 1) + s.out);
    }, 0);
  }

  /**
   * PEFT-named compacted tensors — `base_model.model.<module>.lora_A.weight` (r_m, in[, k…]),
   * `….lora_B.weight` (out, r_m[, 1…]) — of the active components, the gate folded into B's
   * columns, and the LoRA config whose alpha_pattern gives each module our scale.
   */
  async peftTensors(): Promise<{ tensors: Record<string, Tensor>; config: PeftLoraConfig }> {
    return peftTensors(this, await this.gates());
  }

  /** Write `dir`/adapter_model.safetensors and adapter_config.json, as PEFT's save_pretrained does. */
  async exportPeft(dir: string, opts: { baseModel?: string } = {}): Promise<void> {
    const { tensors, config } = await this.peftTensors();
    try {
      await writePeftDir(dir, tensors, { ...config, base_model_name_or_path: opts.baseModel ?? null });
    } finally {
      for (const t of Object.values(tensors)) t.free();
    }
  }

  /** The adapter PEFT saved in `dir` (save_pretrained), on `model`: gates ones, scale alpha_m / r_m; installed. */
  static async importPeft(model: Model, dir: string): Promise<AdapterSet> {
    const { factors, owned } = await readPeftDir(model, dir);
    return AdapterSet.made(model, factors, owned);
  }

  /** A checkpoint of the model with this set's adapters beside it (PEFT-named; the config in metadata). Unmerged sets only. */
  async save(path: string): Promise<void> {
    if (this.isMerged) throw new LiaisonError('E_ARG', 'AdapterSet.save: the set is merged into the weights, so a checkpoint would hold it twice; unmerge() first (or save the merged model with model.save)', { param: 'state' });
    const { tensors, config } = await this.peftTensors();
    try {
      await this.model.save(path, { tensors, metadata: { [META_ADAPTERS]: JSON.stringify(config) } });
    } finally {
      for (const t of Object.values(tensors)) t.free();
    }
  }

  /** A checkpoint written by {@link save}: the model's weights loaded, its adapters installed. */
  static async load(model: Model, path: string): Promise<AdapterSet> {
    const { factors, owned } = await readAdapterCheckpoint(model, path);
    return AdapterSet.made(model, factors, owned);
  }

  private static made(model: Model, factors: Record<string, LowRankFactors>, owned: Tensor[]): AdapterSet {
    try {
      const set = new AdapterSet(model, factors);
      set.install(); // E_ARG when another set has these modules: nothing of this one is left behind
      set.owned = owned;
      return set;
    } catch (e) {
      for (const t of owned) t.free();
      throw e;
    }
  }

  /** Side paths off (when on) and the set's own tensors dropped; factors a plugin made stay the plugin's. */
  free(): void {
    this.uninstall();
    for (const t of this.owned) t.free();
    this.owned = [];
  }
}
