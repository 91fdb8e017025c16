"""The Python half of test/model.test.ts's safetensors interop checks.

    python safetensors_interop.py OUT IN

writes the sample tensors to OUT with safetensors.torch and loads IN (written by the
TypeScript side) with it; prints, as one JSON line {"written": ..., "read": ...}, what
each file holds: per tensor its dtype, shape and values (i64 values as strings, to survive
JSON), plus the metadata. One process for both directions: importing torch is the cost.
"""

import json
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

DTYPES = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16",
          torch.int32: "i32", torch.int64: "i64", torch.uint8: "u8", torch.bool: "bool"}


def sample() -> dict[str, torch.Tensor]:
    return {
        "f32": torch.tensor([[-0.25, -0.15, -0.05], [0.05, 0.15, 0.25]], dtype=torch.float32),
        "f64": torch.tensor([3.141592653589793, -2.718281828459045, 1e-300], dtype=torch.float64),
        "f16": torch.tensor([[1.5, -2.25], [65504.0, 6.1e-5]], dtype=torch.float16),
        "bf16": torch.tensor([1.0, -3.5, 1e30, 0.1], dtype=torch.bfloat16),
        "i32": torch.tensor([-7, 0, 2**31 - 1], dtype=torch.int32),
        "i64": torch.tensor([-(2**62), 5, 2**53 + 1], dtype=torch.int64),
        "u8": torch.tensor([0, 255, 7], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }


def describe(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> dict:
    out = {}
    for name, t in tensors.items():
        if t.dtype == torch.int64:
            values = [str(v) for v in t.flatten().tolist()]
        elif t.dtype == torch.bool:
            values = [int(v) for v in t.flatten().tolist()]
        else:
            values = t.flatten().double().tolist() if t.is_floating_point() else t.flatten().tolist()
        out[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "values": values}
    return {"tensors": out, "metadata": metadata or {}}


def main() -> None:
    out, into = sys.argv[1], sys.argv[2]
    save_file(sample(), out, metadata={"writer": "python", "format": "pt"})
    result = {}
    for key, path in (("written", out), ("read", into)):
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata()
        result[key] = describe(load_file(path), metadata)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
