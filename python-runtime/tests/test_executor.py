"""The runtime without sockets: batch semantics, transfers, sessions, device choice."""

import os
import struct

import pytest
import torch

from liaison_runtime.errors import RuntimeFault
from liaison_runtime.executor import Executor
from liaison_runtime.protocol import Handle as H
from liaison_runtime.server import check_endpoint, cpu_budget, pick_device


@pytest.fixture()
def ex():
    return Executor(torch.device("cpu"), shm=True)


def hello(ex) -> str:
    return ex.handle({"kind": "hello", "id": 1}, [])[0]["sid"]


def batch(ex, sid, ops=(), buffers=(), **fields):
    return ex.handle({"kind": "batch", "id": 2, "sid": sid, "ops": list(ops), **fields}, list(buffers))


def up(h, shape, frame=0, dtype="f32"):
    return {"op": "upload", "out": [H(h)], "kw": {"dtype": dtype, "shape": shape, "frame": frame}}


def test_batch_runs_in_order_and_reads(ex):
    sid = hello(ex)
    data = struct.pack("<4f", 1, 2, 3, 4)
    reply, bufs, _ = batch(ex, sid, [up(1, [2, 2]), {"op": "matmul", "out": [H(2)], "args": [H(1), H(1)]}],
                           [data], reads=[H(2)], meta=[H(1)])
    assert reply["n"] == 2
    assert reply["reads"] == [{"dtype": "f32", "shape": [2, 2], "frame": 0}]
    assert list(struct.unpack("<4f", bytes(bufs[0]))) == [7, 10, 15, 22]
    assert reply["meta"] == [{"dtype": "f32", "shape": [2, 2], "device": "cpu"}]


def test_a_failing_op_stops_the_batch_but_frees_apply(ex):
    sid = hello(ex)
    batch(ex, sid, [{"op": "ones", "out": [H(1)], "args": [[2, 3]]}, {"op": "ones", "out": [H(2)], "args": [[4]]}])
    with pytest.raises(RuntimeFault) as e:
        batch(ex, sid, [{"op": "neg", "out": [H(3)], "args": [H(1)]},
                        {"op": "matmul", "out": [H(4)], "args": [H(1), H(1)]},
                        {"op": "neg", "out": [H(5)], "args": [H(1)]}], free=[H(2)])
    assert e.value.code == "E_SHAPE" and e.value.extra["index"] == 1 and e.value.extra["op"] == "matmul"
    objects = ex.sessions.get(sid).objects
    assert 3 in objects and 4 not in objects and 5 not in objects
    assert 2 not in objects  # the free was applied although the batch failed
    assert ex.stats()["ops_run"] == 2 + 1


def test_malformed_records_are_protocol_errors(ex):
    sid = hello(ex)
    batch(ex, sid, [{"op": "ones", "out": [H(1)], "args": [[1]]}])
    for rec in ["add", {"op": "neg"}, {"op": "neg", "out": 5, "args": [H(1)]},
                {"op": "neg", "out": [1], "args": [H(1)]}, {"op": 7, "out": [H(2)]},
                {"op": "neg", "out": [H(2)], "args": {"x": 1}}]:
        with pytest.raises(RuntimeFault) as e:
            batch(ex, sid, [rec])
        assert e.value.code in ("E_PROTOCOL", "E_UNKNOWN_OP"), rec
    with pytest.raises(RuntimeFault) as e:
        batch(ex, sid, [], reads=[1])
    assert e.value.code == "E_PROTOCOL"


def test_sessions(ex):
    a, b = hello(ex), hello(ex)
    batch(ex, a, [{"op": "ones", "out": [H(1)], "args": [[1]]}])
    with pytest.raises(RuntimeFault) as e:
        batch(ex, b, [{"op": "neg", "out": [H(2)], "args": [H(1)]}])
    assert e.value.code == "E_HANDLE"  # handles are per session
    assert ex.handle({"kind": "close", "sid": a}, [])[0]["freed"] == 1
    with pytest.raises(RuntimeFault) as e:
        batch(ex, a, [])
    assert e.value.code == "E_SESSION"


def test_upload_checks_sizes_and_frames(ex):
    sid = hello(ex)
    with pytest.raises(RuntimeFault) as e:
        batch(ex, sid, [up(1, [3])], [b"\0" * 8])
    assert e.value.code == "E_SHAPE"
    with pytest.raises(RuntimeFault) as e:
        batch(ex, sid, [up(1, [1], frame=3)], [b"\0" * 4])
    assert e.value.code == "E_PROTOCOL"
    with pytest.raises(RuntimeFault) as e:
        batch(ex, sid, [up(1, [1], dtype="c64")], [b"\0" * 8])
    assert e.value.code == "E_DTYPE"
    # every dtype, including bool and bf16, and a large zero-copy frame
    for dtype, raw, want in [("bool", b"\x00\x02", [False, True]), ("u8", b"\x07", [7]),
                             ("bf16", struct.pack("<H", 0x3F80), [1.0]), ("i64", struct.pack("<q", -5), [-5])]:
        batch(ex, sid, [up(9, [len(want)], dtype=dtype)], [raw])
        assert ex.sessions.get(sid).objects[9].tolist() == want
    big = torch.arange(1 << 16, dtype=torch.float32)
    batch(ex, sid, [up(10, [1 << 16])], [memoryview(big.numpy())])
    assert torch.equal(ex.sessions.get(sid).objects[10], big)


def test_shm_paths_are_confined(ex, tmp_path):
    sid = hello(ex)
    for path in ["/etc/passwd", "/dev/shm/../etc/passwd", "/dev/shm/other/x", str(tmp_path / "x")]:
        with pytest.raises(RuntimeFault) as e:
            batch(ex, sid, [{"op": "upload", "out": [H(1)], "kw": {"dtype": "f32", "shape": [1], "shm": path}}])
        assert e.value.code == "E_ARG", path


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this system")
def test_shm_upload_and_read(ex):
    import tempfile
    sid = hello(ex)
    d = tempfile.mkdtemp(prefix="liaison-", dir="/dev/shm")
    try:
        p = os.path.join(d, "u0")
        with open(p, "wb") as f:
            f.write(struct.pack("<3f", 1, 2, 3))
        batch(ex, sid, [{"op": "upload", "out": [H(1)], "kw": {"dtype": "f32", "shape": [3], "shm": p}}])
        assert not os.path.exists(p)  # the runtime unlinks what it mapped
        reply, bufs, _ = batch(ex, sid, [{"op": "mul", "out": [H(2)], "args": [H(1), 2]}], reads=[H(2)],
                               shm={"dir": d, "min": 1})
        path = reply["reads"][0]["shm"]
        with open(path, "rb") as f:
            assert struct.unpack("<3f", f.read()) == (2, 4, 6)
    finally:
        for name in os.listdir(d):
            os.unlink(os.path.join(d, name))
        os.rmdir(d)


def test_device_choice(monkeypatch):
    monkeypatch.delenv("LIAISON_DEVICE", raising=False)
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("LIAISON_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    assert pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="CUDA is not available"):
            pick_device("cuda")


def test_endpoint_rules():
    with pytest.raises(SystemExit, match="unsigned"):
        check_endpoint("ipc:///tmp/x.sock", None, False)  # /tmp: any local user may connect
    check_endpoint("ipc:///tmp/x.sock", b"k", False)
    check_endpoint("tcp://127.0.0.1:0", b"k", False)
    check_endpoint("tcp://[::1]:0", b"k", False)
    with pytest.raises(SystemExit, match="needs a key"):
        check_endpoint("tcp://127.0.0.1:0", None, False)
    with pytest.raises(SystemExit, match="loopback"):
        check_endpoint("tcp://10.1.2.3:5555", b"k", False)
    check_endpoint("tcp://10.1.2.3:5555", b"k", True)
    with pytest.raises(SystemExit, match="endpoint must be"):
        check_endpoint("http://x", b"k", True)


def test_a_stop_before_the_loop_starts_is_kept(tmp_path):
    # SIGTERM can land right after the ready line, before serve_forever runs
    from liaison_runtime.server import Server

    s = Server(f"ipc://{tmp_path}/rt.sock", device=torch.device("cpu"))
    s.stop()
    s.serve_forever()  # returns at once instead of serving forever
    assert s.sock.closed


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="no /dev/shm on this system")
def test_shm_folder_must_be_private_and_real(ex, tmp_path):
    import tempfile
    sid = hello(ex)
    target = tempfile.mkdtemp(dir=tmp_path)
    with open(os.path.join(target, "u0"), "wb") as f:
        f.write(b"\0" * 4)
    link = "/dev/shm/liaison-linktest"
    shared = tempfile.mkdtemp(prefix="liaison-", dir="/dev/shm")
    try:
        os.symlink(target, link)
        os.chmod(shared, 0o777)
        with open(os.path.join(shared, "u0"), "wb") as f:
            f.write(b"\0" * 4)
        for path in (f"{link}/u0", f"{shared}/u0"):
            with pytest.raises(RuntimeFault) as e:
                batch(ex, sid, [{"op": "upload", "out": [H(1)], "kw": {"dtype": "f32", "shape": [1], "shm": path}}])
            assert e.value.code == "E_ARG" and "private folder" in e.value.message, path
        assert os.path.exists(os.path.join(target, "u0"))  # nothing was unlinked through the link
    finally:
        os.unlink(link)
        os.unlink(os.path.join(shared, "u0"))
        os.rmdir(shared)


def test_closing_a_session_drops_its_objects_at_once(ex):
    # a stored program points back at its session; the objects must not wait for the collector
    s = ex.sessions.open()
    s.put(1, torch.zeros(3))
    ex.sessions.close(s.sid)
    assert len(s.objects) == 0


def _cgroup(tmp_path, v2: str | None = None, v1: tuple[int, int] | None = None):
    if v2 is not None:
        (tmp_path / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (tmp_path / "cpu").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return str(tmp_path)


def test_cpu_budget_follows_a_cgroup_quota_below_the_cores(tmp_path):
    cores = len(os.sched_getaffinity(0))
    # no quota files at all, or an unlimited quota: the affinity decides
    assert cpu_budget(str(tmp_path)) == cores
    (tmp_path / "a").mkdir()
    assert cpu_budget(_cgroup(tmp_path / "a", v2="max 100000")) == cores
    (tmp_path / "b").mkdir()
    assert cpu_budget(_cgroup(tmp_path / "b", v2="100000 100000")) == 1
    (tmp_path / "c").mkdir()
    assert cpu_budget(_cgroup(tmp_path / "c", v2="150000 100000")) == min(cores, 2)  # 1.5 CPUs rounds up
    (tmp_path / "d").mkdir()
    assert cpu_budget(_cgroup(tmp_path / "d", v1=(50000, 100000))) == 1
    (tmp_path / "e").mkdir()
    assert cpu_budget(_cgroup(tmp_path / "e", v1=(-1, 100000))) == cores  # v1 writes -1 for no quota
    (tmp_path / "f").mkdir()
    assert cpu_budget(_cgroup(tmp_path / "f", v2="garbage")) == cores
