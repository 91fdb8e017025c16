"""Baseline for sdk.program_replay: greedy decoding with the sliding-window KV policy
written by hand in Python, inside the runtime's own model code (no bridge, no program).

    python kv_decode.py SPEC.json --serve    # one JSON line per stdin line "N": N decodes

SPEC (written by the TypeScript side, so both decode the identical model):
{"model": <gpt spec with seed>, "budget": 64, "prompt": [[...]], "steps": 256}.
Each line reports the median wall time of a decode in microseconds and a checksum of the
generated tokens (the TypeScript side compares it with the SDK's).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time

import torch
from liaison_runtime.models.build import build
from liaison_runtime.models.kvcache import KVHook, generate


def sliding_window(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    _keys, _values, _attn, pos = inputs
    return [pos.to(torch.float32)]  # score = position: the newest `budget` tokens stay


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    with open(a.spec, encoding="utf-8") as f:
        spec = json.load(f)
    device = torch.device("cpu")
    model = build(spec["model"], device).eval()  # decoding as the runtime's generate op runs it
    for i in range(len(model.blocks)):
        model.kv_hooks[i] = KVHook(sliding_window, spec["budget"], [])
    prompt = torch.tensor(spec["prompt"], dtype=torch.int64)

    def once() -> tuple[float, int]:
        t0 = time.perf_counter()
        with torch.no_grad():
            out = generate(model, prompt, spec["steps"], 0.0, None)
        return (time.perf_counter() - t0) * 1e6, int(out.sum())

    # the runtime process tunes its garbage collector this way (liaison_runtime/__main__.py);
    # the baseline gets the same, so only the policy's calling path differs
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    for _ in range(a.warmup):
        once()
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        n = int(line)
        runs = [once() for _ in range(n)]
        print(json.dumps({"median_us": statistics.median(r[0] for r in runs), "checksum": runs[-1][1]}), flush=True)


if __name__ == "__main__":
    main()
