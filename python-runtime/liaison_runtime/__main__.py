"""`python -m liaison_runtime`: serve the op table on one endpoint until told to stop.

    python -m liaison_runtime --endpoint ipc:///tmp/private-0700-folder/rt.sock
    LIAISON_KEY=... python -m liaison_runtime --endpoint tcp://127.0.0.1:5555
    python -m liaison_runtime --endpoint tcp://0.0.0.0:5555 --key-file key --allow-remote

When it is listening it prints one line `LIAISON_READY {json}` on stdout (the SDK's
launcher waits for it) and then logs only to stderr. A runtime on an ipc:// socket in a
folder only its user can enter (mode 0700, as the launcher makes it) may import model
factories and read/write checkpoint files (liaison_runtime.policy); any other one only with
--allow-factories / --allow-files. An ipc socket others can reach (an abstract `ipc://@name`
one, or one in a shared folder) needs a key, as tcp does.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import signal
import sys

import torch

from . import group, policy
from .executor import DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_S
from .server import Server, cpu_budget, pick_device, ready_line, remove_ipc_files


def _key(args) -> bytes | None:
    if args.key_file:
        with open(args.key_file, "rb") as f:
            return f.read().strip() or None
    k = os.environ.get("LIAISON_KEY", "")
    return k.encode() if k else None


def _threads(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {raw!r}")
    return int(raw)


def _seconds(raw: str) -> float:
    try:
        v = float(raw)
    except ValueError:
        v = -1.0
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number of seconds, got {raw!r}")
    return v


def _say(line: str) -> None:
    """One line on stdout in one write: a group's ranks share torchrun's stdout, and print()
    writes the text and its newline apart, so two ranks' unbuffered lines could interleave
    (a pipe keeps a write of up to 4 KiB whole)."""
    sys.stdout.flush()
    data = (line + "\n").encode()
    while data:
        data = data[os.write(sys.stdout.fileno(), data):]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="liaison-runtime", description=__doc__.splitlines()[0])
    ap.add_argument("--endpoint", required=True, help="ipc://PATH, tcp://HOST:PORT (port 0: any free one)")
    ap.add_argument("--key-file", help="file holding the HMAC key (else LIAISON_KEY); required on tcp")
    ap.add_argument("--device", help="cpu, cuda, cuda:N (else LIAISON_DEVICE, else CUDA when present)")
    ap.add_argument("--parent-pid", type=int, help="exit when this process is no longer our parent")
    ap.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback tcp address")
    ap.add_argument("--allow-factories", action="store_true",
                    help="let model_build import and call package.module:function (on for a private ipc:// socket)")
    ap.add_argument("--allow-files", action="store_true",
                    help="let model_load_file/model_save_file read and write files (on for a private ipc:// socket)")
    ap.add_argument("--file-root", default=os.environ.get("LIAISON_FILE_ROOT") or None, metavar="DIR",
                    help="the folder file operations are confined to (else LIAISON_FILE_ROOT, else the "
                         "working directory the runtime starts in)")
    ap.add_argument("--threads", type=_threads,
                    help="torch intra-op threads (else LIAISON_THREADS, else the cores this process may use)")
    # limits for a runtime that several clients share; an env var is read where a flag is not given
    ap.add_argument("--max-message-bytes", type=_threads, metavar="N",
                    default=os.environ.get("LIAISON_MAX_MESSAGE_BYTES") or str(DEFAULT_MAX_MESSAGE_BYTES),
                    help="the largest message accepted, all frames together, and the most a batch may read back "
                         "(else LIAISON_MAX_MESSAGE_BYTES, else 1 GiB)")
    ap.add_argument("--max-sessions", type=_threads, metavar="N",
                    default=os.environ.get("LIAISON_MAX_SESSIONS") or str(DEFAULT_MAX_SESSIONS),
                    help="the most sessions open at once (else LIAISON_MAX_SESSIONS, else 64)")
    ap.add_argument("--session-idle-s", type=_seconds, metavar="S",
                    default=os.environ.get("LIAISON_SESSION_IDLE_S") or str(DEFAULT_SESSION_IDLE_S),
                    help="close a session unused for S seconds and free its tensors; 0: never "
                         "(else LIAISON_SESSION_IDLE_S, else 900)")
    ap.add_argument("--watch-pid", type=int, metavar="PID",
                    help="exit (removing the ipc socket) when process PID no longer exists, checked every second "
                         "even while an op runs: the SDK passes its own pid, so no rank outlives it")
    grp = ap.add_argument_group("group mode (under torchrun; liaison_runtime/group.py)")
    grp.add_argument("--group", action="store_true",
                     help="run as rank RANK of WORLD_SIZE (torchrun's environment) in a torch.distributed group: "
                          "gloo on the CPU, NCCL on CUDA; {rank}, {local_rank} and {port} in --endpoint are filled in")
    grp.add_argument("--collective-timeout-s", type=_seconds, metavar="S",
                     help="a collective that has not completed after S seconds fails with E_GROUP "
                          f"(else LIAISON_COLLECTIVE_TIMEOUT_S, else {group.DEFAULT_COLLECTIVE_TIMEOUT_S:g})")
    grp.add_argument("--base-port", type=int, metavar="P", help="{port} in a tcp endpoint becomes P + LOCAL_RANK")
    grp.add_argument("--advertise-host", metavar="H",
                     help="the host other machines reach a rank bound on 0.0.0.0 by (default: this machine's name)")
    ap.add_argument("--log-level", default=os.environ.get("LIAISON_LOG", "WARNING"))
    args = ap.parse_args(argv)
    if args.group:
        return _serve(args, group.torchrun_env())
    return _serve(args, None)


def _serve(args, env: dict | None) -> int:
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(),
                        format="liaison-runtime %(levelname)s %(message)s")
    env_threads = os.environ.get("LIAISON_THREADS")
    try:
        threads = args.threads or (_threads(env_threads) if env_threads else None)
    except argparse.ArgumentTypeError as e:
        raise SystemExit(f"liaison-runtime: LIAISON_THREADS {e}") from None
    endpoint, device, state = args.endpoint, None, None
    if env is not None:
        local = int(env["LOCAL_RANK"])
        endpoint = group.expand_endpoint(endpoint, int(env["RANK"]), local, args.base_port)
        device = group.group_device(args.device, local)
        # N ranks on one machine share its cores (torchrun sets OMP_NUM_THREADS=1: overridden here)
        torch.set_num_threads(threads or max(1, cpu_budget() // int(env["LOCAL_WORLD_SIZE"])))
        state = group.join(env, device, group.collective_timeout(args.collective_timeout_s))
    else:
        torch.set_num_threads(threads or min(cpu_budget(), torch.get_num_threads()))
        device = pick_device(args.device)
    policy.for_endpoint(endpoint, factories=args.allow_factories, files=args.allow_files)
    try:
        policy.set_policy(root=args.file_root or os.getcwd())
    except ValueError as e:
        raise SystemExit(f"liaison-runtime: --file-root: {e}") from None
    server = Server(endpoint, key=_key(args), device=device,
                    parent_pid=args.parent_pid, allow_remote=args.allow_remote,
                    max_message_bytes=args.max_message_bytes, max_sessions=args.max_sessions,
                    session_idle_s=args.session_idle_s)
    # A batch unpacks thousands of small containers; with the default gen-0 threshold the
    # cyclic GC would run every few hundred ops. Objects alive now (torch, the op table)
    # never need scanning again.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    extra = {}
    if state is not None:
        mine = group.advertised(server.bound, args.advertise_host)
        group.exchange_endpoints(state, mine)
        extra = {"endpoint": mine, "rank": state.rank, "world_size": state.world_size,
                 "local_rank": state.local_rank, "backend": state.backend}
        if mine != server.bound:
            extra["bound"] = server.bound
    if args.watch_pid is not None:
        group.watch_pid(args.watch_pid, server.stop, lambda: remove_ipc_files(server.endpoint))
    _say(ready_line(server, extra))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        group.leave()
    return 0


if __name__ == "__main__":
    sys.exit(main())
