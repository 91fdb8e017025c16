"""The message-size limit (issue 9 item 4), replay protection's timestamps and memory
(item 5), and the header and read checks of item 11."""

import os
import struct
import tempfile

import pytest
import torch
import zmq
from wire import INF, NAN, Served, error_code, poll_until

from liaison_runtime import protocol
from liaison_runtime.errors import RuntimeFault
from liaison_runtime.executor import Executor
from liaison_runtime.protocol import Handle as H
from liaison_runtime.protocol import ReplayGuard, decode, encode

KEY = b"k" * 16


def fault(code, fn, *args, **kw) -> RuntimeFault:
    with pytest.raises(RuntimeFault) as info:
        fn(*args, **kw)
    assert info.value.code == code, info.value.message
    return info.value


# ---- item 4: the size limit comes before the signature ----

def test_an_oversized_message_is_refused_before_it_is_hashed(monkeypatch):
    hashed = []
    monkeypatch.setattr(protocol, "signature", lambda key, frames: hashed.append(1) or b"\0" * 32)
    frames = [b"\1" * 32, protocol.pack({"v": 1, "id": 4, "kind": "ping"}), b"\0" * 5000]
    f = fault("E_LIMIT", decode, frames, KEY, ReplayGuard(), max_bytes=4096)
    assert not hashed
    assert f.extra == {"limit": "max_message_bytes", "value": 4096, "size": 5000 + 32 + len(frames[1])}
    assert "--max-message-bytes" in f.message and "LIAISON_MAX_MESSAGE_BYTES" in f.message
    fault("E_AUTH", decode, frames, KEY, ReplayGuard(), max_bytes=1 << 20)  # under it: checked, and hashed
    assert hashed


def test_the_server_refuses_a_message_over_the_limit_and_keeps_serving(tmp_path):
    (tmp_path / "s").mkdir(mode=0o700)
    served = Served(f"ipc://{tmp_path}/s/rt.sock", max_message_bytes=64 * 1024)
    try:
        # libzmq enforces it per frame too (ZMQ_MAXMSGSIZE): such a frame is never buffered
        assert served.server.sock.getsockopt(zmq.MAXMSGSIZE) == 64 * 1024
        sock = served.client()
        hello = served.call(sock, {"kind": "hello"})
        assert hello["limits"] == {"max_message_bytes": 65536, "max_sessions": 64, "session_idle_s": 900}
        # frames under the limit, the whole message over it: refused with the request's id
        reply = served.call(sock, {"kind": "batch", "sid": hello["sid"]}, [b"\0" * 40_000, b"\0" * 40_000])
        assert error_code(reply) == "E_LIMIT" and reply["id"] is not None and reply["error"]["value"] == 65536
        # one frame over it: libzmq drops that connection; the runtime goes on serving others
        big = served.client(timeout_ms=2000)
        big.send_multipart(served.frames({"v": 1, "id": 1, "kind": "ping"}, [b"\0" * 70_000]))
        with pytest.raises(zmq.Again):
            big.recv_multipart()
        assert served.call(served.client(), {"kind": "ping"})["ok"]
    finally:
        served.close()


# ---- item 5: timestamps and the digest store ----

@pytest.mark.parametrize("ts", [NAN, INF, -INF, "1764000000000", None, True, [1.0]])
def test_a_signed_message_needs_a_finite_number_as_its_timestamp(ts):
    guard = ReplayGuard()
    frames = encode({"v": 1, "id": 1, "kind": "ping", "ts": ts}, [], KEY)
    for _ in range(3):  # the NaN one used to pass, and again on every replay
        f = fault("E_AUTH", decode, frames, KEY, guard)
        assert "'ts'" in f.message
    assert len(guard) == 0


class Clock:
    def __init__(self, t: float = 1_764_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_digests_are_forgotten_in_arrival_order_a_few_per_message():
    clock = Clock()
    guard = ReplayGuard(window_s=10, clock=clock)
    for i in range(100):
        guard.check(struct.pack(">Q", i), clock.t * 1000)
    assert len(guard) == 100
    clock.t += 11  # every one of them is now refused by its timestamp alone
    sizes = []
    for i in range(100, 140):
        guard.check(struct.pack(">Q", i), clock.t * 1000)
        sizes.append(len(guard))
    # each message prunes a bounded few from the front, never the whole store at once
    assert all(b >= a - 8 for a, b in zip([100, *sizes], sizes, strict=False))
    assert sizes[-1] == 40  # only the live ones remain
    with pytest.raises(RuntimeFault) as info:
        guard.check(struct.pack(">Q", 139), clock.t * 1000)
    assert info.value.code == "E_REPLAY"


def test_a_flooded_window_is_refused_not_grown():
    clock = Clock()
    guard = ReplayGuard(window_s=10, max_entries=5, clock=clock)
    for i in range(5):
        guard.check(bytes([i]) * 32, clock.t * 1000)
    f = fault("E_LIMIT", guard.check, b"x" * 32, clock.t * 1000)
    assert f.extra["value"] == 5 and len(guard) == 5
    clock.t += 11
    guard.check(b"y" * 32, clock.t * 1000)  # once the window has moved on, room again
    assert len(guard) == 1


def test_a_keyed_server_refuses_nan_stamps_and_replays():
    served = Served("tcp://127.0.0.1:0", key=KEY)
    try:
        sock = served.client()
        nan = encode({"v": 1, "id": 5, "kind": "ping", "ts": NAN}, [], KEY)
        for _ in range(2):
            sock.send_multipart(nan)
            assert error_code(served.reply(sock)) == "E_AUTH"
        once = served.frames({"v": 1, "id": 6, "kind": "ping"})
        sock.send_multipart(once)
        assert served.reply(sock)["ok"]
        sock.send_multipart(once)
        assert error_code(served.reply(sock)) == "E_REPLAY"
    finally:
        served.close()


# ---- item 11: header numbers, close, reads ----

def test_an_integral_float_is_accepted_for_v_and_id():
    header, _ = decode(encode({"v": 1.0, "id": 7.0, "kind": "ping"}))
    assert header["v"] == 1 and type(header["id"]) is int and header["id"] == 7
    for v in (1.5, NAN, INF, "1", True, None):
        assert "'v'" in fault("E_PROTOCOL", decode, encode({"v": v, "id": 1, "kind": "ping"})).message
    for rid in (-1, 2.5, NAN, 2.0 ** 70, True, "3"):
        assert "'id'" in fault("E_PROTOCOL", decode, encode({"v": 1, "id": rid, "kind": "ping"})).message
    assert fault("E_VERSION", decode, encode({"v": 2.0, "id": 1, "kind": "ping"}))


@pytest.fixture()
def ex():
    return Executor(torch.device("cpu"), max_message_bytes=1 << 20)


def test_close_names_a_bad_or_unknown_session(ex):
    for sid in ([1, 2], {"a": 1}, 3, None):
        assert "'sid'" in fault("E_PROTOCOL", ex.handle, {"kind": "close", "id": 1, "sid": sid}, []).message
    fault("E_SESSION", ex.handle, {"kind": "close", "id": 1, "sid": "0123456789abcdef"}, [])
    sid = ex.handle({"kind": "hello", "id": 1}, [])[0]["sid"]
    assert ex.handle({"kind": "close", "id": 2, "sid": sid}, [])[0] == {"freed": 0}
    fault("E_SESSION", ex.handle, {"kind": "close", "id": 3, "sid": sid}, [])  # closed twice


def test_a_read_larger_than_a_message_is_refused_before_it_is_copied(ex, monkeypatch):
    sid = ex.handle({"kind": "hello", "id": 1}, [])[0]["sid"]
    monkeypatch.setattr(torch.Tensor, "contiguous", lambda *a: pytest.fail("a read was copied before its check"))
    f = fault("E_LIMIT", ex.handle, {"kind": "batch", "id": 2, "sid": sid, "reads": [H(2)], "ops": [
        {"op": "ones", "out": [H(1)], "args": [[1]]},
        {"op": "expand", "out": [H(2)], "args": [H(1), [10 ** 12]]},  # 4 TB that were never allocated
    ]}, [])
    assert f.extra["size"] == 4 * 10 ** 12 and "--max-message-bytes" in f.message
    monkeypatch.undo()
    reply, bufs, _ = ex.handle({"kind": "batch", "id": 3, "sid": sid, "reads": [H(1)]}, [])
    assert reply["reads"][0]["shape"] == [1] and len(bufs) == 1  # the session is intact


def test_the_server_loop_survives_every_item_11_case(tmp_path):
    (tmp_path / "s").mkdir(mode=0o700)
    served = Served(f"ipc://{tmp_path}/s/rt.sock")
    try:
        sock = served.client()
        assert error_code(served.call(sock, {"kind": "close", "sid": ["a", "list"]})) == "E_PROTOCOL"
        assert error_code(served.call(sock, {"kind": "close", "sid": "nope"})) == "E_SESSION"
        assert served.call(sock, {"kind": "ping", "v": 1.0})["ok"]
        sid = served.call(sock, {"kind": "hello"})["sid"]
        reply = served.call(sock, {"kind": "batch", "sid": sid, "reads": [H(2)], "ops": [
            {"op": "ones", "out": [H(1)], "args": [[1]]},
            {"op": "expand", "out": [H(2)], "args": [H(1), [10 ** 12]]}]})
        assert error_code(reply) == "E_LIMIT"
        assert poll_until(lambda: served.call(sock, {"kind": "ping", "sid": sid})["ok"], 30)
    finally:
        served.close()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this system")
def test_a_read_that_cannot_be_written_to_shared_memory_is_a_typed_error():
    ex = Executor(torch.device("cpu"), shm=True)
    sid = ex.handle({"kind": "hello", "id": 1}, [])[0]["sid"]
    d = tempfile.mkdtemp(prefix="liaison-", dir="/dev/shm")
    try:
        open(os.path.join(d, "r7-0"), "wb").close()  # a reply file of that name is already there
        f = fault("E_ARG", ex.handle, {"kind": "batch", "id": 7, "sid": sid, "shm": {"dir": d, "min": 1},
                                       "ops": [{"op": "ones", "out": [H(1)], "args": [[4]]}], "reads": [H(1)]}, [])
        assert "r7-0" in f.message and f.extra["handle"] == 1
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


def test_the_loop_survives_a_reply_it_cannot_encode(tmp_path, monkeypatch):
    (tmp_path / "s").mkdir(mode=0o700)
    served = Served(f"ipc://{tmp_path}/s/rt.sock")
    try:
        real = served.server.exec.handle

        def handle(header, buffers):
            if header["kind"] == "hello":  # an error whose details msgpack cannot write
                raise RuntimeFault("E_ARG", "unencodable", detail=object())
            return real(header, buffers)

        monkeypatch.setattr(served.server.exec, "handle", handle)
        sock = served.client(timeout_ms=3000)
        sock.send_multipart(served.frames({"v": 1, "id": 1, "kind": "hello"}))
        with pytest.raises(zmq.Again):
            sock.recv_multipart()  # no reply can be made for it…
        assert served.call(served.client(), {"kind": "ping"})["ok"]  # …but the runtime goes on
    finally:
        served.close()
