// The TypeScript half of the protocol conformance kit: every golden vector decodes to its
// header and re-encodes to the same bytes (the pytest suite does the same in Python).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../bridge/errors.js';
import { HandleRef, MINOR, VERSION, decode, encode, pack, signature, unpack } from '../bridge/protocol.js';

interface Vector { name: string; description: string; key: string | null; header: unknown; buffers: string[]; frames: string[] }
const file = JSON.parse(readFileSync(new URL('./protocol/vectors.json', import.meta.url), 'utf8')) as {
  protocol: string; error_codes: string[]; vectors: Vector[];
};

function fromJson(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(fromJson);
  if (v !== null && typeof v === 'object') {
    const o = v as Record<string, unknown>;
    if ('$handle' in o) return new HandleRef(o.$handle as number);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, fromJson(x)]));
  }
  return v;
}

const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

describe('protocol v1 golden vectors', () => {
  it('is the version this SDK speaks', () => {
    expect(file.protocol).toBe(`${VERSION}.${MINOR}`);
  });

  it('has the same error-code table as bridge/errors.ts', () => {
    expect(Object.keys(ERROR_CODES)).toEqual(file.error_codes);
  });

  for (const v of file.vectors) {
    const key = v.key ? Buffer.from(v.key) : undefined;
    const frames = v.frames.map((f) => Buffer.from(f, 'hex'));

    it(`decodes ${v.name}: ${v.description}`, () => {
      const { header, buffers, forged } = decode(frames, key);
      expect(forged).toBe(false);
      expect(header).toEqual(fromJson(v.header));
      expect(buffers.map(hex)).toEqual(v.buffers);
    });

    it(`re-encodes ${v.name} byte for byte`, () => {
      const again = encode(fromJson(v.header) as Record<string, unknown>, v.buffers.map((b) => Buffer.from(b, 'hex')), key);
      expect(again.map(hex)).toEqual(v.frames);
    });
  }

  it('flags a signed message whose bytes were changed', () => {
    const v = file.vectors.find((x) => x.name === 'signed_batch')!;
    const frames = v.frames.map((f) => Buffer.from(f, 'hex'));
    frames[2][0] ^= 1;
    expect(decode(frames, Buffer.from(v.key!)).forged).toBe(true);
  });

  it('length-prefixes frames so bytes cannot slide between them', () => {
    const k = Buffer.from('k');
    const a = signature(k, [Buffer.from('ab'), Buffer.from('c')]);
    const b = signature(k, [Buffer.from('a'), Buffer.from('bc')]);
    expect(a.equals(b)).toBe(false);
  });

  it('refuses another major version and non-map headers', () => {
    expect(() => decode([pack({ v: 2, id: 1, ok: true })])).toThrow(/protocol 2/);
    expect(() => decode([pack([1, 2])])).toThrow(/map/);
    expect(() => decode([])).toThrow(/needs a header frame/);
  });

  it('keeps handles distinct from integers', () => {
    const x = unpack(pack({ a: new HandleRef(7), b: 7 })) as { a: HandleRef; b: number };
    expect(x.a).toBeInstanceOf(HandleRef);
    expect(x.a.id).toBe(7);
    expect(x.b).toBe(7);
  });
});
