"""A real runtime server on a thread and a raw DEALER client, for the tests that need the
socket: sizes libzmq enforces, replies to messages the executor never sees."""

from __future__ import annotations

import math
import threading
import time

import torch
import zmq

from liaison_runtime.protocol import encode, unpack
from liaison_runtime.server import Server


class Served:
    """`Server(endpoint, **kw)` serving on a daemon thread until `close()`."""

    def __init__(self, endpoint: str, key: bytes | None = None, **kw):
        self.ctx = zmq.Context()
        self.key = key
        self.server = Server(endpoint, key=key, device=torch.device("cpu"), context=self.ctx, **kw)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self._next_id = 1

    def client(self, timeout_ms: int = 30_000) -> zmq.Socket:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, timeout_ms)
        sock.connect(self.server.bound)
        return sock

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def frames(self, header: dict, bufs=(), key: bytes | None | bool = True) -> list:
        """A request as frames, signed with the server's key (key=True), another key, or none."""
        k = self.key if key is True else (key or None)
        if k:
            header = {"ts": time.time() * 1000.0, **header}
        return encode(header, list(bufs), k)

    def reply(self, sock: zmq.Socket) -> dict:
        frames = sock.recv_multipart()
        return unpack(frames[1] if self.key else frames[0])

    def call(self, sock: zmq.Socket, header: dict, bufs=(), key: bytes | None | bool = True) -> dict:
        sock.send_multipart(self.frames({"v": 1, "id": self.next_id(), **header}, bufs, key))
        return self.reply(sock)

    def close(self) -> None:
        self.server.stop()
        self.thread.join(15)
        self.ctx.destroy(linger=0)


def error_code(reply: dict) -> str | None:
    return None if reply.get("ok") else reply["error"]["code"]


def poll_until(cond, timeout_s: float = 60.0, every_s: float = 0.05) -> bool:
    """True once cond() is; False after timeout_s. Bounds are generous: the machine is shared."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every_s)
    return bool(cond())


NAN, INF = math.nan, math.inf
