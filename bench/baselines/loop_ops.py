"""Baseline for bridge.batched_ops: the same chain of small ops as a plain Python loop.

    python loop_ops.py SPEC.json [--reps 50] [--warmup 20]   # prints one JSON line, exits
    python loop_ops.py SPEC.json --serve                     # one JSON line per stdin line "N"

SPEC is what the TypeScript side queues, written out by it so both run the identical
sequence: {"shape": [16, 16], "init": [...], "ops": [["add", 0.5], ["relu", null], ...]}.
Each op is the torch function the runtime's op table calls for that name. A repetition
times the whole chain with time.perf_counter; the line reports the median in microseconds
and a checksum of the result (the TypeScript side compares it with the SDK's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

# name -> the function liaison_runtime/ops/elementwise.py runs for it
FUNCS = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid, "neg": torch.neg, "abs": torch.abs,
}


def load(path: str):
    with open(path, encoding="utf-8") as f:
        spec = json.load(f)
    x0 = torch.tensor(spec["init"], dtype=torch.float32).reshape(spec["shape"])
    seq = [(FUNCS[name], arg) for name, arg in spec["ops"]]
    return x0, seq


def chain(x, seq):
    for fn, arg in seq:
        x = fn(x) if arg is None else fn(x, arg)
    return x


def measure(x0, seq, reps: int) -> dict:
    times = []
    x = x0
    for _ in range(reps):
        t0 = time.perf_counter()
        x = chain(x0, seq)
        times.append((time.perf_counter() - t0) * 1e6)
    return {"median_us": statistics.median(times), "reps": reps, "ops": len(seq),
            "checksum": float(x.double().sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("spec")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--serve", action="store_true", help="answer each stdin line N with N timed reps")
    args = ap.parse_args(argv)
    x0, seq = load(args.spec)
    measure(x0, seq, args.warmup)
    if not args.serve:
        print(json.dumps(measure(x0, seq, args.reps)), flush=True)
        return 0
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        print(json.dumps(measure(x0, seq, int(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
