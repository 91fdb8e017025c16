/**
 * The data of uploads: typed arrays or numbers as bytes with
 * their shape checked, and one array split into the ranks' parts along dim 0.
 */
import { type DType, ITEMSIZE, type TypedArray, dtypeOf, isDType, toBytes } from './dtype.js';
import { LiaisonError } from './errors.js';

export type Data = TypedArray | readonly number[];

/** `data` as bytes of `dtype` (default: the array's, f32 for numbers), checked against `shape`. */
export function bytesOf(data: Data, shape: readonly number[] | undefined, dtype?: DType): { bytes: Uint8Array; dt: DType; shp: number[] } {
  const dt: DType = dtype ?? (Array.isArray(data) ? 'f32' : dtypeOf(data as TypedArray));
  if (!isDType(dt)) throw new LiaisonError('E_DTYPE', `unknown dtype ${String(dt)}`);
  const bytes = toBytes(data, dt);
  const numel = bytes.byteLength / ITEMSIZE[dt];
  const shp = shape ? [...shape] : [numel];
  const want = shp.reduce((a, b) => a * b, 1);
  if (want !== numel) throw new LiaisonError('E_SHAPE', `shape [${shp}] holds ${want} elements, the data has ${numel}`);
  return { bytes, dt, shp };
}

/**
 * `bytes` of shape `shp` split along dim 0 into `n` parts as `torch.tensor_split` splits:
 * the first `rows % n` parts one row longer. Views, not copies.
 */
export function splitRows(bytes: Uint8Array, shp: readonly number[], n: number): { parts: Uint8Array[]; shapes: number[][] } {
  if (shp.length === 0) throw new LiaisonError('E_SHAPE', 'shard: a scalar has no dim 0 to split', { param: 'shape' });
  const rows = shp[0];
  const rowBytes = rows > 0 ? bytes.byteLength / rows : 0;
  const base = Math.floor(rows / n), extra = rows % n;
  const parts: Uint8Array[] = [], shapes: number[][] = [];
  let at = 0;
  for (let r = 0; r < n; r++) {
    const k = base + (r < extra ? 1 : 0);
    parts.push(bytes.subarray(at * rowBytes, (at + k) * rowBytes));
    shapes.push([k, ...shp.slice(1)]);
    at += k;
  }
  return { parts, shapes };
}
