"""Baseline of dist.ddp_step: the data-parallel Trainer's epoch written as a plain PyTorch DDP
script under torchrun — the runtime's own MLP build (64 -> hidden x layers -> 10, seed 0) on
scikit-learn's digits (the runtime's loader and 80/20 split), every rank drawing the same
seeded global batches and keeping its part (`tensor_split`, as `dist_shard` does), DDP
averaging the gradients (gloo on the CPU, NCCL on CUDA), hand-written gradient descent, the
global loss (each rank's weighted by its rows, all-reduced) read every `log_every` steps and
at the epoch's end.

    python -m torch.distributed.run --standalone --nproc-per-node 2 ddp_mlp.py \\
        [--batch 64 --hidden 64 --layers 1 --lr 0.5 --log-every 10]

Serves as the other baselines do (digits_loop.serve), from rank 0: it reads each stdin
line N, tells the other ranks (a broadcast), and every rank runs N timed epochs; rank 0
prints {"epoch_s": [...], "loss": the last epoch's mean loss}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from digits_loop import batches, digits_train
from liaison_runtime.models import build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--log-every", type=int, default=10)
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}") if cuda else torch.device("cpu")
    xtr, ytr = (t.to(device) for t in digits_train())
    model = build({"kind": "mlp", "sizes": [64] + [a.hidden] * a.layers + [10], "seed": 0}, device)
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    params = list(ddp.parameters())
    state = {"step": 0, "epoch": 0}

    def epoch() -> tuple[float, float]:
        t0 = time.perf_counter()
        losses = []
        for xb, yb in batches(xtr, ytr, state["epoch"], a.batch):
            state["step"] += 1
            x, y = xb.tensor_split(world)[rank], yb.tensor_split(world)[rank]
            ddp.zero_grad(set_to_none=True)
            loss = F.cross_entropy(ddp(x), y)
            loss.backward()  # DDP averages the gradients over the ranks
            with torch.no_grad():
                for p in params:
                    p.sub_(p.grad.mul(a.lr))
            losses.append(loss.detach() * (len(y) / len(yb)))
            if state["step"] % a.log_every == 0:
                logged = torch.stack(losses[-a.log_every:])
                dist.all_reduce(logged)
                float(logged.mean())
        state["epoch"] += 1
        every = torch.stack(losses)
        dist.all_reduce(every)
        return time.perf_counter() - t0, float(every.mean())

    if rank == 0:
        print(json.dumps({"ready": True}), flush=True)
    while True:
        n = [0]
        if rank == 0:
            line = sys.stdin.readline()
            n = [int(line) if line.strip() else 0]
        dist.broadcast_object_list(n, src=0)
        if n[0] == 0:
            break
        times, loss = [], float("nan")
        for _ in range(n[0]):
            s, loss = epoch()
            times.append(s)
        if rank == 0:
            print(json.dumps({"epoch_s": times, "loss": loss}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
