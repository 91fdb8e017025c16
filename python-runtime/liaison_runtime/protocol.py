"""Liaison wire protocol, version 1 — the Python half (spec: docs/protocol.md).

A message is a ZeroMQ multipart message (after the ROUTER's identity frame):

    [signature]  on keyed (tcp) connections only: HMAC-SHA256 over the frames after it
    header       one msgpack map
    buffers...   raw tensor bytes, referenced from the header by index (buffer k)

Unkeyed connections carry no signature frame at all: an empty one would cost a third of
the small-message rate (measured: 55k vs 80k messages/s between Node and Python).

msgpack rules, so that both languages write the same bytes (test/protocol/vectors.json):
  - maps with string keys, smallest encodings (fixmap/fixstr/fixint first), bin for bytes;
  - a tensor handle is ext type 1 with a 4-byte big-endian unsigned id;
  - integers beyond 32 bits are not used except `ts`, which travels as a float64.

This module knows nothing of torch: dtypes here are names and item sizes only.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time

import msgpack

from .errors import RuntimeFault

VERSION = 1  # major: a peer with another major is refused
MINOR = 0  # minor: additions only; unknown header fields are ignored
EXT_HANDLE = 1
SIG_LEN = 32

# dtype name -> bytes per element. bool travels as one byte per element (0 or 1).
DTYPES: dict[str, int] = {
    "f32": 4, "f64": 8, "f16": 2, "bf16": 2, "i32": 4, "i64": 8, "u8": 1, "bool": 1,
}

KINDS = ("hello", "ping", "batch", "close", "shutdown")


class Handle:
    """A client-allocated tensor id, as it appears inside a message."""

    __slots__ = ("id",)

    def __init__(self, id: int):
        self.id = id

    def __eq__(self, other) -> bool:
        return isinstance(other, Handle) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("h", self.id))

    def __repr__(self) -> str:
        return f"Handle({self.id})"


_HANDLE = struct.Struct(">I")


def _default(obj):
    if isinstance(obj, Handle):
        return msgpack.ExtType(EXT_HANDLE, _HANDLE.pack(obj.id))
    raise TypeError(f"cannot encode {type(obj).__name__} on the Liaison wire")


_handles: dict[bytes, Handle] = {}
_from_bytes = int.from_bytes


def _ext_hook(code: int, data: bytes):
    # Called for every handle in every message (three per op in a typical batch). A handle
    # appears several times in a row (made, used, freed), so a small cache of the recent
    # ones halves the decode time of a batch; Handle objects are never mutated.
    if code == EXT_HANDLE:
        h = _handles.get(data)
        if h is not None:
            return h
        if len(data) == 4:
            if len(_handles) >= 65536:
                _handles.clear()
            h = _handles[data] = Handle(_from_bytes(data, "big"))
            return h
    raise ValueError(f"unknown msgpack ext type {code} ({len(data)} bytes)")


def pack(obj) -> bytes:
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpack(data) -> object:
    return msgpack.unpackb(data, ext_hook=_ext_hook, raw=False)


def signature(key: bytes, frames) -> bytes:
    """HMAC-SHA256 over the frames after the signature, each preceded by its length as a u64 big-endian,
    so that moving bytes from one frame to the next changes the digest."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for f in frames:
        mv = memoryview(f)
        mac.update(struct.pack(">Q", mv.nbytes))
        mac.update(mv)
    return mac.digest()


class ReplayGuard:
    """Refuses a signed message seen before (by digest) or stamped outside the window.

    Digests are remembered for the window's length only; an older message is refused by
    its timestamp instead, so memory stays bounded.
    """

    def __init__(self, window_s: float = 300.0):
        self.window_ms = window_s * 1000.0
        self._seen: dict[bytes, float] = {}
        self._next_prune = 0.0

    def check(self, digest: bytes, ts) -> None:
        now = time.time() * 1000.0
        if not isinstance(ts, (int, float)) or abs(now - ts) > self.window_ms:
            raise RuntimeFault("E_AUTH", "signed message has no timestamp or one outside the allowed window "
                               "(are the two machines' clocks within 5 minutes?)")
        if digest in self._seen:
            raise RuntimeFault("E_REPLAY", "this signed message was already received once; refused")
        self._seen[digest] = ts
        if now >= self._next_prune:
            cutoff = now - self.window_ms
            self._seen = {d: t for d, t in self._seen.items() if t >= cutoff}
            self._next_prune = now + 1000.0


def encode(header: dict, buffers=(), key: bytes | None = None) -> list:
    """Header + buffers -> frames [header, *buffers], preceded by the signature when keyed."""
    frames = [pack(header), *buffers]
    return [signature(key, frames), *frames] if key else frames


def decode(frames: list, key: bytes | None = None, guard: ReplayGuard | None = None) -> tuple[dict, list]:
    """Frames ([signature,] header, *buffers) -> (header, buffers), or RuntimeFault.

    Checks, in order: frame count, signature (when keyed), msgpack, header fields,
    version, replay (when keyed). The header is parsed before the replay check so that the
    timestamp can be read, but nothing in it is acted on before the signature matched.
    """
    if not frames:
        raise RuntimeFault("E_PROTOCOL", "an empty message: it needs at least a header frame")
    digest = b""
    if key:
        sig, body = bytes(frames[0]), frames[1:]
        if len(sig) != SIG_LEN or not body:
            raise RuntimeFault("E_AUTH", "message is not signed; this runtime requires HMAC-SHA256 signatures")
        digest = signature(key, body)
        if not hmac.compare_digest(digest, sig):
            raise RuntimeFault("E_AUTH", "wrong signature: the message was altered or signed with another key")
    else:
        body = frames
    try:
        header = unpack(body[0])
    except Exception as e:  # msgpack raises several types; all mean the same to the peer
        hint = (" (a 32-byte first frame: is the client signing for a runtime that has no key?)"
                if not key and len(body) > 1 and memoryview(body[0]).nbytes == SIG_LEN else "")
        raise RuntimeFault("E_PROTOCOL", f"header frame is not valid msgpack: {e}{hint}") from None
    if not isinstance(header, dict):
        raise RuntimeFault("E_PROTOCOL", f"header must be a msgpack map, got {type(header).__name__}")
    v = header.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise RuntimeFault("E_PROTOCOL", "header field 'v' (protocol version) is missing or not an integer")
    if v != VERSION:
        raise RuntimeFault("E_VERSION", f"protocol major version {v} is not supported; this runtime speaks "
                           f"{VERSION}.{MINOR}. Upgrade the older side.")
    rid = header.get("id")
    if not isinstance(rid, int) or isinstance(rid, bool) or rid < 0:
        raise RuntimeFault("E_PROTOCOL", "header field 'id' must be a non-negative integer")
    kind = header.get("kind")
    if kind not in KINDS:
        raise RuntimeFault("E_PROTOCOL", f"header field 'kind' must be one of {', '.join(KINDS)}; got {kind!r}")
    if key and guard is not None:
        guard.check(digest, header.get("ts"))
    return header, body[1:]
