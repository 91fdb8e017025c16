"""AdaLoRA's allocation and regularizer against Hugging Face PEFT (test/adapters-family.test.ts).

Reads DIR/allocation.safetensors, which the test wrote: per module i (linear, PEFT's shapes
A (r, in), B (out, r), E (r,)) and step s the parameter `m{i}.{k}.p{s}` and its gradient
`m{i}.{k}.g{s}` (metadata: `r`, `steps`, `modules`, `beta1`, `beta2`, `budgets`, and
`orth_weight`). Runs PEFT's RankAllocator `update_ipt` once per step and `mask_to_budget`
for each budget; then puts the last step's A and B into an AdaLoraModel over Linear
modules of the same shapes and reads the orthogonality term its forward adds to the loss.
Prints one JSON line: {"masks": the masks PEFT keeps, "orth": that term}, or
{"skip": why} when peft cannot be imported.
"""

import json
import sys
from types import SimpleNamespace

import torch
from safetensors import safe_open


def main(work: str) -> None:
    try:
        from peft import AdaLoraConfig, get_peft_model
        from peft.tuners.adalora.layer import RankAllocator
    except ImportError as e:  # the test skips, saying why
        print(json.dumps({"skip": f"peft cannot be imported: {e}"}))
        return
    path = f"{work}/allocation.safetensors"
    with safe_open(path, "pt") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    modules, steps = int(meta["modules"]), int(meta["steps"])
    model = torch.nn.Module()
    for i in range(modules):
        sub = torch.nn.Module()
        for k in "ABE":
            v = t[f"m{i}.{k}.p0"].clone()
            # PEFT holds E as (r, 1)
            sub.add_module(f"lora_{k}", torch.nn.ParameterDict({"default": torch.nn.Parameter(v.view(-1, 1) if k == "E" else v)}))
        model.add_module(f"m{i}", sub)
    b1, b2 = float(meta["beta1"]), float(meta["beta2"])
    ra = RankAllocator.__new__(RankAllocator)
    ra.peft_config = SimpleNamespace(beta1=b1, beta2=b2, target_r=1, tinit=0, tfinal=0, total_step=steps + 1, deltaT=1)
    ra.adapter_name, ra.beta1, ra.beta2 = "default", b1, b2
    ra.reset_ipt()
    ra._set_budget_scheduler(model)
    params = dict(model.named_parameters())
    for s in range(steps):
        with torch.no_grad():
            for n, p in params.items():
                i, k = n[1], n.split(".")[1][-1]
                p.copy_(t[f"m{i}.{k}.p{s}"].view_as(p))
                p.grad = t[f"m{i}.{k}.g{s}"].view_as(p).clone()
        ra.update_ipt(model)
    masks = {}
    for b in json.loads(meta["budgets"]):
        pattern = ra.mask_to_budget(model, b)  # masks E in place: the scores are from update_ipt, untouched
        masks[str(b)] = [float(v) for i in range(modules) for v in pattern[f"m{i}.lora_E.default"]]
    print(json.dumps({"masks": masks, "orth": orthogonality(t, meta, AdaLoraConfig, get_peft_model)}))


class _Base(torch.nn.Module):
    """Linear modules m0, m1, … whose forward returns a zero loss: what AdaLoraModel adds to it is the regularizer."""

    def __init__(self, dims):
        super().__init__()
        for i, (n_in, n_out) in enumerate(dims):
            self.add_module(f"m{i}", torch.nn.Linear(n_in, n_out))

    def forward(self, x):
        return SimpleNamespace(loss=torch.zeros(()))


def orthogonality(t, meta, AdaLoraConfig, get_peft_model) -> float:
    modules, r, last = int(meta["modules"]), int(meta["r"]), int(meta["steps"]) - 1
    dims = [(t[f"m{i}.A.p{last}"].shape[1], t[f"m{i}.B.p{last}"].shape[0]) for i in range(modules)]
    config = AdaLoraConfig(init_r=r, target_r=1, total_step=10, target_modules=[f"m{i}" for i in range(modules)],
                           orth_reg_weight=float(meta["orth_weight"]))
    model = get_peft_model(_Base(dims), config)
    with torch.no_grad():
        for i in range(modules):
            layer = getattr(model.base_model.model, f"m{i}")
            layer.lora_A["default"].copy_(t[f"m{i}.A.p{last}"])
            layer.lora_B["default"].copy_(t[f"m{i}.B.p{last}"])
    return float(model.base_model(torch.zeros(1, dims[0][0])).loss)


if __name__ == "__main__":
    main(sys.argv[1])
