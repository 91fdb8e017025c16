/** Liaison: typed TypeScript plugins for PyTorch. The bridge is the layer everything stands on. */
export * from './bridge/index.js';
