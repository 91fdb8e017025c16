"""The Python half of the protocol conformance kit (the vitest suite does the same)."""

import json
from pathlib import Path

import pytest

from liaison_runtime.errors import ERROR_CODES, RuntimeFault
from liaison_runtime.protocol import (
    MINOR,
    VERSION,
    Handle,
    ReplayGuard,
    decode,
    encode,
    pack,
    signature,
    unpack,
)

VECTORS = json.loads((Path(__file__).parents[2] / "test" / "protocol" / "vectors.json").read_text())


def from_json(v):
    if isinstance(v, dict):
        if "$handle" in v:
            return Handle(v["$handle"])
        return {k: from_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json(x) for x in v]
    return v


def test_version_and_error_table():
    assert VECTORS["protocol"] == f"{VERSION}.{MINOR}"
    assert list(ERROR_CODES) == VECTORS["error_codes"]


@pytest.mark.parametrize("vec", VECTORS["vectors"], ids=lambda v: v["name"])
def test_vector_roundtrip(vec):
    key = vec["key"].encode() if vec["key"] else None
    frames = [bytes.fromhex(f) for f in vec["frames"]]
    header = from_json(vec["header"])
    if "kind" in header:  # requests go through the runtime's full decoder
        got, bufs = decode(frames, key, None)
        assert got == header
        assert [bytes(b).hex() for b in bufs] == vec["buffers"]
    else:
        assert unpack(frames[1 if key else 0]) == header
    again = encode(header, [bytes.fromhex(b) for b in vec["buffers"]], key)
    assert [bytes(f).hex() for f in again] == vec["frames"]


def _signed(header, key=b"k", bufs=()):
    return encode(header, list(bufs), key)


def test_signature_checks():
    import time
    key = b"k"
    h = {"v": 1, "id": 1, "kind": "ping", "ts": time.time() * 1000}
    frames = _signed(h, key)
    guard = ReplayGuard()
    assert decode(frames, key, guard)[0]["id"] == 1
    with pytest.raises(RuntimeFault) as e:
        decode(frames, key, guard)
    assert e.value.code == "E_REPLAY"
    with pytest.raises(RuntimeFault) as e:
        decode([b"", *frames[1:]], key, guard)
    assert e.value.code == "E_AUTH" and "not signed" in e.value.message
    with pytest.raises(RuntimeFault) as e:
        decode(_signed(h, b"other"), key, guard)
    assert e.value.code == "E_AUTH" and "wrong signature" in e.value.message
    old = {"v": 1, "id": 2, "kind": "ping", "ts": time.time() * 1000 - 3_600_000}
    with pytest.raises(RuntimeFault) as e:
        decode(_signed(old, key), key, guard)
    assert e.value.code == "E_AUTH" and "window" in e.value.message


def test_signed_message_to_an_unkeyed_runtime_says_so():
    import time
    frames = encode({"v": 1, "id": 1, "kind": "ping", "ts": time.time() * 1000}, [], b"k")
    with pytest.raises(RuntimeFault) as e:
        decode(frames)
    assert e.value.code == "E_PROTOCOL" and "no key" in e.value.message


def test_unsigned_message_to_a_keyed_runtime_is_refused():
    with pytest.raises(RuntimeFault) as e:
        decode(encode({"v": 1, "id": 1, "kind": "ping"}), b"k", ReplayGuard())
    assert e.value.code == "E_AUTH" and "not signed" in e.value.message


def test_length_prefix():
    assert signature(b"k", [b"ab", b"c"]) != signature(b"k", [b"a", b"bc"])


@pytest.mark.parametrize("frames,code", [
    ([], "E_PROTOCOL"),
    ([b""], "E_PROTOCOL"),
    ([b"\xc1"], "E_PROTOCOL"),
    ([pack([1, 2])], "E_PROTOCOL"),
    ([pack({"id": 1, "kind": "ping"})], "E_PROTOCOL"),
    ([pack({"v": 2, "id": 1, "kind": "ping"})], "E_VERSION"),
    ([pack({"v": 1, "id": -1, "kind": "ping"})], "E_PROTOCOL"),
    ([pack({"v": 1, "id": 1, "kind": "exec"})], "E_PROTOCOL"),
    ([b"\xc7\x01\x05x"], "E_PROTOCOL"),  # unknown ext type
])
def test_malformed(frames, code):
    with pytest.raises(RuntimeFault) as e:
        decode(frames)
    assert e.value.code == code


def test_unknown_fields_are_tolerated():
    h, _ = decode(encode({"v": 1, "id": 1, "kind": "ping", "future_field": {"x": 1}}))
    assert h["future_field"] == {"x": 1}


def test_op_reference_is_current():
    from liaison_runtime.opdoc import render

    path = Path(__file__).parents[2] / "docs" / "ops.md"
    assert path.read_text() == render(), \
        "docs/ops.md is stale: run `node scripts/python.mjs -m liaison_runtime.opdoc > docs/ops.md`"
