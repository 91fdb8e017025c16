"""Baseline of adapter.forward: a forward through a Linear with a low-rank adapter, written in
plain PyTorch as `x @ W.T + b + ((x @ A.T) · scale) @ B.T` (the scale on the thin side). The
Linear is the runtime's own `{"kind": "mlp", "sizes": [dim, dim]}` build (seed 0, every
parameter frozen), x, A and B the runtime's `rand` with the same seeds as the SDK side (x seed 1; A seed 2 and B seed 3, both
minus 0.5), so the two forwards' means must agree. Each timed forward ends by reading the
output's mean back (as the SDK side's `item()` does); no autograd graph on either side.

    python adapter_forward.py [--dim 1024 --tokens 2048 --rank 16 --scale 2]

Serves: prints {"ready": true}, then answers each stdin line N with N timed forwards:
{"epoch_s": [...], "loss": the last forward's output mean}.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from digits_loop import serve
from liaison_runtime.models import build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--scale", type=float, default=2.0)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = build({"kind": "mlp", "sizes": [a.dim, a.dim], "seed": 0}, device)
    for p in model.parameters():
        p.requires_grad_(False)
    lin = model.layers[0]

    def rand(shape: list[int], seed: int) -> torch.Tensor:
        # the runtime's rand(shape, seed=s): a fresh generator on the device, seeded
        return torch.rand(shape, device=device, generator=torch.Generator(device).manual_seed(seed))

    x = rand([a.tokens, a.dim], 1)
    A, B = rand([a.rank, a.dim], 2) - 0.5, rand([a.dim, a.rank], 3) - 0.5

    def forward() -> tuple[float, float]:
        t0 = time.perf_counter()
        with torch.no_grad():
            # the scale on the thin (tokens, rank) side, as the SDK's side path applies it
            y = F.linear(x, lin.weight, lin.bias) + ((x @ A.T) * a.scale) @ B.T
            m = y.mean().item()  # the read-back syncs a GPU too
        return time.perf_counter() - t0, m

    serve(forward)


if __name__ == "__main__":
    main()
