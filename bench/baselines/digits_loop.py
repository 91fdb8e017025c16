"""What the baselines that train on the digits share: the runtime's own loader and 80/20 split
(so both sides of a benchmark train on identical arrays), the per-epoch seeded shuffle the
Trainer uses, the stdin/stdout protocol the TypeScript bench drives them with, and for the
score-training baselines (edge-popup) the frozen MLP, the masked weights and the epoch.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from liaison_runtime.models import build
from liaison_runtime.ops.data import _load


def digits_train() -> tuple[torch.Tensor, torch.Tensor]:
    """The training 80% of scikit-learn's digits, split as the SDK's `split(0.2, 0)` does."""
    x_np, y_np = _load("digits")
    x, y = torch.tensor(x_np), torch.tensor(y_np)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_test = round(len(y) * 0.2)
    return x[perm[n_test:]], y[perm[n_test:]]


def batches(x: torch.Tensor, y: torch.Tensor, epoch: int, size: int):
    """Minibatches of epoch `epoch`: a fresh permutation seeded by the epoch's number."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
    return zip(x.index_select(0, order).split(size), y.index_select(0, order).split(size), strict=True)


def serve(epoch: Callable[[], tuple[float, float]]) -> None:
    """Prints {"ready": true}, then answers each stdin line N with N timed epochs:
    {"epoch_s": [...], "loss": the last epoch's mean loss}; an empty line ends it."""
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        times, loss = [], float("nan")
        for _ in range(int(line)):
            s, loss = epoch()
            times.append(s)
        print(json.dumps({"epoch_s": times, "loss": loss}), flush=True)


def frozen_mlp(hidden: int, layers: int) -> tuple[torch.nn.Module, list[torch.nn.Linear]]:
    """The runtime's own `{"kind": "mlp"}` build (64 -> hidden x layers -> 10, seed 0), every
    parameter frozen, and its Linear layers in order."""
    model = build({"kind": "mlp", "sizes": [64] + [hidden] * layers + [10], "seed": 0}, torch.device("cpu"))
    for p in model.parameters():
        p.requires_grad_(False)
    return model, [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def mask_weights(linears: list[torch.nn.Linear], masks: list[Callable[[], torch.Tensor]]) -> None:
    """Each layer's forward uses `weight * mask()` (a forward pre-hook sets it, a forward hook
    drops it again), the stored weight untouched: what the SDK's weight hooks do."""

    def install(module: torch.nn.Linear, mask: Callable[[], torch.Tensor]) -> None:
        def pre(mod, _args):
            mod.__dict__["weight"] = mod._parameters["weight"] * mask()

        def post(mod, _args, _out):
            mod.__dict__.pop("weight", None)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    for m, f in zip(linears, masks, strict=True):
        install(m, f)


def serve_score_training(model: torch.nn.Module, scores: list[torch.Tensor], batch: int, lr: float) -> None:
    """Serves epochs of gradient descent on `scores` alone (cross-entropy, the training digits,
    the Trainer's per-epoch batches), the epoch's mean loss read at its end."""
    xtr, ytr = digits_train()
    state = {"epoch": 0}

    def epoch() -> tuple[float, float]:
        t0 = time.perf_counter()
        losses = []
        for xb, yb in batches(xtr, ytr, state["epoch"], batch):
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            with torch.no_grad():
                for s in scores:
                    s.sub_(s.grad.mul(lr))
                    s.grad = None
            losses.append(loss.detach())
        state["epoch"] += 1
        return time.perf_counter() - t0, float(torch.stack(losses).mean())

    serve(epoch)
