/** Workers in the SDK (docs/workers.md): the spec, the boundary, placements and the coordinator. */
export * from './types.js';
export * from './run.js';
export { getPlacement, placements, registerPlacement } from './placements.js';
export { tensorsOf, treeBytes } from './tree.js';
export { collectiveBytes, gatheredRanked, rankLayout } from './ranks.js';
