"""A bounded fuzz of the wire protocol (issue 9, Deliver): a few thousand malformed messages
of every kind, from a fixed seed, against real servers on their sockets.

Every message must get exactly one reply, every refusal a typed error from the one table
and never E_INTERNAL ("a bug in the runtime"), and afterwards the runtime must still serve
a ping and a real op. Sizes stay small on purpose: the op arguments come from a pool whose
only large numbers are far beyond any memory (2**40 elements fails at once), so no message
can make the runtime allocate or compute for long.
"""

from __future__ import annotations

import random
import struct

import msgpack
import pytest
from wire import INF, NAN, Served

from liaison_runtime import policy
from liaison_runtime.errors import ERROR_CODES
from liaison_runtime.ops import OPS
from liaison_runtime.protocol import Handle as H
from liaison_runtime.protocol import encode, pack

SEED = 20261203
KEY = b"fuzz-key-0123456789"
LIMIT = 256 * 1024  # max_message_bytes for both servers: oversize messages stay cheap
INPUTS = {1: ("f32", [3, 3]), 2: ("i64", [4]), 3: ("bool", [2]), 4: ("f32", [1])}

INTS = [-3, -1, 0, 1, 2, 3, 5, 1 << 40, (1 << 63) - 1, -(1 << 63), (1 << 64) - 1]
FLOATS = [0.5, -2.5, 1e30, -1e308, NAN, INF, -INF, 1.0]
STRS = ["", "x", "f32", "i64", "sum", "mean", "mlp", "reduced", "ij,jk->ik", "@", "é" * 3, "a" * 300]
KEYS = ["kind", "sizes", "dim", "shape", "dtype", "frame", "x", "alpha", "keepdim", "shm", "key", "ref"]


class Junk:
    """Random msgpack values: every type a field could wrongly hold."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def scalar(self):
        r = self.rng
        pick = r.randrange(8)
        if pick == 0:
            return r.choice(INTS)
        if pick == 1:
            return r.choice(FLOATS)
        if pick == 2:
            return r.choice(STRS)
        if pick == 3:
            return r.choice([None, True, False])
        if pick == 4:
            return bytes(r.randrange(256) for _ in range(r.randrange(6)))
        if pick == 5:
            return H(r.choice([1, 2, 3, 4, 99, 0, 0xFFFFFFFF]))  # inputs, and ones that do not exist
        if pick == 6:
            return [r.choice(INTS[:7]) for _ in range(r.randrange(4))]  # a small shape-like list
        return r.randrange(-10, 10)

    def value(self, depth: int = 0):
        r = self.rng
        if depth < 2 and r.random() < 0.25:
            if r.random() < 0.5:
                return [self.value(depth + 1) for _ in range(r.randrange(4))]
            return {r.choice(KEYS): self.value(depth + 1) for _ in range(r.randrange(4))}
        return self.scalar()


class Fuzzer:
    def __init__(self, served: Served, rng: random.Random):
        self.s, self.rng, self.junk = served, rng, Junk(rng)
        self.sock = served.client()
        self.sid = self.call({"kind": "hello"})["sid"]
        self.replies = 0
        self.codes: dict[str, int] = {}
        self.expect: tuple = ()  # set by a generator whose answer is known: codes, or "ok"

    # ---- sending ----

    def call(self, header: dict, bufs=(), key=True) -> dict:
        return self.s.call(self.sock, header, bufs, key)

    def send(self, frames: list, sent_id=None) -> dict:
        """One message out, exactly one reply back, and that reply well-formed and typed."""
        self.sock.send_multipart(frames)
        raw = self.sock.recv_multipart()  # RCVTIMEO: a message left unanswered fails here
        reply = msgpack.unpackb(raw[1] if self.s.key else raw[0], raw=False)
        self.replies += 1
        assert isinstance(reply, dict) and reply.get("v") == 1 and isinstance(reply.get("ok"), bool), reply
        assert reply["id"] in (None, sent_id), (reply, sent_id)
        if not reply["ok"]:
            err = reply["error"]
            code = err["code"]
            self.codes[code] = self.codes.get(code, 0) + 1
            assert code in ERROR_CODES and code != "E_INTERNAL", (frames[:2], err)
            assert isinstance(err["message"], str) and err["message"]
        if self.expect:
            assert ("ok" if reply["ok"] else reply["error"]["code"]) in self.expect, (self.expect, reply)
            self.expect = ()
        return reply

    def request(self, header: dict, bufs=(), key=True) -> dict:
        rid = self.s.next_id()
        return self.send(self.s.frames({"v": 1, "id": rid, **header}, bufs, key), rid)

    def inputs(self) -> tuple[list, list]:
        """Upload ops for fresh small inputs 1..4 (in-place ops may have changed the last ones)."""
        ops, bufs = [], []
        for h, (dtype, shape) in INPUTS.items():
            n = 1
            for d in shape:
                n *= d
            size = {"f32": 4, "i64": 8, "bool": 1}[dtype]
            bufs.append(bytes(self.rng.randrange(2) for _ in range(n * size)) if dtype == "bool"
                        else struct.pack(f"<{n}{'f' if dtype == 'f32' else 'q'}", *range(n)))
            ops.append({"op": "upload", "out": [H(h)], "kw": {"dtype": dtype, "shape": shape, "frame": h - 1}})
        return ops, bufs

    # ---- the kinds of malformed message ----

    def garbage(self):
        r = self.rng
        return [bytes(r.randrange(256) for _ in range(r.randrange(48)))], None

    def truncated(self):
        rid = self.s.next_id()
        whole = pack({"v": 1, "id": rid, "kind": "batch", "sid": self.sid,
                      "ops": [{"op": "neg", "out": [H(100)], "args": [H(1)]}], "free": [H(100)]})
        return [whole[: self.rng.randrange(1, len(whole))]], rid

    def not_a_map(self):
        return [pack(self.junk.scalar())], None

    def wrong_fields(self):
        rid = self.s.next_id()
        header = {"v": 1, "id": rid, "kind": self.rng.choice(["hello", "ping", "batch", "close"]), "sid": self.sid}
        field = self.rng.choice(["v", "id", "kind", "sid", "ops", "reads", "free", "meta", "shm", "ts"])
        header[field] = self.junk.value()
        if header["kind"] == "close" and header.get("sid") == self.sid:
            header["sid"] = "not-" + self.sid  # our own session stays open
        return [pack(header)], header["id"]  # a junk id that happens to be valid is echoed

    def bad_version(self):
        rid = self.s.next_id()
        v = self.rng.choice([1.5, 0.999, NAN, INF, -1.0, 2.0 ** 70, 2, 0, "1", None, True])
        return [pack({"v": v, "id": rid, "kind": "ping"})], rid

    def bad_session(self):
        rid = self.s.next_id()
        sid = self.rng.choice([None, 5, [1], {"a": 1}, "nope", "x" * 10_000, b"bytes", 1.5, True, self.sid[::-1]])
        return [pack({"v": 1, "id": rid, "kind": self.rng.choice(["batch", "close", "ping"]), "sid": sid})], rid

    def bad_op_record(self):
        rid = self.s.next_id()
        rec = self.junk.value() if self.rng.random() < 0.5 else {
            "op": self.rng.choice([*STRS, 7, None]), "out": self.junk.value(), "args": self.junk.value(),
            "kw": self.junk.value()}
        return [pack({"v": 1, "id": rid, "kind": "batch", "sid": self.sid, "ops": [rec]})], rid

    def bad_op_args(self):
        """A real op with junk arguments, after fresh inputs; its outputs are freed at once."""
        rid = self.s.next_id()
        ops, bufs = self.inputs()
        names = sorted(OPS)
        outs = []
        for k in range(self.rng.randrange(1, 3)):
            n_out = self.rng.choice([1, 1, 1, 2, 0])
            out = [H(100 + 4 * k + i) for i in range(n_out)]
            outs += out
            args = [self.junk.value() for _ in range(self.rng.randrange(4))]
            if self.rng.random() < 0.7:  # a real tensor first gets most ops past their first parameter
                args.insert(0, H(self.rng.choice(list(INPUTS))))
            kw = {self.rng.choice(KEYS): self.junk.value() for _ in range(self.rng.randrange(3))}
            if self.rng.random() < 0.4:  # plausible arguments: the op itself must refuse what is wrong
                args = [H(self.rng.choice(list(INPUTS))) for _ in range(self.rng.randrange(1, 3))]
                args += [self.rng.choice([*INTS, *FLOATS])] if self.rng.random() < 0.5 else []
                kw = {}
            ops.append({"op": self.rng.choice(names), "out": out, "args": args, "kw": kw})
        reads = [self.rng.choice([H(1), *outs])] if self.rng.random() < 0.3 else []
        return encode({"v": 1, "id": rid, "kind": "batch", "sid": self.sid, "ops": ops, "reads": reads,
                       "free": outs}, bufs), rid

    def item_11(self):
        rid = self.s.next_id()
        ops, bufs = self.inputs()
        case = self.rng.randrange(5)
        reads = []
        if case == 0:
            ops.append({"op": "reshape", "out": [H(100)], "args": [H(1), [-1, 0]]})
            self.expect = ("E_ARG", "E_SHAPE", "E_OP_FAILED")
        elif case == 1:
            ops.append({"op": "add_", "out": [H(100)], "args": [H(2), 1], "kw": {"alpha": 1e30}})
            self.expect = ("E_ARG", "E_DTYPE", "E_OP_FAILED")
        elif case == 2:
            ops.append({"op": "expand", "out": [H(100)], "args": [H(4), [10 ** 12]]})
            reads = [H(100)]
            self.expect = ("E_LIMIT",)
        elif case == 3:
            self.expect = ("E_PROTOCOL",)
            return [pack({"v": 1, "id": rid, "kind": "close", "sid": [self.sid]})], rid
        else:
            self.expect = ("ok",)
            return [pack({"v": 1.0, "id": rid, "kind": "ping"})], rid
        return encode({"v": 1, "id": rid, "kind": "batch", "sid": self.sid, "ops": ops, "reads": reads,
                       "free": [H(100)]}, bufs), rid

    def bad_upload(self):
        rid = self.s.next_id()
        kw = {"dtype": self.rng.choice(["f32", "i64", "c64", 5]), "shape": self.junk.value(),
              self.rng.choice(["frame", "shm"]): self.junk.value()}
        bufs = [b"\0" * self.rng.choice([0, 3, 4, 16, 36])]
        return encode({"v": 1, "id": rid, "kind": "batch", "sid": self.sid,
                       "ops": [{"op": "upload", "out": [H(100)], "kw": kw}], "free": [H(100)]}, bufs), rid

    def bad_ext(self):
        rid = self.s.next_id()
        ext = (msgpack.Timestamp(5, 0) if self.rng.random() < 0.2  # ext -1, which msgpack itself decodes
               else msgpack.ExtType(self.rng.choice([1, 2, 7, 127]), bytes(self.rng.choice([0, 3, 4, 5, 8]))))
        return [msgpack.packb({"v": 1, "id": rid, "kind": "batch", "sid": self.sid,
                               "ops": [{"op": "neg", "out": [ext], "args": [ext]}]})], rid

    def oversize(self):
        rid = self.s.next_id()
        n = self.rng.randrange(2, 5)
        self.expect = ("E_LIMIT",)
        return encode({"v": 1, "id": rid, "kind": "batch", "sid": self.sid}, [b"\0" * (LIMIT // n + 1)] * n), rid

    def kinds(self):
        return [self.garbage, self.truncated, self.not_a_map, self.wrong_fields, self.bad_version, self.bad_session,
                self.bad_op_record, self.bad_op_args, self.bad_op_args, self.item_11, self.bad_upload, self.bad_ext,
                self.oversize]

    # ---- after it all ----

    def still_serving(self) -> None:
        assert self.call({"kind": "ping", "sid": self.sid})["ok"]
        ops, bufs = self.inputs()
        ops.append({"op": "matmul", "out": [H(5)], "args": [H(1), H(1)]})
        reply = self.call({"kind": "batch", "sid": self.sid, "ops": ops, "reads": [H(5)], "free": [H(5)]}, bufs)
        assert reply["ok"] and reply["reads"] == [{"dtype": "f32", "shape": [3, 3], "frame": 0}], reply


@pytest.fixture()
def no_factories_or_files():
    saved = policy.ALLOW_FACTORIES, policy.ALLOW_FILES
    policy.set_policy(factories=False, files=False)
    yield
    policy.set_policy(factories=saved[0], files=saved[1])


def test_unsigned_runtime_answers_thousands_of_malformed_messages(tmp_path, no_factories_or_files):
    (tmp_path / "s").mkdir(mode=0o700)
    served = Served(f"ipc://{tmp_path}/s/rt.sock", max_message_bytes=LIMIT, max_sessions=100_000)
    try:
        rng = random.Random(SEED)
        fz = Fuzzer(served, rng)
        kinds = fz.kinds()
        for _ in range(2600):
            frames, rid = rng.choice(kinds)()
            fz.send(frames, rid)
        assert fz.replies == 2600
        # every family of refusal was reached, so the fuzz is not silently testing one path
        for code in ("E_PROTOCOL", "E_VERSION", "E_SESSION", "E_ARG", "E_HANDLE", "E_LIMIT", "E_UNKNOWN_OP"):
            assert fz.codes.get(code, 0) > 0, (code, fz.codes)
        fz.still_serving()
    finally:
        served.close()


def test_signed_runtime_refuses_unsigned_forged_stale_and_replayed_messages(no_factories_or_files):
    served = Served("tcp://127.0.0.1:0", key=KEY, max_message_bytes=LIMIT, max_sessions=100_000)
    try:
        rng = random.Random(SEED + 1)
        fz = Fuzzer(served, rng)
        kinds = fz.kinds()
        n = 0
        for _ in range(1000):
            frames, rid = rng.choice(kinds)()  # unsigned frames, about to be signed or not
            fz.expect = ()  # what they would get unsigned; the checks below say what they get here
            how = rng.randrange(6)
            if how == 0:  # unsigned
                assert fz.send(frames, rid)["ok"] is False
            elif how == 1:  # a signature of the right size that is not the right one
                assert fz.send([bytes(rng.randrange(256) for _ in range(32)), *frames], rid)["error"]["code"] \
                    in ("E_AUTH", "E_LIMIT")
            elif how == 2:  # signed with another key
                assert fz.send(encode_raw(frames, b"another key"), rid)["error"]["code"] in ("E_AUTH", "E_LIMIT")
            elif how == 3:  # correctly signed, with a bad stamp
                rid = served.next_id()
                ts = rng.choice([NAN, INF, -INF, "now", None, True, 0.0, 1e300, [1.0]])
                header = {"v": 1, "id": rid, "kind": "ping", **({} if ts is None else {"ts": ts})}
                assert fz.send(encode(header, [], KEY), rid)["error"]["code"] == "E_AUTH"
            else:  # correctly signed junk, then the very same frames again
                signed = encode_raw(frames, KEY, stamp=True)
                first = fz.send(signed, rid)
                again = fz.send(signed, rid)
                if first.get("error", {}).get("code") not in ("E_LIMIT", "E_PROTOCOL", "E_VERSION"):
                    assert again["error"]["code"] == "E_REPLAY", (first, again)
            n += 1
        assert n == 1000 and fz.codes.get("E_REPLAY", 0) > 0 and fz.codes.get("E_AUTH", 0) > 0
        fz.still_serving()
    finally:
        served.close()


def encode_raw(frames: list, key: bytes, stamp: bool = False) -> list:
    """Sign already-made frames; with stamp, first give a readable header a current ts."""
    import time

    from liaison_runtime.protocol import signature, unpack

    if stamp:
        try:
            header = unpack(frames[0])
        except Exception:  # noqa: BLE001 — garbage stays garbage, signed
            header = None
        if isinstance(header, dict):
            header["ts"] = time.time() * 1000.0
            frames = [msgpack.packb(header, default=_ext_default, use_bin_type=True), *frames[1:]]
    return [signature(key, frames), *frames]


def _ext_default(obj):
    if isinstance(obj, H):
        return msgpack.ExtType(1, struct.pack(">I", obj.id))
    raise TypeError(type(obj).__name__)
