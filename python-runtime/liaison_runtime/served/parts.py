"""The parts of a served script (liaison_runtime/serve.py): the lock with turns, what an
install holds, and the Server with the lock around every request and the events long poll."""

from __future__ import annotations

import os
import threading
import time

import torch

from ..errors import RuntimeFault
from ..models import Described
from ..program import Program
from ..server import Server

TRACED = ("beforeStep", "afterBackward", "afterOptimizerStep")
LOOP = ("epochEnd", "evaluation", "fitEnd")


class Turns:
    """The one lock, taken by steps and by the server's requests, with a turn for a waiting
    request: Python's lock is not fair, and a loop that releases it and takes it again at
    once would keep the server waiting step after step."""

    def __init__(self):
        self.lock = threading.Lock()
        self._cv = threading.Condition()
        self._waiting = 0

    def server_acquire(self) -> None:
        with self._cv:
            self._waiting += 1
        self.lock.acquire()
        with self._cv:
            self._waiting -= 1
            self._cv.notify_all()

    def step_acquire(self) -> None:
        with self._cv:
            while self._waiting:
                self._cv.wait(0.5)
        self.lock.acquire()


class Installed:
    """One plugin's programs for one model, as the service installed them."""

    __slots__ = ("key", "model", "points", "loss", "update", "params", "state", "loops", "lr")

    def __init__(self, key: str, model: str):
        self.key, self.model = key, model
        self.points: dict[str, Program] = {}
        self.loss: Program | None = None
        self.update: Program | None = None  # an optimizer plugin's step over `params`
        self.params: list[str] = []
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.loops: tuple[str, ...] = ()
        self.lr: float | None = None


class Info(Described):
    """What the service's ops hand back: read with the `meta` of its handle (the executor
    describes a Described object by its describe())."""

    def __init__(self, data: dict):
        self.data = data

    def describe(self) -> dict:
        return self.data

class ServedServer(Server):
    """The Server with the lock around every request and the long poll of loop-point events."""

    def __init__(self, svc, endpoint: str, **kw):
        super().__init__(endpoint, **kw)
        self.svc = svc
        self.wake_fd = svc._wake_r

    def handle(self, ident, header, buffers):
        kind = header.get("kind")
        if kind == "ping" and "events" in header:
            return self._events(ident, header)
        if kind == "shutdown":  # the script ends its own serving (svc.close()), not a client
            raise RuntimeFault("E_ARG", "shutdown: a served script is not shut down by a client; it stops serving "
                               "when it calls svc.close() or ends")
        if kind != "batch":  # hello, ping, close touch no object a step uses
            return self.exec.handle(header, buffers)
        turns = self.svc._turns
        turns.server_acquire()
        try:
            # the wait for a long step is not the client's silence: its session must not
            # expire for it at the check this request makes first
            sess = self.exec.sessions._by_id.get(header.get("sid")) if isinstance(header.get("sid"), str) else None
            if sess is not None:
                self.exec.sessions.touch(sess)
            return self.exec.handle(header, buffers)
        finally:
            turns.lock.release()

    def _events(self, ident, header):
        sid = header.get("sid")
        self.exec.sessions.get(sid)  # E_SESSION when it is gone; restarts its idle clock
        evs = self.svc._take_events()
        if evs:
            return {"events": evs}, [], []
        wait = header.get("events")
        wait = min(max(float(wait), 0.0), 60_000.0) if isinstance(wait, (int, float)) else 5000.0
        self.svc._waiters.append((ident, header["id"], time.monotonic() + wait / 1000.0, sid))
        return None

    def on_wake(self) -> None:
        try:
            while os.read(self.wake_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        waiters = self.svc._waiters
        if not waiters:
            return
        evs = self.svc._take_events()
        now = time.monotonic()
        keep = []
        for w in waiters:
            ident, rid, deadline, _sid = w
            if evs:
                self.send_reply(ident, rid, {"events": evs})
                evs = []
            elif now >= deadline:
                self.send_reply(ident, rid, {"events": []})
            else:
                keep.append(w)
        if evs:  # no waiter took them: back in front, for the next poll
            with self.svc._ev_lock:
                self.svc._events[:0] = evs
        self.svc._waiters = keep
