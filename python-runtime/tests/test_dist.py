"""Collective ops (ops/dist.py) and group mode (group.py): on a plain runtime as a group of
one, and on real gloo groups started by torchrun and driven over their sockets as the SDK
drives them (hello, batches, reads)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import zmq
from runner import Runner, fault
from wire import poll_until

from liaison_runtime import group
from liaison_runtime.__main__ import main
from liaison_runtime.ops import dist
from liaison_runtime.protocol import Handle, encode, unpack
from liaison_runtime.server import cpu_budget

H = Handle
ROOT = Path(__file__).parents[1]


# ---- a plain runtime: a group of one ----

def test_a_plain_runtime_is_a_group_of_one():
    r = Runner()
    x = torch.arange(6.0).reshape(2, 3)
    for name, args in [("dist_all_reduce", (x,)), ("dist_all_reduce", (x, "max")), ("dist_all_gather", (x, 1)),
                       ("dist_broadcast", (x,)), ("dist_reduce_scatter", (x, "mean", 1))]:
        y = r(name, *args)
        assert torch.equal(y, x) and y.data_ptr() != x.data_ptr(), name  # a new tensor
    a, b = r("dist_all_reduce_many", [x, torch.ones(2, dtype=torch.int64)])
    assert torch.equal(a, x) and b.tolist() == [1, 1]
    assert r("dist_rank").item() == 0 and r("dist_world_size").item() == 1
    assert r("dist_rank").dtype == torch.int64 and r("dist_rank").shape == ()
    assert torch.equal(r("dist_shard", x, 1), x)
    assert group.counters() == {"calls": 0, "bytes": 0}  # nothing is sent


def test_the_checks_hold_on_a_plain_runtime_too():
    r = Runner()
    x = torch.ones(3, 4)
    assert "divisible" not in fault("E_SHAPE", r, "dist_reduce_scatter", torch.tensor(1.0)).message
    assert "'mean'" in fault("E_DTYPE", r, "dist_all_reduce", x.long(), "mean").message
    assert "bool" in fault("E_DTYPE", r, "dist_all_reduce_many", [x, x > 0]).message
    assert fault("E_ARG", r, "dist_broadcast", x, 1).extra["param"] == "src"
    assert fault("E_SHAPE", r, "dist_all_gather", x, 2).extra["param"] == "dim"
    assert fault("E_SHAPE", r, "dist_shard", torch.tensor(2.0)).extra["param"] == "x"
    fault("E_ARG", r, "dist_all_reduce", x, "avg")


def test_a_program_never_fuses_a_collective():
    r = Runner()
    r._next = 500

    def rec(op, out, *args):
        return {"op": op, "out": [H(h) for h in out], "args": list(args), "kw": {}}

    # two segments of (all-reduce, mul): fused, they would run both all-reduces first
    ops = [rec("dist_all_reduce", [3], H(1)), rec("mul", [4], H(3), 2.0),
           rec("dist_all_reduce", [5], H(2)), rec("mul", [6], H(5), 2.0)]
    prog = r("program_define", "p", ops, [H(1), H(2)], [H(4), H(6)], groups=[[0, 2, 4]])
    for _ in range(2):
        a, b = prog([torch.ones(2), torch.full((2,), 3.0)])
    assert a.tolist() == [2.0, 2.0] and b.tolist() == [6.0, 6.0]
    assert [s.name for s in prog.steps] == ["dist_all_reduce", "mul", "dist_all_reduce", "mul"]


def test_a_failed_collective_breaks_the_group(monkeypatch):
    """What a rank does when a collective raises or times out (group.py's docstring)."""
    st = group.GroupState(rank=1, world_size=2, local_rank=1, local_world_size=2, backend="gloo", timeout_s=3)
    monkeypatch.setattr(group, "STATE", st)

    def times_out():
        raise RuntimeError("[gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting 3000ms for recv operation")

    f = fault("E_GROUP", dist._guard, st, "dist_all_gather", times_out)
    assert "rank 1 of 2" in f.message and "timed out" in f.message and "dist_all_gather" in f.message
    assert f.extra["rank"] == 1 and f.extra["collective"] == "dist_all_gather" and "3000ms" in f.extra["cause"]
    called = []
    f = fault("E_GROUP", dist._guard, st, "dist_all_reduce", lambda: called.append(1))
    assert "broken since" in f.message and "Timed out" in f.message and called == []  # at once, no network
    assert "broken" in group.counters() and "broken" in group.hello_info()
    # every other op still runs on a broken rank (dist_shard and dist_rank need no network)
    r = Runner()
    assert r("dist_rank").item() == 1 and r("dist_shard", torch.arange(4)).tolist() == [2, 3]


def test_group_mode_without_torchrun_says_what_is_missing(monkeypatch, tmp_path):
    for name in group.TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as info:
        main(["--group", "--endpoint", f"ipc://{tmp_path}/rank{{rank}}.sock"])
    assert "RANK is not set" in str(info.value) and "torch.distributed.run" in str(info.value)


def test_endpoints_per_rank_and_advertised():
    assert group.expand_endpoint("ipc:///d/r{rank}-{local_rank}.sock", 3, 1, None) == "ipc:///d/r3-1.sock"
    assert group.expand_endpoint("tcp://0.0.0.0:{port}", 3, 1, 7000) == "tcp://0.0.0.0:7001"
    with pytest.raises(SystemExit, match="--base-port"):
        group.expand_endpoint("tcp://0.0.0.0:{port}", 0, 0, None)
    assert group.advertised("tcp://0.0.0.0:5555", "host7") == "tcp://host7:5555"
    assert group.advertised("tcp://127.0.0.1:5555", "host7") == "tcp://127.0.0.1:5555"
    assert group.advertised("ipc:///d/r0.sock", "host7") == "ipc:///d/r0.sock"


# ---- real groups under torchrun ----

class Group:
    """`python -m torch.distributed.run … -m liaison_runtime --group` with n ranks on ipc sockets
    in a private folder; `kill()` ends every process it started."""

    def __init__(self, tmp: Path, n: int, watch_pid: int, timeout_s: float = 60.0):
        self.dir = tmp / "g"
        self.dir.mkdir(mode=0o700)
        self.log = open(tmp / "torchrun.log", "w")  # noqa: SIM115 — closed in kill()
        env = {k: v for k, v in os.environ.items() if k != "LIAISON_THREADS"}
        env["PYTHONPATH"] = str(ROOT)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node",
             str(n), "--max-restarts", "0", "-m", "liaison_runtime", "--group", "--endpoint",
             f"ipc://{self.dir}/rank{{rank}}.sock", "--collective-timeout-s", str(timeout_s),
             "--watch-pid", str(watch_pid)],
            env=env, stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True)
        self.ready: dict[int, dict] = {}
        threading.Thread(target=self._read, daemon=True).start()
        self.ctx = zmq.Context()
        self.socks: list[zmq.Socket] = []
        self.sids: list[str] = []
        self.next_id = 1

    def _read(self):
        import json

        for line in self.proc.stdout:
            if line.startswith("LIAISON_READY "):
                info = json.loads(line[len("LIAISON_READY "):])
                self.ready[info["rank"]] = info

    def connect(self, n: int) -> list[dict]:
        assert poll_until(lambda: len(self.ready) == n or self.proc.poll() is not None, 120), "no ready lines"
        assert len(self.ready) == n, open(self.log.name).read()[-3000:]
        hellos = []
        for r in range(n):
            s = self.ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(self.ready[r]["endpoint"])
            self.socks.append(s)
            hellos.append(self.call(r, {"kind": "hello"}))
            self.sids.append(hellos[-1]["sid"])
        return hellos

    def send(self, r: int, header: dict, bufs=()) -> None:
        self.next_id += 1
        h = {"v": 1, "id": self.next_id, **header}
        if "sid" not in h and len(self.sids) > r and header.get("kind") == "batch":
            h["sid"] = self.sids[r]
        self.socks[r].send_multipart(encode(h, list(bufs)))

    def recv(self, r: int, timeout_s: float = 60.0):
        if not self.socks[r].poll(int(timeout_s * 1000)):
            raise AssertionError(f"rank {r} did not answer within {timeout_s} s")
        frames = self.socks[r].recv_multipart()
        header = unpack(frames[0])
        header["_bufs"] = frames[1:]
        return header

    def call(self, r: int, header: dict, bufs=()):
        self.send(r, header, bufs)
        return self.recv(r)

    def batch_all(self, ops, reads=(), bufs_per_rank=None):
        """The same batch on every rank (SPMD); the replies in rank order."""
        n = len(self.socks)
        for r in range(n):
            self.send(r, {"kind": "batch", "ops": ops, "reads": [H(h) for h in reads]},
                      bufs_per_rank[r] if bufs_per_rank else ())
        return [self.recv(r) for r in range(n)]

    def kill(self):
        for info in self.ready.values():
            try:
                os.kill(info["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self.ctx.destroy(linger=0)
        self.log.close()


def read(reply, k=0) -> np.ndarray:
    assert reply["ok"], reply.get("error")
    meta = reply["reads"][k]
    dt = {"f32": np.float32, "i64": np.int64}[meta["dtype"]]
    return np.frombuffer(reply["_bufs"][meta["frame"]], dtype=dt).reshape(meta["shape"])


def rec(op, out, *args, **kw):
    return {"op": op, "out": [H(h) for h in out], "args": list(args), "kw": kw}


def upload(hid, arr: np.ndarray, frame=0):
    return {"op": "upload", "out": [H(hid)], "args": [],
            "kw": {"dtype": "f32", "shape": list(arr.shape), "frame": frame}}


@pytest.fixture
def sleeper():
    """A process for --watch-pid to watch, standing for the SDK's Node process."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield p
    p.kill()
    p.wait()


def test_two_ranks_collectives_handshake_and_faults(tmp_path, sleeper):
    g = Group(tmp_path, 2, sleeper.pid)
    try:
        hellos = g.connect(2)
        eps = [g.ready[r]["endpoint"] for r in range(2)]
        for r, h in enumerate(hellos):
            assert h["group"] == {"rank": r, "world_size": 2, "local_rank": r, "backend": "gloo", "endpoints": eps}
            assert g.ready[r]["world_size"] == 2 and g.ready[r]["local_rank"] == r
            assert h["threads"] == max(1, cpu_budget() // 2)  # two ranks share this machine's cores
        # rank r holds x_r = (r + 1) * arange(8) as (2, 4), and y_r: r + 1 rows of r (uneven parts)
        xs = [(r + 1) * np.arange(8, dtype=np.float32).reshape(2, 4) for r in range(2)]
        ys = [np.full((r + 1, 2), r, dtype=np.float32) for r in range(2)]
        ops = [rec("dist_all_reduce", [10], H(1)), rec("dist_all_reduce", [11], H(1), "max"),
               rec("dist_all_reduce", [12], H(1), "mean"), rec("dist_all_gather", [13], H(1), 1),
               rec("dist_broadcast", [14], H(1), src=1), rec("dist_reduce_scatter", [15], H(1), "sum", 1),
               rec("dist_all_reduce_many", [16, 17], [H(1), H(12)]), rec("dist_rank", [18]),
               rec("dist_world_size", [19]), rec("dist_all_gather", [20], H(2)), rec("dist_shard", [21], H(20))]
        for r in range(2):  # the data differ per rank (a group tensor's shards); the ops do not
            g.send(r, {"kind": "batch", "ops": [upload(1, xs[r]), upload(2, ys[r], 1), *ops],
                       "reads": [H(h) for h in range(10, 22)]}, [xs[r].tobytes(), ys[r].tobytes()])
        replies = [g.recv(r) for r in range(2)]
        s = xs[0] + xs[1]
        for r, rep in enumerate(replies):
            want = [s, xs[1], s / 2, np.concatenate(xs, 1), xs[1], s[:, 2 * r:2 * r + 2], xs[0] + xs[1], s,
                    r, 2, np.concatenate(ys), np.array_split(np.concatenate(ys), 2)[r]]
            for k, w in enumerate(want):
                np.testing.assert_allclose(read(rep, k), w, err_msg=f"rank {r}, read {k}")
        calls = [g.call(r, {"kind": "ping"})["stats"]["collectives"] for r in range(2)]
        # bytes: 32 per (2, 4) f32 for 3 all-reduces, the gather and the reduce-scatter, the broadcast's
        # on its source (rank 1) only, 64 for the two-tensor bucket, and each rank's own rows of y
        assert [c["calls"] for c in calls] == [8, 8]
        assert [c["bytes"] for c in calls] == [32 * 5 + 0 + 64 + 8, 32 * 5 + 32 + 64 + 16]

        # a shape that differs on one rank: E_SHAPE naming both shapes, on both ranks, and no hang
        for r in range(2):
            z = np.zeros((r + 2,), dtype=np.float32)
            g.send(r, {"kind": "batch", "ops": [upload(30, z), rec("dist_all_reduce", [31], H(30))]}, [z.tobytes()])
        for r in range(2):
            err = g.recv(r)["error"]
            assert err["code"] == "E_SHAPE" and "rank 0 [2], rank 1 [3]" in err["message"], err

        # the group still works, inside a program too
        prog = [rec("program_define", [40], "p", [rec("dist_all_reduce", [43], H(41)), rec("mul", [44], H(43), 2.0)],
                    [H(41)], [H(44)]), rec("program_run", [45], H(40), [H(10)])]
        for rep in g.batch_all(prog, reads=[45]):
            np.testing.assert_allclose(read(rep), 4 * s)
        # empty tensors: nothing to send, the group unharmed
        empty = [rec("zeros", [60], [0, 4]), rec("dist_all_reduce", [61], H(60)),
                 rec("dist_all_gather", [62], H(60), 1), rec("dist_reduce_scatter", [63], H(60), "sum", 1),
                 rec("dist_all_reduce_many", [64], [H(60)]), rec("dist_broadcast", [65], H(60))]
        for rep in g.batch_all(empty, reads=[61, 62, 63, 64, 65]):
            assert [read(rep, k).shape for k in range(5)] == [(0, 4), (0, 8), (0, 2), (0, 4), (0, 4)]
        # unchecked (no meeting): the same values
        unchecked = [rec("dist_all_reduce_many", [46, 47], [H(1), H(1)], "max", False),
                     rec("dist_all_gather", [48], H(1), 0, check=False)]
        for rep in g.batch_all(unchecked, reads=[46, 47, 48]):
            np.testing.assert_allclose(read(rep, 0), xs[1])
            np.testing.assert_allclose(read(rep, 1), xs[1])
            np.testing.assert_allclose(read(rep, 2), np.concatenate(xs))

        # rank 1 waits in a collective rank 0 was not given; rank 0 is killed: rank 1 answers E_GROUP at once,
        # well within its 60 s timeout
        # (the ping's reply means rank 1 is draining its queue, the batch next in it: torchrun's agent,
        # which stops rank 1 once rank 0 is gone, cannot come between them)
        g.send(1, {"kind": "ping"})
        g.send(1, {"kind": "batch", "ops": [rec("dist_all_reduce", [52], H(1))]})
        assert g.recv(1)["ok"]
        os.kill(g.ready[0]["pid"], signal.SIGKILL)
        err = g.recv(1, timeout_s=30)["error"]
        assert err["code"] == "E_GROUP" and "rank 1 of 2" in err["message"] and "failed" in err["message"], err
        assert err["rank"] == 1 and err["collective"] == "dist_all_reduce" and err["cause"], err
    finally:
        g.kill()


def test_a_runtime_exits_with_its_watched_process(tmp_path, sleeper):
    """--watch-pid, as a group rank uses it (the SDK's pid, with torchrun's agent in between)."""
    (tmp_path / "s").mkdir(mode=0o700)
    sock = tmp_path / "s" / "rt.sock"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "liaison_runtime", "--endpoint", f"ipc://{sock}", "--device", "cpu",
                             "--watch-pid", str(sleeper.pid)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("LIAISON_READY") and sock.exists()
        sleeper.kill()  # not reaped: a zombie counts as gone
        assert proc.wait(60) == 0
        assert not sock.exists() and not sock.parent.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
