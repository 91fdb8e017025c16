/**
 * The safetensors checkpoint format (https://github.com/huggingface/safetensors), read and
 * written in TypeScript so that a checkpoint can be saved from any runtime, remote ones
 * included, and opened without a runtime at all.
 *
 * A file is: an unsigned 64-bit little-endian header length N; N bytes of UTF-8 JSON
 * mapping each tensor name to `{dtype, shape, data_offsets: [begin, end]}` (byte offsets
 * into the data that follows) plus an optional `"__metadata__"` map of strings; then the
 * tensors' raw little-endian bytes, back to back with no gaps.
 *
 * npm has no maintained, dependency-free reader/writer for all the dtypes below (the
 * `safetensors` package is an empty 0.0.1), hence this file. Files written here load in
 * Python's `safetensors.torch.load_file` and the other way round (test/model.test.ts).
 */
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { endianness } from 'node:os';
import { dirname } from 'node:path';
import { type DType, ITEMSIZE, LiaisonError, type TensorData } from '../bridge/index.js';
import { toBytes, viewAs } from '../bridge/dtype.js';

/** safetensors dtype names <-> bridge dtypes: the ones both sides have. */
const TO_FILE: Record<DType, string> = { f32: 'F32', f64: 'F64', f16: 'F16', bf16: 'BF16', i32: 'I32', i64: 'I64', u8: 'U8', bool: 'BOOL' };
const FROM_FILE: Record<string, DType> = Object.fromEntries(Object.entries(TO_FILE).map(([k, v]) => [v, k as DType]));

/** The reference implementation refuses headers above 100 MB; so do we, before allocating. */
const MAX_HEADER = 100_000_000;
const METADATA = '__metadata__';

function checkHost(): void {
  // typed arrays use the host's byte order and the format is little-endian
  if (endianness() !== 'LE') throw new LiaisonError('E_ARG', 'safetensors: this host is big-endian; only little-endian hosts are supported');
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Write `tensors` (and optional string `metadata`) to `path` as safetensors. The file is
 * written beside `path`, synced to disk and renamed into place, so an interrupted save
 * (a crash, a kill, a power loss) never leaves a half-written checkpoint under the name.
 * Parent folders are created.
 *
 * f16 and bf16 data may be a Float32Array (rounded to nearest even) or a Uint16Array of
 * raw bits; bool data is a Uint8Array of 0/1.
 */
export async function writeSafetensors(path: string, tensors: Record<string, TensorData>, metadata?: Record<string, string>): Promise<void> {
  checkHost();
  // no prototype: a tensor named '__proto__' is an entry like any other
  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new LiaisonError('E_ARG', `writeSafetensors: metadata '${k}' must be a string, got ${typeof v}`, { param: 'metadata' });
    }
    header[METADATA] = metadata;
  }
  // Widest dtypes first, as Python's writer does: every tensor then starts at a multiple
  // of its item size, so a reader can view the bytes in place.
  const names = Object.keys(tensors).sort((a, b) => ITEMSIZE[tensors[b].dtype] - ITEMSIZE[tensors[a].dtype]);
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const name of names) {
    if (name === METADATA) throw new LiaisonError('E_ARG', `writeSafetensors: '${METADATA}' is reserved for metadata and cannot name a tensor`, { param: 'tensors' });
    const t = tensors[name];
    const code = TO_FILE[t?.dtype];
    if (!code) throw new LiaisonError('E_DTYPE', `writeSafetensors: tensor '${name}' has dtype ${String(t?.dtype)}; supported: ${Object.keys(TO_FILE).join(', ')}`, { param: 'tensors' });
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new LiaisonError('E_SHAPE', `writeSafetensors: tensor '${name}' has shape ${JSON.stringify(t.shape)}; expected a list of non-negative integers`, { param: 'tensors' });
    }
    let bytes: Uint8Array;
    try {
      bytes = toBytes(t.data, t.dtype);
    } catch (e) {
      throw new LiaisonError('E_DTYPE', `writeSafetensors: tensor '${name}': ${(e as Error).message}`, { param: 'tensors' });
    }
    const want = numel(t.shape) * ITEMSIZE[t.dtype];
    if (bytes.byteLength !== want) {
      throw new LiaisonError('E_SHAPE', `writeSafetensors: tensor '${name}' has shape [${t.shape}] (${numel(t.shape)} elements) but ${bytes.byteLength / ITEMSIZE[t.dtype]} values`, { param: 'tensors' });
    }
    header[name] = { dtype: code, shape: t.shape, data_offsets: [offset, offset + want] };
    chunks.push(bytes);
    offset += want;
  }
  // Pad the JSON with spaces so the data starts 8-byte aligned (what Python's writer does).
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - ((8 + json.byteLength) % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.byteLength));

  await mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  const fh = await open(tmp, 'w');
  try {
    const all = [len, json, ...chunks];
    for (let i = 0; i < all.length; i += 512) await fh.writev(all.slice(i, i + 512)); // IOV_MAX is 1024 on Linux
    // on disk before it takes the name: after a power loss the name holds the old file or the new one
    await fh.sync();
    await fh.close();
    await rename(tmp, path);
  } catch (e) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw e;
  }
}

/**
 * Read a safetensors file. f16 and bf16 tensors come back as Float32Array (exactly: both
 * are subsets of f32), as tensor downloads do; bool as a Uint8Array of 0/1. A file that is
 * not valid safetensors is refused with E_ARG saying what is wrong and where.
 */
export async function readSafetensors(path: string): Promise<{ tensors: Record<string, TensorData>; metadata: Record<string, string> }> {
  checkHost();
  const buf = await readFile(path);
  return parseSafetensors(buf, path);
}

/** {@link readSafetensors} on bytes already in memory; `source` names them in errors. */
export function parseSafetensors(buf: Uint8Array, source = 'buffer'): { tensors: Record<string, TensorData>; metadata: Record<string, string> } {
  const bad = (msg: string) => new LiaisonError('E_ARG', `readSafetensors: ${source} is not a valid safetensors file: ${msg}`, { param: 'path' });
  if (buf.byteLength < 8) throw bad(`it has ${buf.byteLength} bytes, fewer than the 8 of the header length`);
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER)) throw bad(`the header length is ${n} bytes (at most ${MAX_HEADER})`);
  const hlen = Number(n);
  if (8 + hlen > buf.byteLength) throw bad(`the header length is ${hlen} bytes but the file has only ${buf.byteLength - 8} after the length`);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(8, 8 + hlen)));
  } catch (e) {
    throw bad(`the header is not UTF-8 JSON (${(e as Error).message})`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) throw bad('the header is not a JSON object');
  const start = 8 + hlen;
  const dataLen = buf.byteLength - start;
  // Names come from the file: maps without a prototype, so that '__proto__' or
  // 'constructor' is a tensor (or metadata key) like any other, never Object.prototype's.
  const metadata: Record<string, string> = Object.create(null);
  const tensors: Record<string, TensorData> = Object.create(null);
  const spans: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === METADATA) {
      if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw bad(`'${METADATA}' must be a map of strings`);
      for (const [k, v] of Object.entries(entry)) {
        if (typeof v !== 'string') throw bad(`metadata '${k}' is a ${typeof v}, not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (e === null || typeof e !== 'object') throw bad(`tensor '${name}' is described by ${JSON.stringify(e)}, not {dtype, shape, data_offsets}`);
    const dtype = typeof e.dtype === 'string' ? FROM_FILE[e.dtype] : undefined;
    if (!dtype) throw new LiaisonError('E_DTYPE', `readSafetensors: ${source}: tensor '${name}' has dtype ${JSON.stringify(e.dtype)}; supported: ${Object.keys(FROM_FILE).join(', ')}`, { param: 'path' });
    const shape = e.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw bad(`tensor '${name}' has shape ${JSON.stringify(shape)}`);
    const off = e.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isSafeInteger(d) && d >= 0) || off[0] > off[1]) {
      throw bad(`tensor '${name}' has data_offsets ${JSON.stringify(off)}; expected [begin, end] with begin <= end`);
    }
    const [b, end] = off as [number, number];
    const want = numel(shape) * ITEMSIZE[dtype];
    if (end - b !== want) throw bad(`tensor '${name}' (${e.dtype} [${shape}]) needs ${want} bytes, its data_offsets span ${end - b}`);
    if (end > dataLen) throw bad(`tensor '${name}' ends at byte ${end} of the data, which has ${dataLen} (truncated file?)`);
    spans.push([b, end, name]);
    tensors[name] = { dtype, shape: shape as number[], data: viewAs(buf.subarray(start + b, start + end), dtype) };
  }
  // As the reference reader: the tensors tile the data exactly, no gaps, no overlaps.
  spans.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let at = 0;
  for (const [b, end, name] of spans) {
    if (b !== at) throw bad(b > at ? `bytes ${at}..${b} of the data belong to no tensor (before '${name}')` : `tensor '${name}' overlaps the one before it`);
    at = end;
  }
  if (at !== dataLen) throw bad(`the data has ${dataLen} bytes but the tensors cover ${at}`);
  return { tensors, metadata };
}
