/**
 * Dtypes on the wire and the typed arrays that hold them in JavaScript.
 *
 * f16 and bf16 have no typed array in Node 20: they upload from a Float32Array (converted
 * here, round to nearest even) or from a Uint16Array of raw bits, and download as a
 * Float32Array. bool travels as one byte per element and downloads as a Uint8Array.
 */
export type DType = 'f32' | 'f64' | 'f16' | 'bf16' | 'i32' | 'i64' | 'u8' | 'bool';
export const DTYPES: readonly DType[] = ['f32', 'f64', 'f16', 'bf16', 'i32', 'i64', 'u8', 'bool'];

export const ITEMSIZE: Record<DType, number> = { f32: 4, f64: 8, f16: 2, bf16: 2, i32: 4, i64: 8, u8: 1, bool: 1 };

export type TypedArray = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array | Uint16Array;

/** What a download of each dtype gives back. */
export interface ArrayOf {
  f32: Float32Array; f64: Float64Array; f16: Float32Array; bf16: Float32Array;
  i32: Int32Array; i64: BigInt64Array; u8: Uint8Array; bool: Uint8Array;
}

/** The dtype a typed array uploads as when none is given. */
export function dtypeOf(a: TypedArray): DType {
  if (a instanceof Float32Array) return 'f32';
  if (a instanceof Float64Array) return 'f64';
  if (a instanceof Int32Array) return 'i32';
  if (a instanceof BigInt64Array) return 'i64';
  if (a instanceof Uint8Array) return 'u8';
  throw new TypeError('a Uint16Array holds raw f16/bf16 bits: pass dtype "f16" or "bf16" with it');
}

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && (DTYPES as readonly string[]).includes(x);
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  if ((b & 0x7f800000) === 0x7f800000 && (b & 0x7fffff) !== 0) return 0x7fc0; // NaN stays NaN
  return ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) & 0xffff;
}

function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const b = u32[0];
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
  return sign | h;
}

function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Float32Array -> 16-bit patterns of `dtype`. */
export function toHalfBits(src: ArrayLike<number>, dtype: 'f16' | 'bf16'): Uint16Array {
  const out = new Uint16Array(src.length);
  const conv = dtype === 'bf16' ? f32ToBf16Bits : f32ToF16Bits;
  for (let i = 0; i < src.length; i++) out[i] = conv(src[i]);
  return out;
}

/** 16-bit patterns of `dtype` -> Float32Array. */
export function fromHalfBits(bits: Uint16Array, dtype: 'f16' | 'bf16'): Float32Array {
  const out = new Float32Array(bits.length);
  if (dtype === 'bf16') {
    const o32 = new Uint32Array(out.buffer);
    for (let i = 0; i < bits.length; i++) o32[i] = bits[i] << 16;
  } else {
    for (let i = 0; i < bits.length; i++) out[i] = f16BitsToF32(bits[i]);
  }
  return out;
}

/** Received bytes -> the typed array for `dtype`, copying only when unaligned. */
export function viewAs<D extends DType>(bytes: Uint8Array, dtype: D): ArrayOf[D] {
  const size = ITEMSIZE[dtype];
  let b = bytes;
  if (b.byteOffset % size !== 0) b = new Uint8Array(b); // copy to an aligned buffer
  const n = b.byteLength / size;
  switch (dtype) {
    case 'f32': return new Float32Array(b.buffer, b.byteOffset, n) as ArrayOf[D];
    case 'f64': return new Float64Array(b.buffer, b.byteOffset, n) as ArrayOf[D];
    case 'i32': return new Int32Array(b.buffer, b.byteOffset, n) as ArrayOf[D];
    case 'i64': return new BigInt64Array(b.buffer, b.byteOffset, n) as ArrayOf[D];
    case 'u8':
    case 'bool': return new Uint8Array(b.buffer, b.byteOffset, n) as ArrayOf[D];
    case 'f16':
    case 'bf16': return fromHalfBits(new Uint16Array(b.buffer, b.byteOffset, n), dtype) as ArrayOf[D];
  }
  throw new TypeError(`unknown dtype ${String(dtype)}`);
}

/** A typed array (or plain numbers) -> the bytes that upload as `dtype`. */
export function toBytes(data: TypedArray | readonly number[], dtype: DType): Uint8Array {
  if (dtype === 'f16' || dtype === 'bf16') {
    const bits = data instanceof Uint16Array ? data : toHalfBits(data as ArrayLike<number>, dtype);
    return new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
  }
  let arr: TypedArray;
  if (Array.isArray(data)) {
    arr = fromNumbers(data as number[], dtype);
  } else {
    arr = data as TypedArray;
    const want = dtype === 'bool' ? 'u8' : dtype;
    if (dtypeOf(arr) !== want) {
      throw new TypeError(`a ${arr.constructor.name} cannot upload as ${dtype}; pass a ${ARRAY_NAME[dtype]} or plain numbers`);
    }
  }
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}

const ARRAY_NAME: Record<DType, string> = {
  f32: 'Float32Array', f64: 'Float64Array', f16: 'Float32Array or Uint16Array', bf16: 'Float32Array or Uint16Array',
  i32: 'Int32Array', i64: 'BigInt64Array', u8: 'Uint8Array', bool: 'Uint8Array',
};

function fromNumbers(xs: readonly number[], dtype: DType): TypedArray {
  switch (dtype) {
    case 'f32': return Float32Array.from(xs);
    case 'f64': return Float64Array.from(xs);
    case 'i32': return Int32Array.from(xs);
    case 'i64': return BigInt64Array.from(xs, (x) => BigInt(Math.trunc(x)));
    case 'u8': return Uint8Array.from(xs);
    case 'bool': return Uint8Array.from(xs, (x) => (x ? 1 : 0));
    default: return toHalfBits(xs, dtype);
  }
}
