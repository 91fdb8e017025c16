/**
 * A text-generation service: each request brings its own prompt, KV policy, budget and
 * bits, and requests that share (policy, budget, bits, temperature) are answered together
 * by ONE batched `model.generate(prompt, { steps, lengths })` of left-padded ragged
 * prompts. Different groups take turns: a request waits at most a short batching window
 * (or for the batch running now), then the oldest request's group goes, up to `maxBatch`
 * rows, with everything queued that shares its settings.
 *
 * The HTTP face is node:http: `POST /generate` with JSON
 * `{ prompt, policy, budget, bits, steps, temperature }` answers JSON `{ text, tokens,
 * policy, budget, bits, kvBytes, tokensPerSecond, batchSize, seconds }`; a bad field is a
 * 400 `{ error, field }` whose message is the one the policy plugin's own TypeBox schema
 * gives (a budget of 0 is `scissorhands`'s E_ARG naming `budget`).
 *
 * The model is the code GPT of `examples/code-gpt.ts` (trained first if its checkpoint is
 * missing) and its BPE tokenizer; the demo's prompts are held-out standard-library code.
 *
 *     npx tsx examples/kv-service.ts [--out DIR] [--model DIR] # demo: a burst of requests at itself, then one at a time
 *     npx tsx examples/kv-service.ts --serve --port 8080       # serve until Ctrl-C
 *     curl -s localhost:8080/generate -d '{"prompt": "def ", "policy": "scissorhands", "budget": 64, "steps": 32}'
 *
 * Knobs: LIAISON_SERVICE_REQUESTS (16), LIAISON_SERVICE_STEPS (48 tokens per answer),
 * LIAISON_SERVICE_WINDOW_MS (20), LIAISON_SERVICE_MAX_BATCH (8); `--out DIR` for the PNG, `--model DIR`
 * for the code GPT's folder (default examples/out/code-gpt, as code-gpt.ts writes it).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { LiaisonError, Runtime } from '../bridge/index.js';
import '../plugins/index.js'; // registers every KV policy, so a request can name any
import type { KVPolicy } from '../sdk/families/kv-policies/types.js';
import type { Model } from '../sdk/model.js';
import { plotLines } from '../sdk/plot.js';
import { getPlugin, plugins } from '../sdk/plugin.js';
import type { Tokenizer } from '../sdk/text.js';
import { type CodeGPT, loadCodeGPT } from './code-gpt.js';
import { flag, outDir, positiveInt, secs } from './env.js';
import { markdownTable } from './tables.js';

/** What turns text into token ids and back (the code GPT's BPE tokenizer). */
export interface Codec { encode(text: string): number[] | Promise<number[]>; decode(ids: readonly number[]): string | Promise<string> }

export interface ServiceOptions {
  /** How long the first request of an idle service waits for others to batch with (ms). */
  windowMs: number;
  /** Rows of one generate() at most; the largest `steps` and the longest prompt (tokens) a request may have. */
  maxBatch: number; maxSteps: number; maxPromptTokens: number;
  /** The model's context, and whether its positions are rotary (only those decode past it). */
  context: number; rotary: boolean;
}

/** A request, checked: its policy made by the plugin's own factory (so its schema judged the fields). */
export interface GenerationRequest { prompt: string; policy: KVPolicy; steps: number; temperature: number }

export interface Answer {
  /** The generated text and token ids (the prompt's not included). */
  text: string; tokens: number[];
  /** The policy's name, budget (null: the full cache) and stored bits. */
  policy: string; budget: number | null; bits: number;
  /** Bytes the batch's KV cache held at the end: every layer, all the batch's rows. */
  kvBytes: number;
  /** New tokens per second of the batch's generate() (all rows), its size and seconds. */
  tokensPerSecond: number; batchSize: number; seconds: number;
}

const FIELDS = ['prompt', 'policy', 'budget', 'bits', 'steps', 'temperature'] as const;

const bad = (msg: string, field: string) => new LiaisonError('E_ARG', msg, { param: field });

/**
 * A request body -> a {@link GenerationRequest}, or E_ARG naming the bad field. `budget`
 * and `bits` go to the plugin's factory as config (omitted ones take its defaults), so
 * the plugin's schema is the one judge of them.
 */
export function parseRequest(body: unknown, opts: Pick<ServiceOptions, 'maxSteps'>): GenerationRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad(`the request must be a JSON object {${FIELDS.join(', ')}}`, '(body)');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (!(FIELDS as readonly string[]).includes(k)) throw bad(`unknown field '${k}'; the fields are ${FIELDS.join(', ')}`, k);
  if (typeof b.prompt !== 'string' || b.prompt.length === 0) throw bad(`'prompt' must be a non-empty string, got ${JSON.stringify(b.prompt)}`, 'prompt');
  const name = b.policy ?? 'full';
  const names = plugins('kv-policy').map((p) => p.name);
  if (typeof name !== 'string' || !names.includes(name)) throw bad(`'policy' must be one of ${names.join(', ')}, got ${JSON.stringify(name)}`, 'policy');
  const config: Record<string, unknown> = {};
  if (b.budget !== undefined) config.budget = b.budget;
  if (b.bits !== undefined) config.bits = b.bits;
  const policy = getPlugin('kv-policy', name)(config) as KVPolicy; // the plugin's E_ARG names budget or bits
  const steps = b.steps ?? 32;
  if (!Number.isInteger(steps) || (steps as number) < 1 || (steps as number) > opts.maxSteps) throw bad(`'steps' must be an integer in [1, ${opts.maxSteps}], got ${JSON.stringify(steps)}`, 'steps');
  const temperature = b.temperature ?? 0;
  if (typeof temperature !== 'number' || !Number.isFinite(temperature) || temperature < 0) throw bad(`'temperature' must be a number >= 0 (0: greedy), got ${JSON.stringify(temperature)}`, 'temperature');
  return { prompt: b.prompt, policy, steps: steps as number, temperature };
}

/** A checked request, its prompt's tokens, and its batch key (requests with the same key run in one generate()). */
export interface Job { req: GenerationRequest; ids: number[]; key: string }

interface Pending { job: Job; resolve: (a: Answer) => void; reject: (e: unknown) => void }

/** The policy's settings that decide the cache, as one string (two requests batch when theirs agree). */
function policyKey(p: KVPolicy): string {
  return `${p.meta.name} ${JSON.stringify(p.config)}`;
}

export class KVService {
  /** Requests answered and batches formed since the start. */
  readonly stats = { requests: 0, batches: 0 };
  private queue: Pending[] = [];
  private timer: NodeJS.Timeout | null = null;
  private busy = false;
  private installed: string | null = null;

  constructor(readonly model: Model, readonly codec: Codec, readonly opts: ServiceOptions) {}

  /** Answer one request (a body as JSON parsed it); E_ARG naming the field for a bad one. */
  async submit(body: unknown): Promise<Answer> {
    return this.enqueue(await this.check(body));
  }

  /** A request body checked and encoded: E_ARG naming the field, before anything is queued. */
  async check(body: unknown): Promise<Job> {
    const req = parseRequest(body, this.opts);
    const ids = await this.codec.encode(req.prompt);
    if (!ids.length) throw bad('the prompt encodes to no tokens', 'prompt');
    // a prompt is one forward, so it must also fit the context, rotary or not
    const most = Math.min(this.opts.maxPromptTokens, this.opts.context);
    if (ids.length > most) throw bad(`the prompt is ${ids.length} tokens; at most ${most}`, 'prompt');
    if (!this.opts.rotary && ids.length + req.steps > this.opts.context) {
      throw bad(`prompt (${ids.length} tokens) + steps (${req.steps}) pass the model's context ${this.opts.context}, and its positions are learned (a 'rotary' model decodes past it)`, 'steps');
    }
    return { req, ids, key: `${policyKey(req.policy)} t=${req.temperature}` };
  }

  /** Queue a checked request; resolves with its answer once its batch has run. */
  enqueue(job: Job): Promise<Answer> {
    return new Promise<Answer>((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.busy || this.timer) return; // a running drain picks new requests up when its batch ends
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.drain();
    }, this.opts.windowMs);
  }

  /** Batches until the queue is empty: the oldest request's group first, all of it that fits. */
  private async drain(): Promise<void> {
    this.busy = true;
    try {
      while (this.queue.length) {
        const key = this.queue[0].job.key;
        const group: Pending[] = [];
        // with learned positions the batch's longest prompt plus its most steps must fit the
        // context, which each request alone was checked against: one that would break that waits
        let [t0, steps] = [0, 0];
        const fits = (j: Job) => this.opts.rotary || Math.max(t0, j.ids.length) + Math.max(steps, j.req.steps) <= this.opts.context;
        this.queue = this.queue.filter((p) => {
          if (p.job.key !== key || group.length >= this.opts.maxBatch || !fits(p.job)) return true;
          [t0, steps] = [Math.max(t0, p.job.ids.length), Math.max(steps, p.job.req.steps)];
          group.push(p);
          return false;
        });
        try {
          const answers = await this.run(group);
          group.forEach((p, i) => p.resolve(answers[i]));
        } catch (e) {
          for (const p of group) p.reject(e);
        }
      }
    } finally {
      this.busy = false;
    }
  }

  /** One generate() for a group sharing policy and temperature: prompts left-padded to the longest. */
  private async run(group: Pending[]): Promise<Answer[]> {
    const { model } = this;
    const rt = model.rt;
    const jobs = group.map((p) => p.job);
    const { policy, temperature } = jobs[0].req;
    const t0 = Math.max(...jobs.map((j) => j.ids.length));
    const steps = Math.max(...jobs.map((j) => j.req.steps)); // shorter asks are cut: later tokens never change earlier ones
    const flat = new BigInt64Array(group.length * t0); // pad id 0: pad slots stay empty, attended by no one
    jobs.forEach((j, b) => flat.set(j.ids.map(BigInt), b * t0 + t0 - j.ids.length));
    const key = policyKey(policy);
    if (this.installed !== key) {
      model.setKVPolicy(policy);
      this.installed = key;
    }
    const prompt = rt.tensor(flat, [group.length, t0], 'i64');
    await rt.flush(); // time the decoding, not what was queued before it
    const start = performance.now();
    const out = model.generate(prompt, { steps, temperature, lengths: jobs.map((j) => j.ids.length) }); // (B, t0 + steps)
    let data: BigInt64Array;
    try {
      data = (await out.toArray()) as BigInt64Array;
    } finally {
      prompt.free();
      out.free();
    }
    const seconds = (performance.now() - start) / 1000;
    const { totalBytes } = await model.kvCacheSize();
    this.stats.batches += 1;
    this.stats.requests += group.length;
    const { bits } = policy.cache();
    return Promise.all(jobs.map(async (j, b) => {
      const tokens = Array.from(data.subarray(b * (t0 + steps) + t0, b * (t0 + steps) + t0 + j.req.steps), Number);
      return { text: await this.codec.decode(tokens), tokens, policy: policy.meta.name, budget: policy.budget, bits,
        kvBytes: totalBytes, tokensPerSecond: (group.length * steps) / seconds, batchSize: group.length, seconds };
    }));
  }

  /** Serve `POST /generate` on `port` (0: any free one); resolves once listening. */
  listen(port = 0, host = '127.0.0.1'): Promise<{ server: Server; url: string }> {
    const server = createServer((req, res) => void this.handle(req, res));
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        const a = server.address() as AddressInfo;
        resolve({ server, url: `http://${host}:${a.port}` });
      });
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (status: number, body: object) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (req.url !== '/generate') return send(404, { error: `no such endpoint ${req.url}; POST /generate` });
    if (req.method !== 'POST') return send(405, { error: 'POST a JSON request to /generate' });
    let text = '';
    try {
      for await (const chunk of req) {
        text += String(chunk);
        if (text.length > 1 << 20) return send(413, { error: 'the request is over 1 MiB' });
      }
    } catch (e) {
      return send(400, { error: `could not read the request: ${(e as Error).message}` });
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch (e) {
      return send(400, { error: `the request is not JSON: ${(e as Error).message}`, field: '(body)' });
    }
    let job: Job;
    try {
      job = await this.check(body);
    } catch (e) {
      if (e instanceof LiaisonError && e.code === 'E_ARG') return send(400, { error: e.message, field: e.param ?? null });
      return send(500, { error: e instanceof Error ? e.message : String(e) }); // the tokenizer failed, not the request

    }
    try {
      send(200, await this.enqueue(job));
    } catch (e) {
      send(500, { error: e instanceof Error ? e.message : String(e), code: e instanceof LiaisonError ? e.code : null });
    }
  }
}

// ------------------------------------------------------------------ the program

const REQUESTS = positiveInt('LIAISON_SERVICE_REQUESTS', 16);
const STEPS = positiveInt('LIAISON_SERVICE_STEPS', 48);
const WINDOW_MS = positiveInt('LIAISON_SERVICE_WINDOW_MS', 20);
const MAX_BATCH = positiveInt('LIAISON_SERVICE_MAX_BATCH', 8);

/** The demo's request settings, taken in turn: four groups that batch among themselves. */
const SETTINGS: readonly Record<string, unknown>[] = [
  { policy: 'scissorhands', budget: 64 },
  { policy: 'h2o', budget: 64, bits: 8 },
  { policy: 'streaming-llm', budget: 64 },
  { policy: 'full', bits: 4 },
];

/** The code GPT's tokenizer as a {@link Codec}. */
function codecOf(tok: Tokenizer): Codec {
  return {
    async encode(text) {
      const ids = tok.encode(text);
      try {
        return Array.from((await ids.toArray()) as BigInt64Array, Number);
      } finally {
        ids.free();
      }
    },
    decode: (ids) => tok.decode(ids),
  };
}

/** POST a request to `url`; resolves with the status, the JSON answer and the wall time. */
async function post(url: string, body: object): Promise<{ status: number; json: Record<string, unknown>; ms: number }> {
  const t0 = performance.now();
  const r = await fetch(`${url}/generate`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
  return { status: r.status, json: (await r.json()) as Record<string, unknown>, ms: performance.now() - t0 };
}

/** `n` prompts of held-out code, 16 to 63 tokens each, from spread-out places in the held-out files. */
async function heldOutPrompts(gpt: CodeGPT, n: number): Promise<string[]> {
  const { shape } = await gpt.heldOut.info();
  const out: string[] = [];
  for (let k = 0; k < n; k++) {
    const len = 16 + ((k * 29) % 48);
    const at = Math.floor(((k + 1) * (shape[0] - len)) / (n + 1));
    const slice = gpt.heldOut.narrow(0, at, len);
    out.push(await gpt.tokenizer.decode(slice));
    slice.free();
  }
  return out;
}

async function demo(service: KVService, url: string, gpt: CodeGPT, out: string): Promise<void> {
  const prompts = await heldOutPrompts(gpt, REQUESTS);
  const bodies = prompts.map((prompt, k) => ({ prompt, steps: STEPS, temperature: 0, ...SETTINGS[k % SETTINGS.length] }));
  const total = REQUESTS * STEPS;

  // 0. warm-up: each setting's program traced and run once, so neither mode below pays first-call costs
  service.opts.windowMs = 0; // nothing to wait for when requests come one at a time
  for (const [k, b] of bodies.slice(0, SETTINGS.length).entries()) {
    const r = await post(url, { ...b, steps: 2 });
    if (r.status !== 200) throw new Error(`warm-up request ${k} failed: ${r.status} ${JSON.stringify(r.json)}`);
  }

  // 1. a burst: every request at once, batched by the service
  service.opts.windowMs = WINDOW_MS;
  const b0 = service.stats.batches;
  let t0 = performance.now();
  const burst = await Promise.all(bodies.map((b) => post(url, b)));
  const burstS = (performance.now() - t0) / 1000;
  const burstBatches = service.stats.batches - b0;
  const failed = burst.find((r) => r.status !== 200);
  if (failed) throw new Error(`a request failed: ${failed.status} ${JSON.stringify(failed.json)}`);

  // 2. the same requests one at a time
  service.opts.windowMs = 0;
  const b1 = service.stats.batches;
  t0 = performance.now();
  const alone: typeof burst = [];
  for (const b of bodies) alone.push(await post(url, b));
  const aloneS = (performance.now() - t0) / 1000;
  const aloneBatches = service.stats.batches - b1;
  const same = burst.filter((r, k) => JSON.stringify(r.json.tokens) === JSON.stringify(alone[k].json.tokens)).length;

  console.log(`\n${REQUESTS} requests of ${STEPS} greedy tokens each, prompts of held-out code (16–63 tokens), ${SETTINGS.length} settings in turn:\n`);
  console.log(markdownTable(['mode', 'requests', 'batches formed', 'wall s', 'tokens/s'], [
    ['burst, batched', String(REQUESTS), String(burstBatches), burstS.toFixed(2), (total / burstS).toFixed(1)],
    ['one at a time', String(REQUESTS), String(aloneBatches), aloneS.toFixed(2), (total / aloneS).toFixed(1)],
  ]));
  console.log(`\nbatched speed-up: ${(aloneS / burstS).toFixed(2)}x; batched answers equal to the same request answered alone: ${same}/${REQUESTS}`);

  const rows = SETTINGS.map((s, g) => {
    const ks = bodies.map((_, k) => k).filter((k) => k % SETTINGS.length === g);
    const a = ks.map((k) => burst[k].json).reduce((x, y) => ((y.batchSize as number) > (x.batchSize as number) ? y : x)); // its largest batch
    const sizes = [...new Set(ks.map((k) => burst[k].json.batchSize as number))].join(', ');
    const mean = (xs: number[]) => xs.reduce((x, y) => x + y, 0) / xs.length;
    return [String(s.policy), a.budget === null ? 'all' : String(a.budget), String(a.bits), String(ks.length), sizes,
      kib(a.kvBytes as number), kib(mean(ks.map((k) => alone[k].json.kvBytes as number))),
      mean(ks.map((k) => burst[k].json.tokensPerSecond as number)).toFixed(1), mean(ks.map((k) => alone[k].json.tokensPerSecond as number)).toFixed(1)];
  });
  console.log(`\nper setting (KV batched: the cache of the setting's largest batch, all its rows, every layer, at the end of its generate()):\n`);
  console.log(markdownTable(['policy', 'budget', 'bits', 'requests', 'batch size', 'KV batched', 'KV alone', 'tokens/s batched', 'tokens/s alone'], rows));

  // 3. a bad request: the plugin's own schema names the field
  const bad = await post(url, { prompt: 'def f():', policy: 'scissorhands', budget: 0 });
  console.log(`\na bad request ({policy: 'scissorhands', budget: 0}): HTTP ${bad.status} ${JSON.stringify(bad.json)}`);

  const path = join(out, 'kv-service-latency.png');
  // when each answer was in, counted from the first request: the burst's all left at once, the others back to back
  let done = 0;
  const backToBack = alone.map((r) => (done += r.ms / 1000));
  await plotLines({
    path, title: `${REQUESTS} requests of ${STEPS} tokens: answered after`, xlabel: 'answers received', ylabel: 'seconds since the first request',
    series: [
      { label: 'burst, batched', x: burst.map((_, i) => i + 1), y: burst.map((r) => r.ms / 1000).sort((x, y) => x - y), style: 'o-' },
      { label: 'one at a time', x: alone.map((_, i) => i + 1), y: backToBack, style: 's-' },
    ],
  }).then(() => console.log(`plot: ${path}`), (e: unknown) => console.log(`plot: not drawn (${(e as Error).message})`));
}

const kib = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`;

async function main(argv: string[]): Promise<void> {
  const out = outDir(argv);
  const serve = argv.includes('--serve');
  const port = Number(flag(argv, 'port') ?? (serve ? 8080 : 0));
  const t0 = performance.now();
  const rt = await Runtime.start();
  console.log(`local runtime (pid ${rt.info.pid}): torch ${rt.info.torch} on ${rt.info.device} (${rt.info.threads} thread${rt.info.threads === 1 ? '' : 's'})`);
  let server: Server | undefined;
  try {
    const gpt = await loadCodeGPT(rt, flag(argv, 'model')); // default examples/out/code-gpt
    const { spec } = gpt;
    console.log(`model: the code GPT, ${spec.layers} blocks of width ${spec.dim}, ${spec.heads} heads, context ${spec.context}, ${spec.positions ?? 'learned'} positions; BPE vocabulary ${gpt.tokenizer.vocab}`);
    const service = new KVService(gpt.model, codecOf(gpt.tokenizer), {
      windowMs: WINDOW_MS, maxBatch: MAX_BATCH, maxSteps: 1024, maxPromptTokens: 4096, context: spec.context, rotary: spec.positions === 'rotary',
    });
    const s = await service.listen(port);
    server = s.server;
    console.log(`serving POST ${s.url}/generate (batching window ${WINDOW_MS} ms, at most ${MAX_BATCH} rows a batch)`);
    if (serve) {
      console.log(`Ctrl-C stops it. Try: curl -s ${s.url}/generate -d '{"prompt": "def main():", "policy": "scissorhands", "budget": 64, "steps": 32}'`);
      await new Promise<void>((res) => { process.once('SIGINT', res); process.once('SIGTERM', res); });
    } else {
      await demo(service, s.url, gpt, out);
    }
    gpt.heldOut.free();
    gpt.tokenizer.free();
    gpt.model.free();
  } finally {
    server?.close();
    await rt.close();
  }
  console.log(`\nruntime stopped; ${secs(t0)} in all.`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    console.error(e);
    process.exit(1);
  });
}
