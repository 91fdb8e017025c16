"""Group mode: this runtime as rank RANK of WORLD_SIZE under torchrun (torch.distributed).

    python -m torch.distributed.run --standalone --nproc-per-node 2 -m liaison_runtime --group \\
        --endpoint ipc:///tmp/private-0700-folder/rank{rank}.sock --watch-pid 4242

Each rank serves its own endpoint exactly as a plain runtime does (ops, programs, sessions);
what makes them a group is the process group torch.distributed joins here (gloo on the CPU,
NCCL on CUDA, device cuda:LOCAL_RANK) and the collective ops of ops/dist.py that run on it.
A client queues the same ops on every rank in the same order, so collectives always meet.

Rank 0 learns every rank's advertised endpoint (an all-gather after every rank has bound)
and `hello` reports them all, with rank, world size and backend, so a remote client needs
only rank 0's endpoint.

Faults. A collective that raises or times out (`--collective-timeout-s`) answers E_GROUP
naming the rank, the op and the cause. torch.distributed cannot repair a process group
whose collective failed (a peer may be half-way through it), so the rank marks itself
broken: from then on every collective fails at once with E_GROUP ("the group is broken
since …") without touching the network, while every other op, read and session keeps
working — the client can still read its tensors, and decides when to stop the group. The
rank stays up until it is told to stop, its watched process is gone, or torchrun's agent
stops it (the agent stops every rank when one exits). On NCCL, PyTorch's own watchdog
may end the process after a timed-out collective; a client must cope with both.
"""

from __future__ import annotations

import datetime
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

import torch

log = logging.getLogger("liaison_runtime")

# what torchrun sets for each worker; a group rank needs all of them
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
DEFAULT_COLLECTIVE_TIMEOUT_S = 60.0
_WILDCARD_HOSTS = ("0.0.0.0", "*", "[::]", "::", "[::0]")


@dataclass
class GroupState:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    backend: str
    timeout_s: float
    endpoints: list[str] = field(default_factory=list)
    broken: str | None = None  # why, once a collective failed: every later one fails at once


STATE: GroupState | None = None  # set in group mode; None on a plain runtime (a group of one)
# what this rank's collectives sent (docs/distributed.md states the convention); 0 on a plain runtime
COUNTS = {"calls": 0, "bytes": 0}


def torchrun_env(environ=None) -> dict[str, str]:
    """torchrun's variables, or a SystemExit naming the first one missing."""
    env = os.environ if environ is None else environ
    for name in TORCHRUN_ENV:
        if not env.get(name):
            raise SystemExit(f"liaison-runtime: --group needs torchrun's environment, but {name} is not set. Start "
                             "the ranks with `python -m torch.distributed.run --nproc-per-node N -m liaison_runtime "
                             "--group --endpoint …` (or torchrun), which sets RANK, WORLD_SIZE, LOCAL_RANK, "
                             "LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT.")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        if not env[name].isdigit():
            raise SystemExit(f"liaison-runtime: {name} must be a non-negative integer, got {env[name]!r}")
    return {k: env[k] for k in TORCHRUN_ENV}


def expand_endpoint(endpoint: str, rank: int, local_rank: int, base_port: int | None) -> str:
    """`{rank}` and `{local_rank}` filled in (a socket path per rank); `{port}` becomes
    base_port + local_rank (one machine's ranks on consecutive ports)."""
    out = endpoint.replace("{rank}", str(rank)).replace("{local_rank}", str(local_rank))
    if "{port}" in out:
        if base_port is None:
            raise SystemExit(f"liaison-runtime: the endpoint {endpoint!r} has {{port}} but no --base-port was given")
        out = out.replace("{port}", str(base_port + local_rank))
    return out


def group_device(requested: str | None, local_rank: int) -> torch.device:
    """--device / LIAISON_DEVICE, a bare "cuda" meaning this rank's GPU; else cuda:LOCAL_RANK
    when CUDA is present, else the CPU."""
    req = requested or os.environ.get("LIAISON_DEVICE") or ""
    if req:
        dev = torch.device(req)
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise SystemExit(f"liaison-runtime: device {req!r} requested but CUDA is not available here")
            if dev.index is None:
                dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def collective_timeout(flag: float | None) -> float:
    raw = flag if flag is not None else os.environ.get("LIAISON_COLLECTIVE_TIMEOUT_S")
    if raw is None or raw == "":
        return DEFAULT_COLLECTIVE_TIMEOUT_S
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not v > 0 or v == float("inf"):
        raise SystemExit(f"liaison-runtime: the collective timeout must be a positive number of seconds, got {raw!r} "
                         "(--collective-timeout-s or LIAISON_COLLECTIVE_TIMEOUT_S)")
    return v


def join(env: dict[str, str], device: torch.device, timeout_s: float) -> GroupState:
    """init_process_group for this rank (env:// rendezvous: torchrun's MASTER_ADDR/PORT)."""
    import torch.distributed as dist

    global STATE
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    except Exception as e:  # noqa: BLE001 — a rendezvous that fails must say where it tried
        raise SystemExit(f"liaison-runtime: rank {env['RANK']} could not join the group at "
                         f"{env['MASTER_ADDR']}:{env['MASTER_PORT']} ({backend}): {type(e).__name__}: {e}") from None
    STATE = GroupState(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=int(env["LOCAL_RANK"]),
                       local_world_size=int(env["LOCAL_WORLD_SIZE"]), backend=backend, timeout_s=timeout_s)
    return STATE


def advertised(bound: str, host: str | None) -> str:
    """The endpoint other machines use: a wildcard bind address replaced by `host` (default:
    this machine's name)."""
    if not bound.startswith("tcp://"):
        return bound
    rest = bound[len("tcp://"):]
    addr, _, port = rest.rpartition(":")
    if addr in _WILDCARD_HOSTS:
        return f"tcp://{host or socket.gethostname()}:{port}"
    return bound


def exchange_endpoints(state: GroupState, mine: str) -> list[str]:
    """Every rank's advertised endpoint, in rank order (each rank has bound before this)."""
    import torch.distributed as dist

    out: list = [None] * state.world_size
    dist.all_gather_object(out, mine)
    state.endpoints = [str(e) for e in out]
    return state.endpoints


def hello_info() -> dict | None:
    """The `group` field of the hello reply; None on a plain runtime."""
    st = STATE
    if st is None:
        return None
    out = {"rank": st.rank, "world_size": st.world_size, "local_rank": st.local_rank, "backend": st.backend,
           "endpoints": list(st.endpoints)}
    if st.broken:
        out["broken"] = st.broken
    return out


def counters() -> dict:
    out = dict(COUNTS)
    if STATE is not None and STATE.broken:
        out["broken"] = STATE.broken
    return out


def mark_broken(why: str) -> None:
    if STATE is not None and STATE.broken is None:
        STATE.broken = f"{time.strftime('%H:%M:%S')}: {why}"


def leave() -> None:
    """Destroy the process group on a clean exit (a broken one is left: its peers may be gone)."""
    global STATE
    st, STATE = STATE, None
    if st is None or st.broken:
        return
    try:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    except Exception:  # noqa: BLE001 — leaving must not fail the exit
        log.debug("destroy_process_group failed", exc_info=True)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists and has not exited: a zombie (exited, not yet reaped by its
    parent) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (not Linux): os.kill's answer stands


def watch_pid(pid: int, stop, on_force_exit, grace_s: float = 3.0, every_s: float = 1.0) -> threading.Thread:
    """A daemon thread: when process `pid` is gone, `stop()` the server (the loop ends within
    its 1 s poll), and if the loop is still busy `grace_s` later — inside a collective whose
    peers will never come, or a long op nobody waits for — `on_force_exit()` and _exit."""

    def run():
        while pid_alive(pid):
            time.sleep(every_s)
        log.warning("watched process %s is gone; shutting down", pid)
        stop()
        time.sleep(grace_s)
        on_force_exit()
        os._exit(0)

    t = threading.Thread(target=run, name="liaison-watch-pid", daemon=True)
    t.start()
    return t
