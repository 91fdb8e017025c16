import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { index: 'index.ts', 'bridge/index': 'bridge/index.ts' },
  format: ['esm'],
  dts: true,
  sourcemap: true,
  clean: true,
  target: 'node20',
});
