"""What the baselines that train on the digits share: the runtime's own loader and 80/20 split
(so both sides of a benchmark train on identical arrays), the per-epoch seeded shuffle the
Trainer uses, and the stdin/stdout protocol the TypeScript bench drives them with.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

import torch
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
