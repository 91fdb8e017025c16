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
  - integers beyond 32 bits are not used except byte counts (limits, below 2**53) and
    `ts`, which travels as a float64.

This module knows nothing of torch: dtypes here are names and item sizes only.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
import time
from collections import OrderedDict

import msgpack

from .errors import RuntimeFault

VERSION = 1  # major: a peer with another major is refused
MINOR = 1  # minor: additions only; unknown header fields are ignored (1.1: limits, ping sid)
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

    A digest must be remembered only while its timestamp is inside the window: after that
    the timestamp alone refuses a replay. Digests are kept in arrival order with the time
    their timestamp leaves the window, and expired ones are popped from the front on each
    check, a few at a time, so no check ever scans the whole store. Arrival order is not
    expiry order (clocks differ by up to the window), so an entry may outlive its expiry
    while an older arrival ahead of it has not expired; every entry is still gone within
    two windows of its arrival. The store is capped: a window flooded with more signed
    messages than `max_entries` is refused (E_LIMIT) rather than allowed to grow without end.
    """

    def __init__(self, window_s: float = 300.0, max_entries: int = 1_000_000, clock=time.time):
        self.window_ms = window_s * 1000.0
        self.max_entries = max_entries
        self._clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # digest -> when it may be forgotten

    def __len__(self) -> int:
        return len(self._seen)

    def _prune(self, now: float, budget: int) -> None:
        seen = self._seen
        while seen and budget:
            digest, expires = next(iter(seen.items()))
            if expires >= now:
                return
            seen.popitem(last=False)
            budget -= 1

    def check(self, digest: bytes, ts) -> None:
        now = self._clock() * 1000.0
        # NaN compares false with everything, so a NaN stamp would pass a plain window test
        # and, never expiring, could be replayed forever
        if type(ts) not in (int, float) or not math.isfinite(ts):
            raise RuntimeFault("E_AUTH", f"signed message has no usable timestamp: header field 'ts' must be a "
                               f"finite number of milliseconds since the Unix epoch, got {show(ts)}")
        if abs(now - ts) > self.window_ms:
            raise RuntimeFault("E_AUTH", f"signed message's timestamp {ts!r} is {abs(now - ts) / 1000:.0f} s from "
                               f"this runtime's clock, outside the allowed {self.window_ms / 1000:.0f} s window "
                               "(are the two machines' clocks in step?)")
        seen = self._seen
        if digest in seen:
            raise RuntimeFault("E_REPLAY", "this signed message was already received once; refused")
        self._prune(now, 8)  # a few per message keeps pace with arrivals at no scan
        if len(seen) >= self.max_entries:
            self._prune(now, len(seen))  # stops at the first live entry
            if len(seen) >= self.max_entries:
                raise RuntimeFault("E_LIMIT", f"replay protection remembers at most {self.max_entries} signed "
                                   f"messages per {self.window_ms / 1000:.0f} s window and it is full; "
                                   "send fewer, larger batches", limit="replay_window_entries",
                                   value=self.max_entries)
        seen[digest] = ts + self.window_ms


def encode(header: dict, buffers=(), key: bytes | None = None) -> list:
    """Header + buffers -> frames [header, *buffers], preceded by the signature when keyed."""
    frames = [pack(header), *buffers]
    return [signature(key, frames), *frames] if key else frames


def message_bytes(frames) -> int:
    """The size of a message, all its frames together (signature included)."""
    return sum(memoryview(f).nbytes for f in frames)


def show(v, limit: int = 80) -> str:
    """repr(v), cut short: an error message quotes what was sent, not all of it."""
    r = repr(v)
    return r if len(r) <= limit else r[:limit] + "…"


def _integral(v, lo: int, hi: int):
    """An int in [lo, hi], or an integral float64 there as the int it stands for (the spec
    lets a sender write 1.0 for 1); anything else is None."""
    if type(v) is float and v.is_integer():
        v = int(v)
    if type(v) is int and lo <= v <= hi:
        return v
    return None


def decode(frames: list, key: bytes | None = None, guard: ReplayGuard | None = None,
           max_bytes: int | None = None) -> tuple[dict, list]:
    """Frames ([signature,] header, *buffers) -> (header, buffers), or RuntimeFault.

    Checks, in order: size, frame count, signature (when keyed), msgpack, header fields,
    version, replay (when keyed). The size comes first so that an oversized message costs
    no hashing. The header is parsed before the replay check so that the timestamp can be
    read, but nothing in it is acted on before the signature matched.
    """
    if not frames:
        raise RuntimeFault("E_PROTOCOL", "an empty message: it needs at least a header frame")
    if max_bytes is not None:
        size = message_bytes(frames)
        if size > max_bytes:
            raise RuntimeFault("E_LIMIT", f"a message of {size} bytes is over this runtime's max_message_bytes of "
                               f"{max_bytes}: send less at once, or start the runtime with a larger "
                               "--max-message-bytes (LIAISON_MAX_MESSAGE_BYTES)",
                               limit="max_message_bytes", value=max_bytes, size=size)
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
    v = _integral(header.get("v"), -(1 << 63), (1 << 64) - 1)
    if v is None:
        raise RuntimeFault("E_PROTOCOL", f"header field 'v' (protocol version) must be an integer, got "
                           f"{show(header.get('v'))}")
    if v != VERSION:
        raise RuntimeFault("E_VERSION", f"protocol major version {v} is not supported; this runtime speaks "
                           f"{VERSION}.{MINOR}. Upgrade the older side.")
    rid = _integral(header.get("id"), 0, (1 << 64) - 1)
    if rid is None:
        raise RuntimeFault("E_PROTOCOL", f"header field 'id' must be a non-negative integer, got "
                           f"{show(header.get('id'))}")
    header["v"], header["id"] = v, rid
    kind = header.get("kind")
    if kind not in KINDS:
        raise RuntimeFault("E_PROTOCOL", f"header field 'kind' must be one of {', '.join(KINDS)}; got {show(kind)}")
    if key and guard is not None:
        guard.check(digest, header.get("ts"))
    return header, body[1:]
