/**
 * A TypeScript service over a PyTorch script that already exists: the script adds
 * `svc = liaison_runtime.serve(model, optimizer=opt)` and steps `svc.optimizer`; this side
 * connects, sees its models by name and installs plugins into it. The script's own loop
 * then runs them in-process, never waiting on TypeScript per step (docs/any-loop.md).
 *
 * ```ts
 * const svc = await Service.launch('train_digits.py');      // or Service.connect(endpoint, { key })
 * await svc.install(nesterov({ lr: 0.05, momentum: 0.9 }));  // its update replays in optimizer.step()
 * await svc.install(magnitude({ sparsity: 0.8 }));           // masks held after every step
 * // a served liaison GPT: its svc.generate / svc.kv_eval decode through this policy's cache
 * await svc.install(h2o({ budget: 64 }));
 * await svc.ready();                                         // the script's serve(wait_for_client=…) goes on
 * await svc.finished();                                      // a launched script ran to its end
 * ```
 *
 * What runs where: an install traces the plugin's programs here (sdk/served/install.ts) and
 * stores them in the script, which replays them at its step moments; a plugin's loop points
 * (a pruner's epochEnd) stay TypeScript, run here when the script's event arrives, while
 * the script waits (only there). Events come over a long poll on a second connection: a
 * `ping` carrying `events` (ms to wait) that the script's server answers when an event is
 * there or the wait is up. Ops of this side land between the script's steps, never inside
 * one (one lock there), and an install takes effect at the script's next step, all its
 * programs at once.
 */
import { Connection, type ConnectOptions, LiaisonError, ProcessRuntime, type Tensor } from '../bridge/index.js';
import { pluginRecord } from './checkpoint.js';
import { LOOP_POINTS, type LoopPoint } from './hooks.js';
import { Model } from './model.js';
import { attachPlugin, checkServable, isKVPolicy, isOptimizer, isRouter, retrace, type ServedPlugin, type Traced, traceOptimizer } from './served/install.js';
import { type LaunchedScript, type LaunchOptions, launchScript } from './served/launch.js';

export type { ServedPlugin } from './served/install.js';
export type { LaunchOptions } from './served/launch.js';

export interface ServiceOptions extends ConnectOptions {
  /** How long one long poll for the script's events waits before it is asked again (default 5000 ms). */
  eventWaitMs?: number;
}

/** A loop-point event the script sent, as this side ran it. */
export interface ServedEvent {
  point: LoopPoint;
  epoch: number;
  step: number;
  metrics: Record<string, number>;
  /** The message of a hook that failed (the script is told, and goes on). */
  error?: string;
}

interface WireEvent { id: number; point: LoopPoint; epoch: number; step: number; metrics: Record<string, number> }

export class Service {
  /** Names of the models the script serves. */
  readonly models: readonly string[];
  /** Per model, the parameters the script's optimizer holds (what an optimizer plugin updates). */
  readonly optimizerParams: Readonly<Record<string, readonly string[]>>;
  /** Loop-point events run so far, in order. */
  readonly events: ServedEvent[] = [];
  /** Steps the script had begun at its latest event. */
  step = 0;
  private readonly handles = new Map<string, Model>();
  private readonly installed = new Map<object, Traced>();
  private installs = 0;
  private closing: Promise<void> | null = null;
  private readonly polling: Promise<void>;
  private failure: Error | null = null;
  private readonly watchers: ((e: ServedEvent) => void | Promise<void>)[] = [];

  private constructor(readonly rt: ProcessRuntime, private readonly events$: Connection, info: { models: string[]; optimizer_params: Record<string, string[]>; step: number }, private readonly opts: ServiceOptions, readonly script?: LaunchedScript) {
    this.models = info.models;
    this.optimizerParams = info.optimizer_params;
    this.step = info.step;
    this.polling = this.poll();
  }

  /** Connect to a script serving at `endpoint` (ipc, or tcp with its key: every message signed). */
  static async connect(endpoint: string, opts: ServiceOptions = {}): Promise<Service> {
    // a script that exits drops the connection: its requests fail with E_DEAD at once (ipc too)
    return Service.open(await ProcessRuntime.connect(endpoint, { watchPeer: true, ...opts }), opts);
  }

  /**
   * Start `python script` (it calls `liaison_runtime.serve`, which serves on an endpoint
   * chosen here) and connect to it. `finished()` waits for it to end; a script that dies
   * fails this side's pending and later requests with E_DEAD.
   */
  static async launch(script: string, opts: ServiceOptions & LaunchOptions = {}): Promise<Service> {
    const proc = await launchScript(script, opts);
    try {
      // the runtime fails with E_DEAD when the script exits; closing it leaves the script running
      const raw = opts.key ?? opts.env?.LIAISON_KEY ?? process.env.LIAISON_KEY;
      const key = typeof raw === 'string' ? Buffer.from(raw) : raw;
      const rt = await ProcessRuntime.open(proc.endpoint, key, opts, { ...proc, kill: async () => undefined });
      return await Service.open(rt, opts, proc);
    } catch (e) {
      await proc.kill();
      throw e;
    }
  }

  private static async open(rt: ProcessRuntime, opts: ServiceOptions, script?: LaunchedScript): Promise<Service> {
    try {
      const h = rt.call('serve_attach', []) as Tensor;
      const info = (await h.info()) as unknown as { models: string[]; optimizer_params: Record<string, string[]>; step: number };
      h.free();
      const raw = opts.key ?? (opts as LaunchOptions).env?.LIAISON_KEY ?? process.env.LIAISON_KEY;
      const key = typeof raw === 'string' ? Buffer.from(raw) : raw;
      const events = new Connection({ endpoint: rt.endpoint, key, heartbeatMs: 0, timeoutMs: 0 });
      return new Service(rt, events, info, opts, script);
    } catch (e) {
      await rt.close();
      throw e;
    }
  }

  /** The served model `name` as a Model over the script's own nn.Module (parameters, gradients, forward). */
  async model(name: string = this.only()): Promise<Model> {
    this.check('model');
    const have = this.handles.get(name);
    if (have) return have;
    if (!this.models.includes(name)) throw new LiaisonError('E_ARG', `Service.model: the script serves no model named '${name}'; it serves ${this.models.map((m) => `'${m}'`).join(', ')}`, { param: 'name' });
    const h = (this.rt.call('serve_model', [], { name }) as Tensor).keep();
    const m = await Model.fromHandle(this.rt, h);
    this.handles.set(name, m);
    return m;
  }

  /**
   * Install `plugin` into served model `opts.model` (default: the only one): an optimizer
   * plugin's update becomes what `svc.optimizer.step()` replays; a router goes into the
   * model's MoE layers (a liaison MoE model the script built), a KV policy into its
   * attention layers (a liaison GPT; all, or `opts.layers`; one installed before on those
   * layers is replaced there, as `Model.setKVPolicy` does); any other plugin attaches to
   * hooks whose traced points are replayed at the script's step moments. Takes effect at the
   * script's next step (a KV policy: at its next `svc.generate` / `svc.kv_eval`). A plugin a
   * served script cannot take is E_ARG, naming why.
   */
  async install(plugin: ServedPlugin, opts: { model?: string; layers?: number[] } = {}): Promise<void> {
    this.check('install');
    checkServable(plugin);
    if (this.installed.has(plugin)) throw new LiaisonError('E_ARG', `Service.install: ${pluginRecord(plugin).id} is installed already`, { param: 'plugin' });
    const name = opts.model ?? this.only();
    const model = await this.model(name);
    const key = `${pluginRecord(plugin).id}#${++this.installs}`;
    if (isRouter(plugin) || isKVPolicy(plugin)) {
      // into the model's hook points, as for any Model: the script's forward (a router) or
      // its cached decoding (a KV policy) runs it; the Model frees the program it replaces
      const kv = isKVPolicy(plugin);
      try {
        if (kv) model.setKVPolicy(plugin, { layers: opts.layers });
        else model.setRouter(plugin, { layers: opts.layers });
        await this.rt.flush();
      } catch (e) {
        if (!(e instanceof LiaisonError) || e.code !== 'E_ARG') throw e;
        throw new LiaisonError('E_ARG', `Service.install: ${pluginRecord(plugin).id}: the served model '${name}' cannot take a ${kv ? 'KV policy' : 'router plugin'}: ${e.message}`, { param: 'plugin', cause: e });
      }
      const layers = kv ? (opts.layers ?? Array.from({ length: model.hookPoints.kv }, (_, i) => i)) : undefined;
      if (layers) this.takeLayers(name, layers);
      this.installed.set(plugin, { key, model: name, fields: {}, made: [], layers });
      return;
    }
    const t = isOptimizer(plugin)
      ? traceOptimizer(this.rt, key, model, name, plugin, this.optimizerParams[name] ?? [])
      : await attachPlugin(this.rt, key, model, name, plugin, () => this.step);
    try {
      await this.send(t);
    } catch (e) {
      for (const m of t.made) m.free();
      throw e;
    }
    this.installed.set(plugin, t);
  }

  /** Remove an installed plugin (from the script's next step on). */
  async uninstall(plugin: ServedPlugin): Promise<void> {
    this.check('uninstall');
    const t = this.installed.get(plugin);
    if (!t) throw new LiaisonError('E_ARG', `Service.uninstall: ${pluginRecord(plugin).id} is not installed`, { param: 'plugin' });
    if (isRouter(plugin)) throw new LiaisonError('E_ARG', `Service.uninstall: ${pluginRecord(plugin).id} is a router: its model's MoE layers need one; install another in its place`, { param: 'plugin' });
    this.installed.delete(plugin);
    if (isKVPolicy(plugin)) { // its layers' caches keep every token again, from the script's next decoding
      (await this.model(t.model)).setKVPolicy(null, { layers: t.layers });
      await this.rt.flush();
      return;
    }
    await this.op('serve_uninstall', { key: t.key });
    for (const m of t.made) m.free();
  }

  /**
   * Follow the script's loop points (`svc.epoch_end(epoch, {loss, accuracy})`, …) even where no
   * plugin has a hook: `fn` gets each event, with the metrics the script passed, after the
   * plugins' hooks ran; the script waits for it as for them.
   */
  async watch(fn: (e: ServedEvent) => void | Promise<void>, points: readonly LoopPoint[] = LOOP_POINTS): Promise<void> {
    this.check('watch');
    if (typeof fn !== 'function') throw new LiaisonError('E_ARG', 'Service.watch: fn must be a function of the event', { param: 'fn' });
    this.watchers.push(fn);
    await this.op('serve_watch', { points: [...points] });
  }

  /** Tell the script it has what it waits for: its `serve(…, wait_for_client=…)` returns. */
  async ready(): Promise<void> {
    this.check('ready');
    await this.op('serve_ready', {});
  }

  /** A launched script's end: resolves with how it exited. */
  finished(): Promise<string> {
    if (!this.script) throw new LiaisonError('E_ARG', 'Service.finished: this service connected to a script it did not launch');
    return this.script.exited;
  }

  /** Disconnect: the script goes on with the plugins it has, or stops, as it was served (on_disconnect). */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.events$.close();
      await this.polling;
      for (const t of this.installed.values()) for (const m of t.made) m.free();
      for (const m of this.handles.values()) m.handle.free();
      await this.rt.close();
    })();
    return this.closing;
  }

  /** Stop a launched script (SIGTERM, then SIGKILL) and close. */
  async kill(): Promise<void> {
    await this.script?.kill();
    await this.close();
  }

  // ---- internals ----

  /** A KV policy set on `layers` of model `name` takes them from those installed before (one left with none is gone). */
  private takeLayers(name: string, layers: readonly number[]): void {
    for (const [p, t] of this.installed) {
      if (!isKVPolicy(p) || t.model !== name) continue;
      t.layers = t.layers!.filter((i) => !layers.includes(i));
      if (!t.layers.length) this.installed.delete(p);
    }
  }

  private only(): string {
    if (this.models.length !== 1) throw new LiaisonError('E_ARG', `Service: the script serves ${this.models.length} models (${this.models.join(', ')}); name one ({ model: '…' })`, { param: 'model' });
    return this.models[0];
  }

  private check(what: string): void {
    if (this.closing) throw new LiaisonError('E_CLOSED', `Service.${what}: the service is closed`);
    if (this.rt.closed) throw new LiaisonError('E_DEAD', `Service.${what}: the connection to the served script is gone (the script ended or died${this.script ? `; last output:\n${this.script.stderrTail()}` : ''})`);
    if (this.failure) throw this.failure;
  }

  private async op(name: string, kw: Record<string, unknown>): Promise<Record<string, unknown>> {
    const h = this.rt.call(name, [], kw as never) as Tensor;
    try {
      return (await h.info()) as unknown as Record<string, unknown>;
    } finally {
      h.free();
    }
  }

  private async send(t: Traced): Promise<void> {
    await this.op('serve_install', { key: t.key, model: t.model, ...t.fields });
  }

  /** The long poll: each event's hooks run here, then the script is told (it waits for that). */
  private async poll(): Promise<void> {
    const wait = this.opts.eventWaitMs ?? 5000;
    while (!this.closing && !this.rt.closed) {
      let events: WireEvent[];
      try {
        const { header } = await this.events$.request('ping', { sid: this.rt.info.sid, events: wait }, [], wait + 60_000);
        events = ((header as Record<string, unknown>).events as WireEvent[] | undefined) ?? [];
      } catch (e) {
        if (!this.closing && !this.rt.closed) this.failure = e as Error;
        return;
      }
      for (const ev of events) await this.run(ev);
    }
  }

  private async run(ev: WireEvent): Promise<void> {
    this.step = ev.step;
    const done: ServedEvent = { point: ev.point, epoch: ev.epoch, step: ev.step, metrics: ev.metrics };
    try {
      for (const t of [...this.installed.values()]) {
        const hooks = t.hooks;
        if (!hooks?.loop[ev.point].length) continue;
        await hooks.runLoop(ev.point, { epoch: ev.epoch, step: ev.step, metrics: ev.metrics });
        if (hooks.stale) { // the plugin replaced what its programs captured: new ones, from the next step
          retrace(this.rt, t, await this.model(t.model));
          await this.send(t);
        }
      }
      for (const fn of this.watchers) await fn(done);
    } catch (e) {
      done.error = (e as Error).message;
    }
    this.events.push(done);
    if (this.rt.closed) return;
    await this.op('serve_ack', { id: ev.id, ...(done.error ? { error: done.error } : {}) }).catch((e: Error) => {
      this.failure ??= e;
    });
  }
}
