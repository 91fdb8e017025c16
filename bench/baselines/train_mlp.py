"""Baseline of sdk.train_step and momentum.step: the Trainer's training loop written in plain
PyTorch — an MLP on scikit-learn's digits (the runtime's own loader, so both sides train on
identical arrays and the same 80/20 split), minibatch gradient descent (a hand-written
`p -= lr * grad`) or torch.optim.SGD with Nesterov momentum, a fresh seeded permutation per
epoch, the loss read back every `log_every` steps and at the epoch's end.

    python train_mlp.py [--batch 64 --hidden 64 --layers 1 --lr 0.5 --log-every 10
                         --optimizer gd|nesterov --momentum 0.9]

Serves: prints {"ready": true}, then answers each stdin line N with N timed epochs:
{"epoch_s": [...], "loss": the last epoch's mean loss}.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import torch.nn.functional as F
from digits_loop import batches, digits_train, serve


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--layers", type=int, default=1, help="hidden layers of width --hidden")
    ap.add_argument("--optimizer", choices=("gd", "nesterov"), default="gd")
    ap.add_argument("--momentum", type=float, default=0.9)
    a = ap.parse_args()
    xtr, ytr = digits_train()
    torch.manual_seed(0)
    widths = [64] + [a.hidden] * a.layers
    layers: list[torch.nn.Module] = []
    for i, o in itertools.pairwise(widths):
        layers += [torch.nn.Linear(i, o), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 10))
    params = list(model.parameters())
    sgd = torch.optim.SGD(params, lr=a.lr, momentum=a.momentum, nesterov=True) if a.optimizer == "nesterov" else None
    state = {"step": 0, "epoch": 0}

    def epoch() -> tuple[float, float]:
        t0 = time.perf_counter()
        losses = []
        for xb, yb in batches(xtr, ytr, state["epoch"], a.batch):
            state["step"] += 1
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            if sgd is not None:
                sgd.step()
            else:
                with torch.no_grad():
                    for p in params:
                        p.sub_(p.grad.mul(a.lr))
            losses.append(loss.detach())
            if state["step"] % a.log_every == 0:
                float(torch.stack(losses[-a.log_every:]).mean())
        state["epoch"] += 1
        value = float(torch.stack(losses).mean())
        return time.perf_counter() - t0, value

    serve(epoch)


if __name__ == "__main__":
    main()
