/**
 * Liaison wire protocol, version 1 — the TypeScript half (spec: docs/protocol.md).
 *
 * A message is a ZeroMQ multipart message:
 *
 *     [signature]  on keyed (tcp) connections only: HMAC-SHA256 over the frames after it
 *     header       one msgpack map
 *     buffers...   raw tensor bytes, referenced from the header by index (buffer k)
 *
 * Unkeyed connections carry no signature frame: an empty one would cost a third of the
 * small-message rate.
 *
 * The encoder writes the same bytes as the Python encoder (`liaison_runtime/protocol.py`):
 * smallest msgpack forms (`variableMapSize`), no msgpackr records (Python cannot read
 * them), handles as ext type 1 with a 4-byte big-endian id. Golden vectors in
 * `test/protocol/vectors.json` hold both sides to it.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Packr, Unpackr, addExtension } from 'msgpackr';
import { LiaisonError } from './errors.js';

/** Protocol major version: a peer with another major is refused. */
export const VERSION = 1;
/** Minor version: additions only; unknown header fields are ignored. */
export const MINOR = 1;
export const EXT_HANDLE = 1;
export const SIG_LEN = 32;

export type Kind = 'hello' | 'ping' | 'batch' | 'close' | 'shutdown';
export const KINDS: readonly Kind[] = ['hello', 'ping', 'batch', 'close', 'shutdown'];

/** A client-allocated tensor id as it appears inside a message (msgpack ext type 1). */
export class HandleRef {
  constructor(readonly id: number) {}
}

type Alloc = (size: number) => { target: Uint8Array; targetView: DataView; position: number };

addExtension({
  Class: HandleRef,
  type: EXT_HANDLE,
  // Written in place (fixext 4: d6 01 + u32 BE) through msgpackr's allocate-for-write
  // form: a batch carries thousands of handles, and a Buffer per handle is the slow part.
  pack(h: HandleRef, allocateForWrite?: Alloc) {
    if (!allocateForWrite) {
      const b = Buffer.allocUnsafe(4);
      b.writeUInt32BE(h.id >>> 0);
      return b;
    }
    const { target, targetView, position } = allocateForWrite(6);
    target[position] = 0xd6;
    target[position + 1] = EXT_HANDLE;
    targetView.setUint32(position + 2, h.id >>> 0);
    return undefined as unknown as Buffer;
  },
  unpack(buf: Uint8Array) {
    if (buf.length !== 4) throw new Error(`handle ext must be 4 bytes, got ${buf.length}`);
    return new HandleRef(Buffer.from(buf.buffer, buf.byteOffset, 4).readUInt32BE(0));
  },
});

// encodeUndefinedAsNil: msgpackr writes `undefined` as an ext type Python cannot read, which
// made a whole request unreadable (and its caller wait for the timeout) for one stray undefined
const packr = new Packr({ useRecords: false, variableMapSize: true, moreTypes: false, encodeUndefinedAsNil: true });
const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, int64AsType: 'number' });

export function pack(value: unknown): Buffer {
  return packr.pack(value);
}

export function unpack(data: Uint8Array): unknown {
  return unpackr.unpack(data);
}

/** HMAC-SHA256 over the frames after the signature, each preceded by its length as u64 big-endian. */
export function signature(key: Uint8Array, frames: readonly Uint8Array[]): Buffer {
  const mac = createHmac('sha256', key);
  const len = Buffer.allocUnsafe(8);
  for (const f of frames) {
    len.writeBigUInt64BE(BigInt(f.byteLength));
    mac.update(len);
    mac.update(f);
  }
  return mac.digest();
}

/** Header + buffers -> frames `[header, ...buffers]`, preceded by the signature when keyed. */
export function encode(header: Record<string, unknown>, buffers: readonly Uint8Array[] = [], key?: Uint8Array): Uint8Array[] {
  const frames: Uint8Array[] = [pack(header), ...buffers];
  if (key) frames.unshift(signature(key, frames));
  return frames;
}

export interface ReplyHeader {
  v: number;
  id: number | null;
  ok: boolean;
  error?: import('./errors.js').WireError;
  ts?: number;
  [field: string]: unknown;
}

/**
 * Frames -> header and buffers. With a key, the signature is checked first; a reply
 * whose signature fails is returned with `forged: true` so the caller can tell a runtime
 * that refused our key (it says E_AUTH) from a stranger.
 */
export function decode(frames: readonly Uint8Array[], key?: Uint8Array): { header: ReplyHeader; buffers: Uint8Array[]; forged: boolean } {
  let forged = false;
  let body = frames;
  if (key) {
    const sig = frames[0];
    body = frames.slice(1);
    forged = !sig || sig.byteLength !== SIG_LEN || body.length === 0 ||
      !timingSafeEqual(Buffer.from(sig.buffer, sig.byteOffset, sig.byteLength), signature(key, body));
  }
  if (body.length < 1) throw new LiaisonError('E_PROTOCOL', `a message needs a header frame, got ${frames.length} frames`);
  let header: unknown;
  try {
    header = unpack(body[0]);
  } catch (e) {
    throw new LiaisonError('E_PROTOCOL', `header frame is not valid msgpack: ${(e as Error).message}`);
  }
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new LiaisonError('E_PROTOCOL', 'header must be a msgpack map');
  }
  const h = header as ReplyHeader;
  if (h.v !== VERSION) {
    throw new LiaisonError('E_VERSION', `the runtime speaks protocol ${String(h.v)}, this SDK speaks ${VERSION}.${MINOR}; upgrade the older side`);
  }
  return { header: h, buffers: body.slice(1) as Uint8Array[], forged };
}
