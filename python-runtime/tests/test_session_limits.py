"""Session limits (issue 9 item 6): a cap on open sessions and an idle expiry that frees a
vanished client's tensors; a ping naming a session keeps it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from wire import Served, error_code, poll_until

from liaison_runtime.errors import RuntimeFault
from liaison_runtime.executor import Executor
from liaison_runtime.protocol import Handle as H
from liaison_runtime.session import Sessions


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def fault(code, fn, *args, **kw) -> RuntimeFault:
    with pytest.raises(RuntimeFault) as info:
        fn(*args, **kw)
    assert info.value.code == code, info.value.message
    return info.value


def make(clock, **kw):
    ex = Executor(torch.device("cpu"), clock=clock, **kw)
    return ex, lambda: ex.handle({"kind": "hello", "id": 1}, [])[0]["sid"]


def batch(ex, sid, *ops):
    return ex.handle({"kind": "batch", "id": 2, "sid": sid, "ops": list(ops)}, [])[0]


def test_an_idle_session_expires_and_its_tensors_are_freed():
    clock = Clock()
    ex, hello = make(clock, session_idle_s=900)
    sid = hello()
    batch(ex, sid, *({"op": "ones", "out": [H(i)], "args": [[1024]]} for i in range(1, 101)))
    session = ex.sessions.get(sid)
    assert len(session) == 100
    clock.t += 899
    batch(ex, sid)  # used: its idle clock starts again
    clock.t += 899
    assert ex.stats()["sessions"] == 1
    clock.t += 2
    assert ex.sessions.expire() == 1
    assert len(session) == 0 and ex.stats() == {"sessions": 0, "objects": 0, "ops_run": 100,
                                                 "collectives": {"calls": 0, "bytes": 0}}
    f = fault("E_SESSION", batch, ex, sid)
    assert "expired after 900 s idle" in f.message and "--session-idle-s" in f.message
    assert "expired" not in fault("E_SESSION", batch, ex, "0123456789abcdef").message


def test_expiry_needs_no_timer_while_requests_arrive():
    clock = Clock()
    ex, hello = make(clock, session_idle_s=60)
    gone, kept = hello(), hello()
    clock.t += 61  # no idle tick of a server loop runs here: the request itself expires them
    fault("E_SESSION", batch, ex, kept)
    assert "expired" in fault("E_SESSION", batch, ex, gone).message


def test_a_ping_naming_the_session_keeps_it_and_one_without_needs_none():
    clock = Clock()
    ex, hello = make(clock, session_idle_s=900)
    sid = hello()
    for _ in range(5):
        clock.t += 600
        assert ex.handle({"kind": "ping", "id": 3, "sid": sid}, [])[0]["stats"]["sessions"] == 1
    assert ex.handle({"kind": "ping", "id": 4}, [])[0]["stats"]["sessions"] == 1
    clock.t += 901
    assert ex.handle({"kind": "ping", "id": 5}, [])[0]["stats"]["sessions"] == 0  # a bare ping expires too
    assert "expired" in fault("E_SESSION", ex.handle, {"kind": "ping", "id": 6, "sid": sid}, []).message
    fault("E_PROTOCOL", ex.handle, {"kind": "ping", "id": 7, "sid": 12}, [])


def test_sessions_are_capped_and_expired_or_closed_ones_free_their_place():
    clock = Clock()
    ex, hello = make(clock, max_sessions=3, session_idle_s=900)
    sids = [hello() for _ in range(3)]
    f = fault("E_LIMIT", hello)
    assert f.extra == {"limit": "max_sessions", "value": 3}
    assert "--max-sessions" in f.message and "LIAISON_MAX_SESSIONS" in f.message
    ex.handle({"kind": "close", "id": 3, "sid": sids[0]}, [])
    hello()
    clock.t += 600
    batch(ex, sids[1])  # the others go idle first
    clock.t += 600
    hello(), hello()  # sids[2] expired (idle 1200 s), sids[1] did not (600 s)
    assert ex.sessions.get(sids[1]).sid == sids[1] and "expired" in fault("E_SESSION", batch, ex, sids[2]).message
    fault("E_LIMIT", hello)


def test_zero_means_never_expire():
    clock = Clock()
    s = Sessions(max_sessions=2, idle_s=0, clock=clock)
    sid = s.open().sid
    clock.t += 10 ** 9
    assert s.expire() == 0 and s.get(sid).sid == sid


def test_the_idle_server_loop_expires_sessions(tmp_path):
    (tmp_path / "s").mkdir(mode=0o700)
    served = Served(f"ipc://{tmp_path}/s/rt.sock", session_idle_s=0.2)
    try:
        sock = served.client()
        assert served.call(sock, {"kind": "hello"})["limits"]["session_idle_s"] == 0.2
        # nothing arrives: the loop's idle tick alone must free it
        assert poll_until(lambda: len(served.server.exec.sessions) == 0, 60)
        assert served.call(sock, {"kind": "ping"})["stats"]["sessions"] == 0
    finally:
        served.close()


def test_the_runtime_process_takes_the_limits_from_flags_and_env(tmp_path):
    (tmp_path / "s").mkdir(mode=0o700)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "LIAISON_MAX_SESSIONS": "2",
           "LIAISON_SESSION_IDLE_S": "30.5"}
    endpoint = f"ipc://{tmp_path}/s/rt.sock"
    proc = subprocess.Popen([sys.executable, "-m", "liaison_runtime", "--endpoint", endpoint, "--device", "cpu",
                             "--max-message-bytes", "100000"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("LIAISON_READY")
        import zmq

        from liaison_runtime.protocol import encode, unpack
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.RCVTIMEO, 60_000)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        sock.send_multipart(encode({"v": 1, "id": 1, "kind": "hello"}))
        reply = unpack(sock.recv_multipart()[0])
        assert reply["limits"] == {"max_message_bytes": 100000, "max_sessions": 2, "session_idle_s": 30.5}
        sock.send_multipart(encode({"v": 1, "id": 2, "kind": "shutdown"}))
        sock.recv_multipart()
        ctx.destroy(linger=0)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = subprocess.run([sys.executable, "-m", "liaison_runtime", "--endpoint", endpoint, "--session-idle-s", "nan"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--session-idle-s" in bad.stderr and "non-negative" in bad.stderr


def test_a_session_limit_reaches_the_wire(tmp_path):
    (tmp_path / "s").mkdir(mode=0o700)
    served = Served(f"ipc://{tmp_path}/s/rt.sock", max_sessions=1)
    try:
        sock = served.client()
        assert served.call(sock, {"kind": "hello"})["ok"]
        assert error_code(served.call(sock, {"kind": "hello"})) == "E_LIMIT"
        assert served.call(sock, {"kind": "ping"})["ok"]
    finally:
        served.close()


def test_a_batch_that_runs_longer_than_the_idle_limit_keeps_its_session(monkeypatch):
    clock = Clock()
    ex, hello = make(clock, session_idle_s=900)
    sid = hello()
    run = ex._run

    def slow(*args):  # an op that computes for 20 minutes
        clock.t += 1200
        return run(*args)

    monkeypatch.setattr(ex, "_run", slow)
    batch(ex, sid, {"op": "ones", "out": [H(1)], "args": [[2]]})
    monkeypatch.undo()
    clock.t += 10
    reply, bufs, _ = ex.handle({"kind": "batch", "id": 3, "sid": sid, "reads": [H(1)]}, [])
    assert reply["reads"][0]["shape"] == [2]
