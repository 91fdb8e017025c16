"""The runtime inside an interpreter someone else owns: the pythonia escape hatch.

The SDK's `startWithPython()` (bridge/python.ts) has pythonia start an interpreter, imports
this module through it and calls `start(endpoint)`: the ordinary `Server` then runs on a
daemon thread of that interpreter, and the user's pythonia proxies live in the same
process. `stash(obj)` hands one of their objects (a tensor, an `nn.Module`, …) to the
server; the client's `adopt` op with the returned key puts it into a session as a handle.
Tensor data still travels over ZeroMQ only; pythonia carries the control calls.

Threads: pythonia runs every call on the interpreter's main thread, the server loop on its
own. They share exactly one structure, `Executor.adoptable`: `stash` inserts a fresh key,
the loop's `adopt` pops a key. A dict insert or pop with an `int` key is one bytecode-level
operation that runs no Python code (int hashing and comparison are C), so it is atomic
under the GIL, and on free-threaded builds every dict carries its own lock; keys come from
`itertools.count`, whose `next` is atomic as well, so no two stashes share a key. The
stashed object itself is shared, not copied: changing it through pythonia while an op
reads it is a data race, as with any two threads.

No signal handlers are installed (Python allows them on the main thread only, and the
main thread is pythonia's); the server stops on `stop()`, on a `shutdown` request, or when
the Node process that started this interpreter is gone. When the interpreter ends first
(pythonia's loop sees its parent go), an exit hook still removes the ipc socket file.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import threading

from . import policy
from .server import Server, pick_device, ready_line, remove_ipc_files

_lock = threading.Lock()  # start/stop against each other; stash needs no lock (see above)
_server: Server | None = None
_thread: threading.Thread | None = None
_keys = itertools.count(1)


def start(endpoint: str, device: str | None = None) -> dict:
    """Serve the op table on `endpoint` from a daemon thread; returns the ready info
    (endpoint, device, pid, runtime, torch, python) that the launcher's ready line carries."""
    global _server, _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            raise RuntimeError(f"liaison runtime already running in this interpreter on {_server.bound}")
        try:
            # the same checks as `python -m liaison_runtime`; they exit with SystemExit, which
            # would end pythonia's own loop, so they are turned into an ordinary error here
            server = Server(endpoint, device=pick_device(device), parent_pid=os.getppid())
        except SystemExit as e:
            raise RuntimeError(str(e)) from None
        # the user's own interpreter could import and open anything itself; no key is given
        # here, so Server has refused any endpoint another user could reach (tcp, an abstract
        # ipc socket, one in a shared folder): only this user can send these ops
        policy.set_policy(factories=True, files=True)
        thread = threading.Thread(target=server.serve_forever, name="liaison-runtime", daemon=True)
        thread.start()
        _server, _thread = server, thread
        # at interpreter exit the daemon thread dies without Server.close: remove the files
        atexit.register(remove_ipc_files, server.endpoint)
        return json.loads(ready_line(server).partition(" ")[2])


def stash(obj) -> int:
    """Keep `obj` for one `adopt` op; returns the key to name it with."""
    server, thread = _server, _thread
    if server is None or thread is None or not thread.is_alive():
        raise RuntimeError("the liaison runtime is not running in this interpreter; call start() first")
    if obj is None:
        raise ValueError("cannot stash None: adopt would not find it")
    key = next(_keys)
    server.exec.adoptable[key] = obj
    return key


def stop(timeout: float = 5.0) -> bool:
    """Stop the server and drop objects stashed but never adopted. True once the loop has
    ended (it notices within a second)."""
    global _server, _thread
    with _lock:
        server, thread = _server, _thread
        if server is None or thread is None:
            return True
        server.stop()
        thread.join(timeout)
        if thread.is_alive():
            return False
        server.exec.adoptable.clear()
        _server = _thread = None
        return True


def running() -> bool:
    return _thread is not None and _thread.is_alive()
