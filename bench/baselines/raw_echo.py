"""Baseline server for the bridge benchmarks: a bare pyzmq ROUTER that echoes every message.

No msgpack and no dispatch: what ZeroMQ between Node and Python costs by itself. The loop has
the runtime's shape (poll, then drain without blocking) and the runtime's socket options, so
the difference between the two is what Liaison adds on top of the socket.

    python raw_echo.py ipc:///tmp/x/echo.sock [--parent-pid PID]

Prints `ECHO_READY <endpoint>` once bound; exits on SIGTERM or when its parent is gone.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import zmq


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("endpoint")
    ap.add_argument("--parent-pid", type=int)
    args = ap.parse_args(argv)

    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(args.endpoint)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ECHO_READY", sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)

    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while True:
        if not poller.poll(1000):
            if args.parent_pid is not None and os.getppid() != args.parent_pid:
                return 0
            continue
        for _ in range(1024):
            try:
                msg = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            sock.send_multipart(msg, copy=False)  # [identity, *frames] straight back


if __name__ == "__main__":
    sys.exit(main())
