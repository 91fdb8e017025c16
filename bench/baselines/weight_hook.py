"""Baseline of sdk.weight_hook: training the scores of a straight-through top-k mask over frozen
random weights (edge-popup), written in plain PyTorch. The MLP is the runtime's own
`{"kind": "mlp"}` build with the same seed, the digits the runtime's loader with the same
80/20 split, the scores `rand(shape, seed=1+i)`, and each layer's forward uses
`W * (hard + s - s.detach())` with `hard` the top `keep` fraction of the scores — what the
SDK side's weight hooks compute. A fresh seeded permutation per epoch, gradient descent on
the scores only, the epoch's mean loss read at its end.

    python weight_hook.py [--batch 64 --hidden 128 --layers 2 --lr 0.5 --keep 0.5]

Serves: prints {"ready": true}, then answers each stdin line N with N timed epochs:
{"epoch_s": [...], "loss": the last epoch's mean loss}.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from digits_loop import batches, digits_train, serve
from liaison_runtime.models import build


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--keep", type=float, default=0.5)
    a = ap.parse_args()
    xtr, ytr = digits_train()
    model = build({"kind": "mlp", "sizes": [64] + [a.hidden] * a.layers + [10], "seed": 0}, torch.device("cpu"))
    for p in model.parameters():
        p.requires_grad_(False)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    scores = [torch.rand(m.weight.shape, generator=torch.Generator().manual_seed(1 + i)).requires_grad_()
              for i, m in enumerate(linears)]
    ks = [max(1, round(a.keep * s.numel())) for s in scores]

    def masked(module, s, k):
        def pre(mod, _args):
            hard = s.detach().ge(s.detach().flatten().topk(k).values.amin()).float()
            mod.__dict__["weight"] = mod._parameters["weight"] * (hard + (s - s.detach()))

        def post(mod, _args, _out):
            mod.__dict__.pop("weight", None)

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    for m, s, k in zip(linears, scores, ks, strict=True):
        masked(m, s, k)
    state = {"epoch": 0}

    def epoch() -> tuple[float, float]:
        t0 = time.perf_counter()
        losses = []
        for xb, yb in batches(xtr, ytr, state["epoch"], a.batch):
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            with torch.no_grad():
                for s in scores:
                    s.sub_(s.grad.mul(a.lr))
                    s.grad = None
            losses.append(loss.detach())
        state["epoch"] += 1
        value = float(torch.stack(losses).mean())
        return time.perf_counter() - t0, value

    serve(epoch)


if __name__ == "__main__":
    main()
