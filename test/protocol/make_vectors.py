"""Writes vectors.json: golden protocol messages that both test suites hold to.

Run it only when the protocol changes (and bump docs/protocol.md):
    node scripts/python.mjs test/protocol/make_vectors.py

Each vector has the frames as hex, the header in a JSON form ({"$handle": n} for a
handle) and, for signed ones, the key. Both suites decode the frames and compare with the
header, then re-encode the header and compare the bytes.
"""

import json
import struct
from pathlib import Path

from liaison_runtime.errors import ERROR_CODES
from liaison_runtime.protocol import MINOR, VERSION, Handle, encode

KEY = b"liaison-golden-key"
TS = 1764000000000.0  # fixed so the signatures are fixed


def h(i):
    return Handle(i)


def f32(*xs):
    return struct.pack(f"<{len(xs)}f", *xs)


VECTORS = [
    ("hello", "a client opens a session", {"v": 1, "id": 1, "kind": "hello"}, [], None),
    ("ping", "liveness, no session needed", {"v": 1, "id": 2, "kind": "ping"}, [], None),
    ("ping_session", "1.1: a ping naming its session keeps that session from expiring while idle",
     {"v": 1, "id": 8, "kind": "ping", "sid": "9f2c4e1a7b3d5f60"}, [], None),
    ("batch_upload_ops_read", "upload a (2, 2) f32 from frame 0, two ops, one read, one free",
     {"v": 1, "id": 3, "kind": "batch", "sid": "9f2c4e1a7b3d5f60",
      "ops": [
          {"op": "upload", "out": [h(1)], "args": [], "kw": {"dtype": "f32", "shape": [2, 2], "frame": 0}},
          {"op": "matmul", "out": [h(2)], "args": [h(1), h(1)]},
          {"op": "add", "out": [h(3)], "args": [h(2), 0.5]},
      ],
      "reads": [h(3)], "free": [h(2)]},
     [f32(1.0, 2.0, 3.0, 4.0)], None),
    ("batch_values", "every msgpack value kind an op argument can take",
     {"v": 1, "id": 70000, "kind": "batch", "sid": "s",
      "ops": [{"op": "clamp", "out": [h(4294967295)], "args": [h(128)],
               "kw": {"min": None, "max": -40000, "flag": True, "off": False, "eps": 1e-05,
                      "name": "naïve ✓", "dims": [[0, -1], []], "long": "x" * 40}}]},
     [], None),
    ("batch_multi_out", "an op with two results names two handles",
     {"v": 1, "id": 5, "kind": "batch", "sid": "s", "ops": [{"op": "qr", "out": [h(10), h(11)], "args": [h(9)],
                                                              "kw": {"mode": "reduced"}}],
      "meta": [h(10)]}, [], None),
    ("reply_hello", "the runtime's answer to hello",
     {"v": 1, "id": 1, "ok": True, "sid": "9f2c4e1a7b3d5f60", "minor": MINOR, "runtime": "0.1.0",
      "torch": "2.13.0+cpu", "device": "cpu", "cuda": False, "pid": 4242, "shm": True, "ops": ["add", "matmul"],
      "stats": {"sessions": 1, "objects": 0, "ops_run": 0},
      "limits": {"max_message_bytes": 1073741824, "max_sessions": 64, "session_idle_s": 900}}, [], None),
    ("reply_batch_read", "a read comes back as frame 0",
     {"v": 1, "id": 3, "ok": True, "reads": [{"dtype": "f32", "shape": [2], "frame": 0}], "n": 3},
     [f32(7.5, -1.25)], None),
    ("reply_error", "op 1 of a batch failed",
     {"v": 1, "id": 4, "ok": False, "error": {"code": "E_SHAPE", "message": "matmul: shapes [2, 3] and [4, 5] "
                                              "cannot be multiplied", "op": "matmul", "index": 1,
                                              "param": "other"}}, [], None),
    ("reply_error_limit", "1.1: a configured limit refused the request; the error names it and its value",
     {"v": 1, "id": 9, "ok": False, "error": {"code": "E_LIMIT", "message": "a message of 2147483648 bytes is over "
                                              "this runtime's max_message_bytes of 1073741824",
                                              "limit": "max_message_bytes", "value": 1073741824,
                                              "size": 2147483648}}, [], None),
    ("reply_error_unreadable", "an error for a request whose id could not be read",
     {"v": 1, "id": None, "ok": False, "error": {"code": "E_PROTOCOL", "message": "header frame is not valid msgpack"}},
     [], None),
    # installing a program at a hook point (docs/protocol.md "Hook points"): model_hook(model, point, program, opts)
    ("hook_kv", "install KV policy program 2 at attention layers 0 and 1 of model 1: budget, one state (init 0.5)",
     {"v": 1, "id": 10, "kind": "batch", "sid": "s",
      "ops": [{"op": "model_hook", "out": [], "args": [h(1), "kv", h(2), {"budget": 64, "state": [0.5],
                                                                          "layers": [0, 1]}]}]}, [], None),
    ("hook_router", ("install router program 3 at MoE layer 0 of model 1, then program 6 (Soft MoE: returns "
                     "[dispatch, combine, aux, zloss, probs]) at layer 1 in form 'slots'"),
     {"v": 1, "id": 11, "kind": "batch", "sid": "s",
      "ops": [{"op": "model_hook", "out": [], "args": [h(1), "router", h(3), {"layers": [0], "form": "weights"}]},
              {"op": "model_hook", "out": [], "args": [h(1), "router", h(6), {"layers": [1], "form": "slots"}]}]},
     [], None),
    ("hook_weight", "install weight program 4 on the modules whose names match a pattern, then take it off one",
     {"v": 1, "id": 12, "kind": "batch", "sid": "s",
      "ops": [{"op": "model_hook", "out": [], "args": [h(1), "weight", h(4), {"modules": "layers\\.\\d+"}]},
              {"op": "model_hook", "out": [], "args": [h(1), "weight", None, {"modules": "layers\\.0"}]}]},
     [], None),
    ("hook_output", "install output program 5 (an adapter's side path: [x, y] -> [y']) on two named modules",
     {"v": 1, "id": 13, "kind": "batch", "sid": "s",
      "ops": [{"op": "model_hook", "out": [], "args": [h(1), "output", h(5), {"modules": "layers\\.0|layers\\.1"}]}]},
     [], None),
    ("signed_ping", "on tcp:// every message carries ts and an HMAC-SHA256 signature",
     {"v": 1, "id": 6, "kind": "ping", "ts": TS}, [], KEY),
    ("signed_batch", "the signature covers the header and every buffer frame, length-prefixed",
     {"v": 1, "id": 7, "kind": "batch", "sid": "s", "ts": TS,
      "ops": [{"op": "upload", "out": [h(1)], "args": [], "kw": {"dtype": "f32", "shape": [1], "frame": 0}}]},
     [f32(3.0)], KEY),
]


def to_json(v):
    if isinstance(v, Handle):
        return {"$handle": v.id}
    if isinstance(v, dict):
        return {k: to_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_json(x) for x in v]
    return v


def main():
    out = {
        "protocol": f"{VERSION}.{MINOR}",
        "error_codes": list(ERROR_CODES),
        "vectors": [],
    }
    for name, desc, header, bufs, key in VECTORS:
        frames = encode(header, bufs, key)
        out["vectors"].append({
            "name": name, "description": desc, "key": key.decode() if key else None,
            "header": to_json(header), "buffers": [b.hex() for b in bufs],
            "frames": [bytes(f).hex() for f in frames],
        })
    path = Path(__file__).with_name("vectors.json")
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(out['vectors'])} vectors to {path}")


if __name__ == "__main__":
    main()
