/**
 * `liaison/bridge`: the data plane. A {@link Runtime} is a session on a PyTorch runtime
 * process; {@link Tensor}s are handles into it.
 *
 * ```ts
 * const rt = await Runtime.start();            // spawns a local runtime (CUDA when present)
 * const a = rt.tensor(new Float32Array([1, 2, 3, 4]), [2, 2]);
 * console.log(await a.matmul(a).relu().tolist());
 * await rt.close();
 * ```
 */
export { Runtime, ProcessRuntime, type RuntimeOf, type RuntimeInfo, type RuntimeOptions, type StartOptions, type ConnectOptions, type Arg, type OpRecord, type OpRecorder } from './runtime.js';
export { TensorFactories } from './factories.js';
export { Tensor, type TensorData, type TensorInfo } from './tensor.js';
export type { Shape, Size } from './sizes.js';
export { LiaisonError, ERROR_CODES, type ErrorCode, type WireError } from './errors.js';
export { type DType, DTYPES, ITEMSIZE, type TypedArray, type ArrayOf } from './dtype.js';
export { Connection, type ConnectionOptions } from './connection.js';
export { spawnRuntime, resolvePython, runtimeEnv, packageRoot, type SpawnOptions, type RuntimeProcess } from './launcher.js';
export { VERSION as PROTOCOL_VERSION, MINOR as PROTOCOL_MINOR } from './protocol.js';
export { Group, type GroupStartOptions } from './group.js';
export type { GroupInfo, RuntimeStats } from './contract.js';
export { startWithPython, type PythonHatch, type PythonRuntime, type PythonStartOptions, type PyObject, type HatchProcess } from './python.js';
