/**
 * `Runtime`: the name programs use for a session on a PyTorch runtime. As a type it is the
 * contract (bridge/contract.ts), which one process (`ProcessRuntime`) or a group of them can
 * implement; as a value it is `ProcessRuntime`, so `Runtime.start()`, `Runtime.connect()`
 * and `Runtime.open()` work as they always have.
 *
 * ```ts
 * const rt: Runtime = await Runtime.start();
 * ```
 */
import type { ArgOf, RuntimeOf } from './contract.js';
import { ProcessRuntime } from './process-runtime.js';
import type { Tensor } from './tensor.js';

/** A session on a PyTorch runtime: what the SDK and plugins hold (bridge/contract.ts). */
export type Runtime = RuntimeOf<Tensor>;
export const Runtime = ProcessRuntime;

/** A value an op accepts: a tensor, a number, a bool, a string, or arrays of these. */
export type Arg = ArgOf<Tensor>;

export { ProcessRuntime, type RuntimeOptions, type StartOptions, type ConnectOptions } from './process-runtime.js';
export type { RuntimeOf, RuntimeInfo, OpRecord, OpRecorder } from './contract.js';
