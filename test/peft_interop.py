"""The Python half of test/adapters-peft.test.ts: Hugging Face PEFT reads the adapters the
TypeScript side exported, and writes adapters it reads back.

    python peft_interop.py WORK

For each case folder WORK/<case>/ (written by the TypeScript side: spec.json, the model's wire
spec, or "module": "nested" for the nested Sequential below; base.safetensors, its weights; x.safetensors, an input; export/, AdapterSet.exportPeft's
folder): rebuild the base nn.Module from the spec with liaison_runtime's model builder, load
the weights, and

- `PeftModel.from_pretrained(base, export/)`: its output on x goes to out_export.safetensors;
- the names of the modules PEFT wrapped go to wrapped.json (exactly the exported ones);
- on a fresh copy (unless spec.json's "peft" is null), `get_peft_model` with the targets in spec.json's "peft" entry, a random
  lora_B (PEFT starts it at zero), `save_pretrained(import/)`: its output on x goes to
  out_import.safetensors, for AdapterSet.importPeft to match.

Prints one JSON line: {"cases": [...], "peft": version}, or {"skip": reason} when peft cannot
be imported. One process for every case: importing peft (and transformers) is the cost.
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python-runtime"))


def spec_of(case: str) -> dict:
    with open(os.path.join(case, "spec.json")) as f:
        return json.load(f)


def nested() -> torch.nn.Module:
    """Names PEFT's suffix matching confuses: '0' ends '1.0' (the TypeScript side adopts the same)."""
    lin = torch.nn.Linear
    return torch.nn.Sequential(lin(4, 4), torch.nn.Sequential(lin(4, 4), lin(4, 2)))


def base_model(case: str) -> torch.nn.Module:
    from liaison_runtime.models.build import build

    spec = spec_of(case)
    m = nested() if spec.get("module") == "nested" else build(spec["model"], torch.device("cpu"))
    m.load_state_dict(load_file(os.path.join(case, "base.safetensors")), strict=True)
    return m.eval()


def main() -> None:
    try:
        import peft
        from peft import LoraConfig, PeftModel, get_peft_model
    except ImportError as e:
        print(json.dumps({"skip": f"peft cannot be imported ({e}); `npm install` installs it with the dev extra"}))
        return
    torch.manual_seed(0)
    work = sys.argv[1]
    cases = sorted(os.listdir(work))
    for name in cases:
        case = os.path.join(work, name)
        x = load_file(os.path.join(case, "x.safetensors"))["x"]
        with torch.no_grad():
            exported = PeftModel.from_pretrained(base_model(case), os.path.join(case, "export")).eval()
            save_file({"y": exported(x).contiguous()}, os.path.join(case, "out_export.safetensors"))
        with open(os.path.join(case, "wrapped.json"), "w") as f:  # the modules PEFT put an adapter on
            json.dump([n for n, m in exported.base_model.model.named_modules() if hasattr(m, "lora_A")], f)

        want = spec_of(case)["peft"]
        if want is None:  # an export-only case
            continue
        model = get_peft_model(base_model(case), LoraConfig(
            r=want["r"], lora_alpha=want["alpha"], target_modules=want["targets"], rank_pattern=want["rank_pattern"],
            alpha_pattern=want["alpha_pattern"], lora_dropout=0.0))
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn_like(p) * 0.3)  # PEFT starts B at zero: make the adapter do something
        model.save_pretrained(os.path.join(case, "import"))
        with torch.no_grad():
            save_file({"y": model.eval()(x).contiguous()}, os.path.join(case, "out_import.safetensors"))
    print(json.dumps({"cases": cases, "peft": peft.__version__}))


if __name__ == "__main__":
    main()
