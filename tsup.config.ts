import { defineConfig } from 'tsup';

export default defineConfig({
  entry: {
    index: 'index.ts',
    'bridge/index': 'bridge/index.ts',
    'sdk/index': 'sdk/index.ts',
    'sdk/conformance/index': 'sdk/conformance/index.ts',
    'plugins/index': 'plugins/index.ts',
  },
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
});
