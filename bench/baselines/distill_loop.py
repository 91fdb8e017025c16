"""Baseline of loop.custom_ts: the distillation loop of examples/distill-lib.ts written in
plain PyTorch. A teacher CNN (the runtime's own `{"kind": "cnn"}` build, seed 100, eval mode,
no graph) and a student MLP 64-H-10 (seed 0) on the training digits, the Trainer's per-epoch
batch order; the student pruned once before training by global magnitude (exactly
round((1 - sparsity) * n) largest |w| of its weight matrices kept, as the `magnitude` plugin
at atEpoch 0), torch.optim.SGD(nesterov=True), the masks multiplied back after every step;
loss = alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * cross-entropy; the
epoch's mean loss read at its end.

    python distill_loop.py [--batch 64 --hidden 32 --sparsity 0.9 --lr 0.05 --momentum 0.9
                            --temperature 4 --alpha 0.7]

Serves: prints {"ready": true}, then answers each stdin line N with N timed epochs:
{"epoch_s": [...], "loss": the last epoch's mean loss}.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from digits_loop import batches, digits_train, serve
from liaison_runtime.models import build

TEACHER = {"kind": "cnn", "image": [8, 8], "channels": [16, 32], "hidden": 64, "classes": 10, "seed": 100}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.7)
    a = ap.parse_args()
    xtr, ytr = digits_train()
    device = torch.device("cpu")
    teacher = build(TEACHER, device).eval()
    student = build({"kind": "mlp", "sizes": [64, a.hidden, 10], "seed": 0}, device)
    weights = [p for p in student.parameters() if p.dim() >= 2]
    with torch.no_grad():
        flat = torch.cat([w.abs().flatten() for w in weights])
        keep = math.floor((1 - a.sparsity) * flat.numel() + 0.5)
        mask = torch.zeros_like(flat)
        mask[flat.topk(keep, sorted=False).indices] = 1
        masks = [m.view_as(w) for m, w in zip(mask.split([w.numel() for w in weights]), weights, strict=True)]
        torch._foreach_mul_(weights, masks)
    opt = torch.optim.SGD(student.parameters(), lr=a.lr, momentum=a.momentum, nesterov=True)
    temp, alpha = a.temperature, a.alpha
    state = {"epoch": 0}

    def epoch() -> tuple[float, float]:
        t0 = time.perf_counter()
        losses = []
        for xb, yb in batches(xtr, ytr, state["epoch"], a.batch):
            opt.zero_grad(set_to_none=True)
            s = student(xb)
            with torch.no_grad():
                t = teacher(xb)
            log_s = F.log_softmax(s / temp, -1)
            log_t = F.log_softmax(t / temp, -1)
            kl = (log_t.exp() * (log_t - log_s)).sum(-1).mean()
            loss = kl * (alpha * temp * temp) + F.cross_entropy(s, yb) * (1 - alpha)
            loss.backward()
            opt.step()
            with torch.no_grad():
                torch._foreach_mul_(weights, masks)
            losses.append(loss.detach())
        state["epoch"] += 1
        return time.perf_counter() - t0, float(torch.stack(losses).mean())

    serve(epoch)


if __name__ == "__main__":
    main()
