"""The runtime's ZeroMQ server: one ROUTER socket, one loop, every reply accounted for.

ROUTER_MANDATORY is set: without it libzmq silently drops a reply to a peer whose pipe is
full, and the client waits forever for it. A reply to a peer that has gone is dropped with
a log line instead.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import os
import sys
import time
import traceback
from urllib.parse import urlparse

import torch
import zmq

from . import __version__
from .errors import RuntimeFault
from .executor import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_S, Executor
from .policy import ipc_exposure
from .protocol import ReplayGuard, decode, encode, unpack

log = logging.getLogger("liaison_runtime")

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def pick_device(requested: str | None = None) -> torch.device:
    """LIAISON_DEVICE or the argument wins; otherwise CUDA when present, else CPU."""
    req = requested or os.environ.get("LIAISON_DEVICE") or ""
    if req:
        dev = torch.device(req)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"liaison-runtime: device {req!r} requested but CUDA is not available here")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cgroup_quota(root: str) -> float | None:
    """CPUs allowed by a cgroup quota, or None when there is none (or no cgroup files).

    cgroup v2 writes cpu.max as "max 100000" or "200000 100000"; v1 writes
    cpu/cpu.cfs_quota_us (-1 for none) and cpu/cpu.cfs_period_us.
    """
    def read(*parts: str) -> str | None:
        try:
            with open(os.path.join(root, *parts)) as f:
                return f.read()
        except OSError:
            return None

    try:
        if (v2 := read("cpu.max")) is not None:
            quota, period = v2.split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota, period = read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us")
        if quota is not None and period is not None and int(quota) > 0:
            return int(quota) / int(period)
    except ValueError:
        pass
    return None


def cpu_budget(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The cores this process may really use: its affinity, capped by a cgroup CPU quota.

    torch sizes its intra-op pool from the host's cores; in a container limited to two
    CPUs on a 64-core host that is 64 threads fighting over two, several times slower
    than two threads.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def check_endpoint(endpoint: str, key: bytes | None, allow_remote: bool) -> None:
    u = urlparse(endpoint)
    if u.scheme == "tcp":
        if not key:
            raise SystemExit("liaison-runtime: a tcp:// endpoint needs a key (LIAISON_KEY or --key-file); "
                             "every message on tcp is signed")
        host = (u.hostname or "").strip("[]")
        loop = host in LOOPBACK_NAMES
        if not loop:
            try:
                loop = ipaddress.ip_address(host).is_loopback
            except ValueError:
                loop = False
        if not loop and not allow_remote:
            raise SystemExit(f"liaison-runtime: refusing to bind {endpoint}: not a loopback address. "
                             "Pass --allow-remote to accept connections from other machines.")
    elif u.scheme == "ipc":
        # Unsigned messages are safe only where nobody else can connect: other local users
        # could otherwise run ops on this user's runtime, or shut it down.
        why = ipc_exposure(endpoint)
        if why and not key:
            raise SystemExit(f"liaison-runtime: refusing to serve {endpoint} unsigned: {why}, so other local "
                             "users could connect. Give the runtime a key (LIAISON_KEY or --key-file) so that "
                             "every message is signed, or put the socket in a folder only you can enter "
                             "(mode 0700), as the SDK's launcher does.")
    elif u.scheme != "inproc":
        raise SystemExit(f"liaison-runtime: endpoint must be ipc://, tcp:// or inproc://, got {endpoint!r}")


def _positive(name: str, value, flag: str, zero_ok: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and (
        value >= 0 if zero_ok else value > 0)
    if not ok:
        raise SystemExit(f"liaison-runtime: {name} must be a {'non-negative' if zero_ok else 'positive'} "
                         f"number, got {value!r} ({flag})")


class Server:
    def __init__(self, endpoint: str, key: bytes | None = None, device: torch.device | None = None,
                 parent_pid: int | None = None, allow_remote: bool = False, context: zmq.Context | None = None,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, max_sessions: int = DEFAULT_MAX_SESSIONS,
                 session_idle_s: float = DEFAULT_SESSION_IDLE_S):
        check_endpoint(endpoint, key, allow_remote)
        _positive("max_message_bytes", max_message_bytes, "--max-message-bytes")
        _positive("max_sessions", max_sessions, "--max-sessions")
        _positive("session_idle_s", session_idle_s, "--session-idle-s", zero_ok=True)
        self.endpoint = endpoint
        self.key = key or None
        self.guard = ReplayGuard() if self.key else None
        self.device = device or pick_device()
        self.parent_pid = parent_pid
        self.max_message_bytes = int(max_message_bytes)
        self.exec = Executor(self.device, shm=endpoint.startswith("ipc://") and os.path.isdir("/dev/shm"),
                             max_message_bytes=self.max_message_bytes, max_sessions=int(max_sessions),
                             session_idle_s=float(session_idle_s))
        self.exec.before_inplace = self._wait_sends
        self._pending_sends: dict[int, zmq.MessageTracker] = {}
        self.ctx = context or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.sock.setsockopt(zmq.SNDHWM, 100_000)
        self.sock.setsockopt(zmq.RCVHWM, 100_000)
        self.sock.setsockopt(zmq.SNDTIMEO, 30_000)  # a peer that stops reading for 30 s loses replies
        self.sock.setsockopt(zmq.LINGER, 0)
        # libzmq drops the connection of a peer sending one frame over this, before the frame
        # is buffered; a message of several smaller frames is refused whole in decode(), still
        # before its signature is computed
        self.sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        if endpoint.startswith("tcp://"):
            self.sock.setsockopt(zmq.HEARTBEAT_IVL, 2000)
            self.sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 10_000)
        self.sock.bind(endpoint)
        self.bound = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        # True from the start: a stop() that lands between construction and the loop (a
        # SIGTERM right after the ready line) must not be undone by serve_forever.
        self._running = True

    # ---- the loop ----

    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        if self.wake_fd is not None:
            poller.register(self.wake_fd, zmq.POLLIN)
        sock = self.sock
        try:
            while self._running:
                events = poller.poll(1000)
                if self.wake_fd is not None:
                    # a served script's thread has news for the loop (liaison_runtime/serve.py); it
                    # also gets a turn once a second, to answer long polls whose time is up
                    self.on_wake()
                    if not any(s is sock for s, _ in events):
                        events = []
                if not events:
                    self.exec.sessions.expire()  # frees a vanished client's tensors while idle too
                    if self._parent_gone():
                        log.info("parent process %s is gone; shutting down", self.parent_pid)
                        break
                    continue
                # drain what is there before polling again: one poll per burst, not per message
                for _ in range(1024):
                    try:
                        msg = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    try:
                        self._on_message(msg[0].bytes, msg[1:])
                    except Exception:  # noqa: BLE001 — even a reply that cannot be encoded must not end the loop
                        log.exception("no reply could be sent for a message")
                    if not self._running:
                        break
        finally:
            self.close()

    # A file descriptor that, once readable, has the loop call on_wake() on its own thread
    # (the only thread that may use the socket): how a served script hands the loop replies
    # to send later (serve.py). None: the plain runtime.
    wake_fd: int | None = None

    def on_wake(self) -> None:
        """Called on the loop's thread when wake_fd is readable, and after every poll."""

    def handle(self, ident: bytes, header: dict, buffers: list):
        """Run one decoded request: (reply, buffers, aliases), or None when the reply is sent
        later (a served script's long poll; serve.py overrides this)."""
        return self.exec.handle(header, buffers)

    def send_reply(self, ident: bytes, rid, reply: dict) -> None:
        """Send a reply made after its request was handled (on the loop's thread only)."""
        reply["v"], reply["id"], reply["ok"] = 1, rid, True
        self._send(ident, reply, [], [])

    def stop(self) -> None:
        self._running = False

    def close(self) -> None:
        if not self.sock.closed:
            self.sock.close(linger=0)
        remove_ipc_files(self.endpoint)  # leave nothing behind even if our parent died

    def _parent_gone(self) -> bool:
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    # ---- one message ----

    def _on_message(self, ident: bytes, frames: list) -> None:
        rid = None
        try:
            header, buffers = decode(frames, self.key, self.guard, self.max_message_bytes)
            rid = header["id"]
            done = self.handle(ident, header, buffers)
            if done is None:
                return
            reply, bufs, aliases = done
            reply["v"], reply["id"], reply["ok"] = 1, rid, True
            self._send(ident, reply, bufs, aliases)
            if header["kind"] == "shutdown":
                self._running = False
        except RuntimeFault as f:
            self._send_error(ident, rid if rid is not None else _peek_id(frames[1:] if self.key else frames), f)
        except Exception as e:  # noqa: BLE001 — the loop must survive anything a message does
            log.exception("internal error")
            self._send_error(ident, rid, RuntimeFault("E_INTERNAL", f"{type(e).__name__}: {e}",
                                                      traceback=traceback.format_exc()))

    def _send_error(self, ident: bytes, rid, fault: RuntimeFault) -> None:
        self._send(ident, {"v": 1, "id": rid, "ok": False, "error": fault.to_wire()}, [], [])

    def _send(self, ident: bytes, header: dict, bufs: list, aliases: list) -> None:
        if self.key:
            header["ts"] = time.time() * 1000.0
        frames = encode(header, bufs, self.key)
        big_alias = aliases and any(b.nbytes >= zmq.COPY_THRESHOLD for b in bufs)
        try:
            if bufs:
                tracker = self.sock.send_multipart([ident, *frames], copy=False, track=bool(big_alias))
            else:  # small frames only: copying them is cheaper than wrapping each in a zmq.Frame
                tracker = self.sock.send_multipart([ident, *frames])
        except zmq.ZMQError as e:
            # EHOSTUNREACH: the peer is gone (ROUTER_MANDATORY); EAGAIN: it stopped reading.
            log.warning("reply %s dropped: %s", header.get("id"), e)
            return
        if big_alias and tracker is not None and not tracker.done:
            for t in aliases:
                self._pending_sends[t.untyped_storage().data_ptr()] = tracker

    def _wait_sends(self, t: torch.Tensor) -> None:
        """Before an in-place write: wait until libzmq has finished sending that memory."""
        if not self._pending_sends:
            return
        ptr = t.untyped_storage().data_ptr() if t.device.type == "cpu" else None
        tr = self._pending_sends.pop(ptr, None)
        if tr is not None and not tr.done:
            tr.wait(timeout=30)
        if len(self._pending_sends) > 64:
            self._pending_sends = {p: x for p, x in self._pending_sends.items() if not x.done}


def remove_ipc_files(endpoint: str) -> None:
    """Remove an ipc:// socket file and, when empty, the launcher's private folder it is in.
    An abstract socket (ipc://@name) has no file: "@name" would name one in the cwd."""
    if endpoint.startswith("ipc://") and not endpoint.startswith("ipc://@"):
        path = endpoint[len("ipc://"):]
        for rm in (os.unlink, lambda p: os.rmdir(os.path.dirname(p))):
            try:
                rm(path)
            except OSError:
                pass


def _peek_id(frames) -> int | None:
    """Best effort, for error replies: the id of a message that failed its checks (frames
    from the header on). A huge header frame is not parsed: that is what the size limit spares."""
    try:
        if memoryview(frames[0]).nbytes > 1 << 16:
            return None
        h = unpack(frames[0])
        rid = h.get("id") if isinstance(h, dict) else None
        return rid if isinstance(rid, int) and not isinstance(rid, bool) else None
    except Exception:  # noqa: BLE001
        return None


def ready_line(server: Server, extra: dict | None = None) -> str:
    """The launcher's one line; a group rank adds rank, world_size, local_rank, backend (and its
    advertised endpoint in place of a wildcard bind address)."""
    return "LIAISON_READY " + json.dumps({
        "endpoint": server.bound, "device": str(server.device), "pid": os.getpid(),
        "runtime": __version__, "torch": torch.__version__, "python": sys.version.split()[0],
        "threads": torch.get_num_threads(), **(extra or {}),
    })
