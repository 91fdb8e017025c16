"""The embedded runtime (liaison_runtime.embedded): the server on a thread of this
interpreter, objects handed to it with stash() and taken with the `adopt` op."""

import itertools
import signal
import struct

import pytest
import torch
import zmq

from liaison_runtime import embedded
from liaison_runtime.protocol import Handle, decode, encode, unpack

_ids = itertools.count(1)


class Client:
    """A bare protocol client: a DEALER speaking unsigned v1 messages."""

    def __init__(self, endpoint: str):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, 10_000)
        self.sock.connect(endpoint)
        self.sid = None

    def request(self, kind: str, bufs=(), **fields) -> tuple[dict, list]:
        header = {"v": 1, "id": next(_ids), "kind": kind, **fields}
        if self.sid and kind in ("batch", "close"):
            header["sid"] = self.sid
        frames = encode(header, list(bufs))
        assert decode(frames)[0] == header  # what we send is a well-formed request
        self.sock.send_multipart(frames)
        reply = self.sock.recv_multipart()
        h = unpack(reply[0])  # unkeyed: [header, *buffers]
        assert h["id"] == header["id"]
        return h, reply[1:]

    def close(self):
        self.sock.close(linger=0)


@pytest.fixture
def runtime(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    info = embedded.start(f"ipc://{tmp_path}/rt.sock", "cpu")
    client = Client(info["endpoint"])
    hello, _ = client.request("hello")
    assert hello["ok"]
    client.sid = hello["sid"]
    yield info, client, hello
    client.close()
    assert embedded.stop()
    assert signal.getsignal(signal.SIGTERM) is before  # the server took over no signal


def _f32(rows) -> tuple[bytes, list[int]]:
    flat = [x for r in rows for x in r]
    return struct.pack(f"<{len(flat)}f", *flat), [len(rows), len(rows[0])]


def _read(reply_header, bufs, k=0):
    r = reply_header["reads"][k]
    data = bufs[r["frame"]]
    return torch.frombuffer(bytearray(data), dtype=torch.float32).reshape(r["shape"])


def test_start_reports_ready_info(runtime):
    info, _, hello = runtime
    assert info["endpoint"].startswith("ipc://") and info["device"] == "cpu"
    assert info["pid"] == hello["pid"]
    assert embedded.running()
    assert {"adopt", "module_forward", "module_param"} <= set(hello["ops"])
    with pytest.raises(RuntimeError, match="already running"):
        embedded.start(info["endpoint"] + "-2")


def test_adopt_a_stashed_tensor(runtime):
    _, client, _ = runtime
    t = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    key = embedded.stash(t)
    assert isinstance(key, int)
    h, bufs = client.request("batch", ops=[
        {"op": "adopt", "out": [Handle(1)], "args": [], "kw": {"key": key}},
        {"op": "mul", "out": [Handle(2)], "args": [Handle(1), 2]},
    ], reads=[Handle(1), Handle(2)])
    assert h["ok"], h
    assert torch.equal(_read(h, bufs, 0), t)
    assert torch.equal(_read(h, bufs, 1), t * 2)
    # a key is taken once
    h, _ = client.request("batch", ops=[{"op": "adopt", "out": [Handle(3)], "args": [], "kw": {"key": key}}])
    assert not h["ok"] and h["error"]["code"] == "E_ARG" and str(key) in h["error"]["message"]


def test_adopt_bad_keys(runtime):
    _, client, _ = runtime
    for kw in ({"key": 123456}, {"key": "1"}, {}):
        h, _ = client.request("batch", ops=[{"op": "adopt", "out": [Handle(1)], "args": [], "kw": kw}])
        assert not h["ok"]
        assert h["error"]["code"] == "E_ARG" and h["error"]["op"] == "adopt" and h["error"]["index"] == 0
    with pytest.raises(ValueError):
        embedded.stash(None)


def test_adopted_module(runtime):
    _, client, _ = runtime
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    x_bytes, shape = _f32([[1, 2, 3], [-1, 0.5, 4]])
    x = torch.frombuffer(bytearray(x_bytes), dtype=torch.float32).reshape(shape)
    h, bufs = client.request("batch", [x_bytes], ops=[
        {"op": "adopt", "out": [Handle(1)], "args": [], "kw": {"key": embedded.stash(lin)}},
        {"op": "upload", "out": [Handle(2)], "args": [], "kw": {"dtype": "f32", "shape": shape, "frame": 0}},
        {"op": "module_forward", "out": [Handle(3)], "args": [Handle(1), [Handle(2)]]},
        {"op": "module_param", "out": [Handle(4)], "args": [Handle(1), "bias"]},
    ], reads=[Handle(3), Handle(4)], meta=[Handle(1)])
    assert h["ok"], h
    with torch.no_grad():
        assert torch.allclose(_read(h, bufs, 0), lin(x))
        assert torch.equal(_read(h, bufs, 1), lin.bias)
    meta = h["meta"][0]  # an adopted module is described like a built one (Model.fromHandle reads this)
    assert meta["kind"] == "module" and [p["name"] for p in meta["params"]] == ["weight", "bias"]

    h, _ = client.request("batch", ops=[{"op": "module_param", "out": [Handle(5)], "args": [Handle(1), "gamma"]}])
    err = h["error"]
    assert err["code"] == "E_ARG" and err["param"] == "name"
    assert "'gamma'" in err["message"] and "weight, bias" in err["message"]

    # tensor ops refuse the module; module ops refuse a tensor
    for op in ({"op": "add", "out": [Handle(6)], "args": [Handle(1), 1]},
               {"op": "module_forward", "out": [Handle(6)], "args": [Handle(2), [Handle(2)]]}):
        h, _ = client.request("batch", ops=[op])
        assert h["error"]["code"] == "E_ARG", h


def test_stop_ends_the_thread_and_drops_stashes(tmp_path):
    (tmp_path / "first").mkdir(mode=0o700)  # private, as the launcher makes it
    embedded.start(f"ipc://{tmp_path}/first/rt.sock", "cpu")
    embedded.stash(torch.ones(2))
    assert embedded.stop()
    assert not embedded.running()
    assert not (tmp_path / "first").exists()  # the socket file and its private folder are gone
    with pytest.raises(RuntimeError, match="not running"):
        embedded.stash(torch.ones(2))
    assert embedded.stop()  # stopping twice is fine
    # and it starts again
    (tmp_path / "again").mkdir(mode=0o700)
    embedded.start(f"ipc://{tmp_path}/again/rt.sock", "cpu")
    assert embedded.running()
    assert embedded.stop()


def test_start_errors_are_ordinary_exceptions(tmp_path):
    # the server's checks exit the process under `python -m`; embedded they must not
    with pytest.raises(RuntimeError, match="endpoint must be"):
        embedded.start(f"udp://{tmp_path}/x")
    with pytest.raises(RuntimeError, match="needs a key"):
        embedded.start("tcp://127.0.0.1:0")
    assert not embedded.running()
