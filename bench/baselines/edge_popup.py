"""Baseline of pruner.edge_popup_step: edge-popup training written in plain PyTorch, as
hidden-networks writes it — a custom autograd Function (`GetSubnet`) whose forward keeps the
top-k of the layer's |scores| and whose backward passes the gradient straight through, applied
to each Linear's frozen weight by a forward pre-hook. The MLP is the runtime's own
`{"kind": "mlp"}` build with the same seed, the digits the runtime's loader with the same
80/20 split, the scores Kaiming-uniform U(-1/sqrt(fan_in), 1/sqrt(fan_in)) drawn as the
plugin draws them (`rand(shape, seed=seed*65537+i) * 2 - 1`, scaled), gradient descent on the
scores only, a fresh seeded permutation per epoch, the epoch's mean loss read at its end.

    python edge_popup.py [--batch 64 --hidden 128 --layers 2 --lr 0.1 --sparsity 0.5 --seed 0]

Serves: prints {"ready": true}, then answers each stdin line N with N timed epochs:
{"epoch_s": [...], "loss": the last epoch's mean loss}.
"""

from __future__ import annotations

import argparse
import math

import torch
from digits_loop import frozen_mlp, mask_weights, serve_score_training


class GetSubnet(torch.autograd.Function):
    """Forward: 1 at the k largest entries of the (non-negative) scores; backward: identity."""

    @staticmethod
    def forward(ctx, mag, k):
        flat = torch.zeros(mag.numel(), dtype=mag.dtype)
        flat.scatter_(0, mag.flatten().topk(k, sorted=False).indices, 1.0)
        return flat.view_as(mag)

    @staticmethod
    def backward(ctx, g):
        return g, None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model, linears = frozen_mlp(a.hidden, a.layers)
    scores = []
    for i, m in enumerate(linears):
        u = torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(a.seed * 65537 + i))
        scores.append((u * 2 - 1).mul(1 / math.sqrt(m.weight.shape[1])).requires_grad_())

    def subnet(s: torch.Tensor, k: int):
        return lambda: GetSubnet.apply(s.abs(), k)

    mask_weights(linears, [subnet(s, max(1, round((1 - a.sparsity) * s.numel()))) for s in scores])
    serve_score_training(model, scores, a.batch, a.lr)


if __name__ == "__main__":
    main()
