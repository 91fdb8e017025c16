"""The Python half of test/momentum-equivalence.test.ts: the same training written with
torch.optim.SGD (and its LR schedulers) in a plain loop.

    python sgd_reference.py JOB.json

JOB: {"spec": model spec, "init": safetensors path of the initial weights, "batch": B,
"epochs": E, "runs": [{"name", "sgd": SGD kwargs, "schedule": null | {"kind", ...kwargs}}]}.
Each run starts from the same weights and walks scikit-learn's digits in order, in batches of
B rows (the last partial batch dropped), E times. Prints one JSON line: per run, the final
parameters (flattened) and the loss of every step.
"""

import json
import sys

import torch
import torch.nn.functional as F
from liaison_runtime.models.build import build
from liaison_runtime.ops.data import _load
from safetensors.torch import load_file

SCHEDULERS = {"step": torch.optim.lr_scheduler.StepLR, "cosine": torch.optim.lr_scheduler.CosineAnnealingLR}


def run(job: dict, r: dict, x: torch.Tensor, y: torch.Tensor) -> dict:
    model = build(job["spec"], torch.device("cpu"))
    model.load_state_dict(load_file(job["init"]))
    opt = torch.optim.SGD(model.parameters(), **r["sgd"])
    sched = None
    if r.get("schedule"):
        kw = dict(r["schedule"])
        sched = SCHEDULERS[kw.pop("kind")](opt, **kw)
    n = len(y) // job["batch"] * job["batch"]
    losses = []
    for _ in range(job["epochs"]):
        for xb, yb in zip(x[:n].split(job["batch"]), y[:n].split(job["batch"]), strict=True):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            if sched:
                sched.step()
            losses.append(loss.item())
    params = {k: v.detach().flatten().tolist() for k, v in model.named_parameters()}
    return {"params": params, "losses": losses}


def main() -> None:
    torch.set_num_threads(1)
    with open(sys.argv[1]) as f:
        job = json.load(f)
    x_np, y_np = _load("digits")
    x, y = torch.tensor(x_np), torch.tensor(y_np)
    print(json.dumps({r["name"]: run(job, r, x, y) for r in job["runs"]}))


if __name__ == "__main__":
    main()
