"""Baseline of sdk.weight_hook: training the scores of a straight-through top-k mask over frozen
random weights (edge-popup), written in plain PyTorch. The MLP is the runtime's own
`{"kind": "mlp"}` build with the same seed, the digits the runtime's loader with the same
80/20 split, the scores `rand(shape, seed=1+i)`, and each layer's forward uses
`W * (hard + s - s.detach())` with `hard` 1 at exactly the top `keep` fraction of the scores — what the
SDK side's weight hooks compute. A fresh seeded permutation per epoch, gradient descent on
the scores only, the epoch's mean loss read at its end.

    python weight_hook.py [--batch 64 --hidden 128 --layers 2 --lr 0.5 --keep 0.5]

Serves: prints {"ready": true}, then answers each stdin line N with N timed epochs:
{"epoch_s": [...], "loss": the last epoch's mean loss}.
"""

from __future__ import annotations

import argparse

import torch
from digits_loop import frozen_mlp, mask_weights, serve_score_training


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--keep", type=float, default=0.5)
    a = ap.parse_args()
    model, linears = frozen_mlp(a.hidden, a.layers)
    scores = [torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(1 + i)).requires_grad_()
              for i, m in enumerate(linears)]

    def straight_through(s: torch.Tensor, k: int):
        def mask() -> torch.Tensor:
            # exactly the k largest, as the runtime's topk_mask keeps them (ties cannot add entries)
            flat = torch.zeros(s.numel()).scatter_(0, s.detach().flatten().topk(k, sorted=False).indices, 1.0)
            return flat.view_as(s) + (s - s.detach())

        return mask

    mask_weights(linears, [straight_through(s, max(1, round(a.keep * s.numel()))) for s in scores])
    serve_score_training(model, scores, a.batch, a.lr)


if __name__ == "__main__":
    main()
