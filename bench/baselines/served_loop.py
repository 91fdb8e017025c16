"""loop.python_optimizer's two loops in one process (bench/loop_python_optimizer.ts): a plain
PyTorch loop on the digits whose model is served (liaison_runtime.serve) and stepped by
`svc.optimizer` — the `nesterov` plugin a TypeScript service installed — and the same loop
on a copy of the model stepped by `torch.optim.SGD(nesterov=True)`. Same init, batches and
rate, so every step's loss must agree; the two step in turn, batch by batch, one intra-op
thread. The service installs, calls ready(), then waits: nothing crosses to
TypeScript during the timed epochs. Prints one JSON line: per-epoch seconds and both sides'
last-epoch mean losses.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time

import liaison_runtime
import torch
import torch.nn.functional as F
from digits_loop import batches, digits_train

p = argparse.ArgumentParser()
p.add_argument("--hidden", default="128,128,128")
p.add_argument("--batch", type=int, default=64)
p.add_argument("--lr", type=float, default=0.05)
p.add_argument("--momentum", type=float, default=0.9)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--rounds", type=int, default=8)
args = p.parse_args()
torch.set_num_threads(1)

x, y = digits_train()
sizes = [64, *(int(h) for h in args.hidden.split(",")), 10]
torch.manual_seed(0)
layers = []
for a, b in itertools.pairwise(sizes):
    layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
served = torch.nn.Sequential(*layers[:-1])
plain = copy.deepcopy(served)

svc = liaison_runtime.serve(served, torch.optim.SGD(served.parameters(), lr=args.lr))  # waits for the service
assert svc.optimizer.plugin is None  # installed, active from the first step
sgd = torch.optim.SGD(plain.parameters(), lr=args.lr, momentum=args.momentum, nesterov=True)


def step(model, opt, xb, yb) -> float:
    opt.zero_grad()
    loss = F.cross_entropy(model(xb), yb)
    loss.backward()
    opt.step()
    return loss.item()


# The two loops step in turn, batch by batch (which goes first alternates): a shared machine's
# load changes from second to second, and both sides see the same. An epoch's time is the
# sum of its steps' times.
times = {"served": [], "sgd": []}
loss = {}
clock = time.perf_counter
sides = [("served", served, svc.optimizer), ("sgd", plain, sgd)]
for e in range(args.warmup + args.rounds):
    spent = {"served": 0.0, "sgd": 0.0}
    losses = {"served": [], "sgd": []}
    for i, (xb, yb) in enumerate(batches(x, y, e, args.batch)):
        for name, model, opt in sides if (e + i) % 2 == 0 else sides[::-1]:
            t0 = clock()
            losses[name].append(step(model, opt, xb, yb))
            spent[name] += clock() - t0
    for name, seconds in spent.items():
        loss[name] = sum(losses[name]) / len(losses[name])
        if e >= args.warmup:
            times[name].append(seconds)
print(json.dumps({"served_s": times["served"], "sgd_s": times["sgd"], "plugin": svc.optimizer.plugin,
                  "served_loss": loss["served"], "sgd_loss": loss["sgd"]}), flush=True)
svc.close()
