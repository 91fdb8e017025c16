// examples/kv-service.ts: requests checked by the policy plugins' own schemas (no runtime
// needed), then the example as a user runs it on a tiny code GPT — a burst of requests
// batched by (policy, budget, bits), each batched answer equal to the same request answered
// alone (greedy), and a bad request answered 400 naming its field.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseRequest } from '../examples/kv-service.js';
import { runExample } from './helpers.js';

const TINY = {
  LIAISON_CODE_GPT_STEPS: '30', LIAISON_CODE_GPT_DIM: '32', LIAISON_CODE_GPT_LAYERS: '2', LIAISON_CODE_GPT_CONTEXT: '64',
  LIAISON_CODE_GPT_VOCAB: '400', LIAISON_CODE_GPT_BYTES: '200000', LIAISON_CODE_GPT_EVAL_WINDOWS: '4',
  LIAISON_CODE_GPT_SHORT_STEPS: '8', LIAISON_CODE_GPT_SHORT_WINDOW: '32', LIAISON_CODE_GPT_SHORT_BATCH: '4',
  // a window long enough that the burst's 8 requests are all queued before the first batch runs
  LIAISON_SERVICE_REQUESTS: '8', LIAISON_SERVICE_STEPS: '12', LIAISON_SERVICE_WINDOW_MS: '1500',
};

const tmp = mkdtempSync(join(tmpdir(), 'kv-service-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('kv-service requests', () => {
  const opts = { maxSteps: 64 };
  const refused = (body: unknown) => {
    try {
      parseRequest(body, opts);
    } catch (e) {
      return e as { code: string; param?: string; message: string };
    }
    throw new Error(`accepted ${JSON.stringify(body)}`);
  };

  it('makes the named policy with its budget and bits, defaults for the rest', () => {
    const r = parseRequest({ prompt: 'def f():', policy: 'scissorhands', budget: 32, bits: 4, steps: 5 }, opts);
    expect([r.policy.meta.name, r.policy.budget, r.policy.cache().bits, r.steps, r.temperature]).toEqual(['scissorhands', 32, 4, 5, 0]);
    expect(parseRequest({ prompt: 'x' }, opts).policy.budget).toBeNull(); // the full cache by default
  });

  it("refuses a bad field with the plugin's own E_ARG, naming it", () => {
    const budget = refused({ prompt: 'x', policy: 'scissorhands', budget: 0 });
    expect(budget).toMatchObject({ code: 'E_ARG', param: 'budget' });
    expect(budget.message).toMatch(/^kv-policy 'scissorhands': config field 'budget'/);
    expect(refused({ prompt: 'x', policy: 'h2o', bits: 5 })).toMatchObject({ code: 'E_ARG', param: 'bits' });
    expect(refused({ prompt: 'x', policy: 'full', budget: 8 })).toMatchObject({ code: 'E_ARG', param: 'budget' }); // full has none
    expect(refused({ prompt: 'x', policy: 'lru' })).toMatchObject({ param: 'policy', message: expect.stringMatching(/scissorhands/) });
    expect(refused({ prompt: '', policy: 'full' })).toMatchObject({ param: 'prompt' });
    expect(refused({ prompt: 'x', steps: 65 })).toMatchObject({ param: 'steps' });
    expect(refused({ prompt: 'x', temperature: -1 })).toMatchObject({ param: 'temperature' });
    expect(refused({ prompt: 'x', budgt: 3 })).toMatchObject({ param: 'budgt' });
    expect(refused([1])).toMatchObject({ param: '(body)' });
  });
});

describe('examples/kv-service.ts', () => {
  it('batches a burst of requests by setting, answering each as it would be answered alone', async () => {
    const { code, out, err } = await runExample(['examples/kv-service.ts', '--out', tmp, '--model', join(tmp, 'code-gpt')], TINY, 300_000);
    expect(code, `${out}\n${err}`).toBe(0);
    const burst = /\| burst, batched \| 8 \| (\d+) \|/.exec(out);
    expect(burst, out).not.toBeNull();
    // 8 requests over 4 settings: 4 batches of 2 when all are queued within the window
    expect(Number(burst![1])).toBeLessThan(8);
    expect(out).toMatch(/\| one at a time \| 8 \| 8 \|/);
    expect(out).toMatch(/answered alone: 8\/8/);
    expect(out).toMatch(/\| scissorhands \| 64 \| 32 \| 2 \| [\d, ]+ \| \d+ KiB \| \d+ KiB \|/);
    expect(out).toMatch(/\| full \| all \| 4 \| 2 \|/);
    expect(out).toMatch(/HTTP 400 \{"error":"kv-policy 'scissorhands': config field 'budget'[^"]*","field":"budget"\}/);
    expect(out).toMatch(/runtime stopped/);
  }, 300_000);
});
