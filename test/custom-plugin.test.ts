// examples/custom-plugin.ts runs as a user runs it: a third-party optimizer passes its
// family's conformance suite and trains an MLP on the digits through the Trainer.
import { describe, expect, it } from 'vitest';
import { runExample } from './helpers.js';


describe('examples/custom-plugin.ts', () => {
  it('passes the conformance suite and trains an MLP on the digits', async () => {
    const { code, out, err } = await runExample(['examples/custom-plugin.ts'], { LIAISON_EXAMPLE_EPOCHS: '3' });
    expect(code, err).toBe(0);
    expect(out).toMatch(/momentum-optimizer\/sign-sgd@0\.1\.0: 7 passed, 0 failed, 0 skipped/);
    const acc = /held-out accuracy ([\d.]+)%/.exec(out);
    expect(acc, out).not.toBeNull();
    // ten classes: chance is 10%; three epochs of sign-SGD reach well above 80%
    expect(Number(acc![1])).toBeGreaterThan(80);
  }, 300_000);
});
