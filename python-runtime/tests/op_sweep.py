"""Calls every op in the op table with adversarial but well-typed arguments and reports each
call the runtime would answer with E_INTERNAL ("a bug in the runtime"): a caller's mistake —
a zero or negative size, a huge number, NaN, an empty list, a wrong rank, a -1 dimension —
must come back as E_ARG, E_SHAPE, E_DTYPE, E_OOM or E_OP_FAILED, never as that.

Each argument is drawn from a pool for its declared kind (registry.Param.kind), so the
registry's own kind checks pass and the op body sees the value. A failure is classified by
the executor's own dispatcher (Executor._wrap), as a request would be.

    python op_sweep.py [--seed 0] [--calls 40] [--programs 0] [--mem-gib 6] [--op NAME ...]

prints one JSON object: {"calls": n, "internal": [{op, args, error}], "slow": [...]}. Run it
in a process of its own: it caps its address space (--mem-gib) so that a size that would
need more memory than the machine has fails at once (E_OOM) instead of swapping.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import signal
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from liaison_runtime import policy  # noqa: E402
from liaison_runtime.errors import RuntimeFault  # noqa: E402
from liaison_runtime.executor import Executor  # noqa: E402
from liaison_runtime.models.build import build  # noqa: E402
from liaison_runtime.ops import OPS  # noqa: E402
from liaison_runtime.ops.registry import _MISSING, TORCH_DTYPES, Ctx  # noqa: E402
from liaison_runtime.ops.tokenizer import bpe_train  # noqa: E402
from liaison_runtime.protocol import Handle  # noqa: E402
from liaison_runtime.session import Session  # noqa: E402

CPU = torch.device("cpu")
BIG = 2**62
INT_MAX, INT_MIN = 2**63 - 1, -(2**63)
# sizes are either small or absurd: a product never lands in between, where an allocation
# would succeed and take seconds to fill
INTS = [0, 1, 2, 3, -1, -2, -3, 7, BIG, -BIG, INT_MAX, INT_MIN, 2**64 - 1]
FLOATS = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 1e-320, 1e30, -1e30, 1e308, math.nan, math.inf, -math.inf]
SCALARS = INTS + FLOATS + [True, False]
INT_LISTS = [[], [0], [-1], [1], [3], [-1, 0], [0, -1], [-1, -1], [3, 4], [4, 3], [2, 3, 4], [BIG], [BIG, BIG],
             [-BIG], [INT_MAX], [INT_MIN], [1] * 40, [0, BIG], [3, -4], [-5], [2**64 - 1], [1, 1]]
SHAPES = [[], [0], [1], [3], [3, 4], [0, 3], [2, 3, 4], [BIG], [BIG, BIG], [INT_MAX], [2**64 - 1], [1] * 40,
          [0, BIG], [3, 0, BIG]]
STRINGS = ["", "x", "weight", "layers.0.weight", "../x", "/etc/passwd", "a" * 5000, "\x00", "é", "ij,jk->ik",
           "i,i->", "...", "pydoc", "fortunes", "digits", "mse", "nope", "kv", "router"]
ANYS = [None, 0, -1, 1.5, math.nan, "", "x", [], [1, 2], [[]], {}, {"kind": "mlp"}, {"kind": "mlp", "sizes": [4, 3]},
        {"kind": "mlp", "sizes": [-1, 3]}, {"kind": "mlp", "sizes": [BIG, BIG]}, {"kind": "gpt"},
        {"kind": "factory", "ref": "os:system"}, {"a": [None]}, [{"op": "add"}], ["x", "y"], [Handle(999)], Handle(999),
        {"budget": -1}, {"budget": BIG}, {"layers": [BIG]}, {"state": [math.nan]}, "fro", "nuc", math.inf, 2, -2]


def _tensors() -> list:
    """A fresh pool for each call: in-place ops write into what they are given."""
    f = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    odd = torch.tensor([[1.0, math.nan], [math.inf, -math.inf]])
    return [
        torch.tensor(2.5), torch.zeros(0), torch.zeros(0, 3), torch.ones(3), torch.tensor([3.0, 1.0, 2.0]), f,
        f.t(), torch.ones(2, 3, 4), torch.eye(3), torch.zeros(3, 3), odd, torch.full((2, 2), 1e38),
        torch.ones(3).expand(1000, 3), torch.ones(1, 1, 1, 1, 1), torch.arange(4), torch.tensor([-1, 5, 2**40]),
        torch.tensor([[0, 1], [2, 3]]), torch.tensor([True, False, True]), torch.ones(3, 4, dtype=torch.bool),
        torch.arange(6, dtype=torch.uint8), torch.ones(3, dtype=torch.float16), torch.ones(2, 2, dtype=torch.bfloat16),
        torch.ones(3, 4, dtype=torch.float64), torch.tensor([2**31 - 1], dtype=torch.int32),
        torch.ones(3, requires_grad=True), torch.randint(0, 32, (2, 5)), torch.randint(0, 32, (1, 40)),
        torch.zeros(2, 0, 4),
    ]


class Pools:
    def __init__(self, rng: random.Random, session: Session):
        self.rng = rng
        self.session = session
        self.next = 1
        gpt = {"kind": "gpt", "vocab": 32, "context": 16, "dim": 8, "layers": 1, "heads": 2, "seed": 0}
        self.models = [build({"kind": "mlp", "sizes": [4, 3], "seed": 0}, CPU), build(gpt, CPU)]
        # a BPE tokenizer, so that the tokenizer ops run past their argument checks
        text = torch.tensor(list(b"def f(x):\n    return x + 1\n" * 20), dtype=torch.uint8)
        self.models.append(bpe_train(None, text, 260, 2))

    def handle(self, obj) -> Handle:
        h, self.next = self.next, self.next + 1
        self.session.put(h, obj)
        return Handle(h)

    def draw(self, kind: str, choices):
        rng = self.rng
        optional = kind.endswith("?")
        kind = kind.rstrip("?")
        if optional and rng.random() < 0.15:
            return None
        if choices is not None and kind == "str":
            return rng.choice(list(choices))
        if kind == "tensor":
            return self.handle(rng.choice(_tensors()))
        if kind in ("scalar", "tensor|scalar"):
            if kind == "tensor|scalar" and rng.random() < 0.5:
                return self.handle(rng.choice(_tensors()))
            return rng.choice(SCALARS)
        if kind in ("int", "seed"):
            return rng.choice(INTS)
        if kind == "float":
            return rng.choice(FLOATS + INTS[:6])
        if kind == "bool":
            return rng.random() < 0.5
        if kind == "str":
            return rng.choice(STRINGS)
        if kind in ("ints", "int|ints"):
            return rng.choice(INT_LISTS + ([rng.choice(INTS)] if kind == "int|ints" else []))
        if kind == "shape":
            return rng.choice(SHAPES)
        if kind == "tensors":
            pool = _tensors()
            return [self.handle(rng.choice(pool)) for _ in range(rng.choice([1, 1, 2, 3]))]
        if kind == "dtype":
            return rng.choice(list(TORCH_DTYPES))
        if kind == "object":
            return self.handle(rng.choice([*self.models, torch.ones(3)]))
        if kind == "any":
            v = rng.choice(ANYS)
            return [self.handle(t) for t in _tensors()[:2]] if v == [] and rng.random() < 0.3 else v
        raise ValueError(f"no pool for kind {kind!r}")


class _Slow(Exception):
    pass


def _alarm(*_):
    raise _Slow()


def call(name: str, pools: Pools, ctx: Ctx, seconds: int = 60):
    """One call of op `name`; returns None, or (args, the fault) when it is E_INTERNAL, or
    (args, 'slow') when it ran past `seconds`."""
    d = OPS[name]
    args = []
    for p in d.params:
        if p.default is not _MISSING and pools.rng.random() < 0.3:
            break  # leave the rest at their defaults
        args.append(pools.draw(p.kind, p.choices))
    shown = [_show(a, pools.session.objects) for a in args]
    signal.alarm(seconds)
    try:
        bound = d.bind_args(args, {}, pools.session)
        d.fn(ctx, *bound)
    except RuntimeFault as f:
        return (shown, f) if f.code == "E_INTERNAL" else None
    except _Slow:
        return shown, "slow"
    except Exception as e:  # noqa: BLE001 — what the dispatcher would do with it
        f = Executor._wrap(e, name, 0)
        return (shown, f) if f.code == "E_INTERNAL" else None
    finally:
        signal.alarm(0)
    return None


def _program_call(pools: Pools, ctx: Ctx, seconds: int = 60):
    """Defines a small program from random records (any op, arguments drawn as for a call,
    tensor arguments naming the trace's inputs or earlier outputs), with a random `groups`,
    `no_grad` or `specs` now and then, and runs it on pool tensors. Returns what call() does."""
    rng = pools.rng
    names = sorted(OPS)
    slots = [Handle(1001), Handle(1002)]
    records = []
    for i in range(rng.choice([1, 2, 3])):
        name = rng.choice(names + ["no_such_op"])
        d = OPS.get(name)
        args = []
        for p in d.params if d else ():
            if p.default is not _MISSING and rng.random() < 0.3:
                break
            v = pools.draw(p.kind, p.choices)
            if isinstance(v, Handle) and p.kind.rstrip("?") in ("tensor", "tensor|scalar") and rng.random() < 0.7:
                v = rng.choice(slots)  # a value of the trace, not a session tensor
            args.append(v)
        out = [Handle(2000 + 10 * i + k) for k in range(rng.choice([0, 1, 1, 1, 2]))]
        records.append({"op": name, "out": out, "args": args})
        slots.extend(out)
    extra = {}
    for field in ("groups", "no_grad", "specs"):
        if rng.random() < 0.15:
            extra[field] = rng.choice(ANYS + [[[0, 1]], [[0, 5]], [[-1, 2]], [[0, BIG]]])
    outputs = [rng.choice(slots)] if rng.random() < 0.9 else []
    define = OPS["program_define"]
    run = OPS["program_run"]
    inputs = [pools.handle(rng.choice(_tensors())) for _ in range(rng.choice([2, 2, 1, 3]))]
    shown = [_show(r, pools.session.objects) for r in records], extra
    signal.alarm(seconds)
    try:
        prog = define.fn(ctx, *define.bind_args(["sweep", records, slots[:2], outputs], extra, pools.session))
        run.fn(ctx, *run.bind_args([pools.handle(prog), inputs], {}, pools.session))
    except RuntimeFault as f:
        return (shown, f) if f.code == "E_INTERNAL" else None
    except _Slow:
        return shown, "slow"
    except Exception as e:  # noqa: BLE001 — what the dispatcher would do with it
        f = Executor._wrap(e, "program", 0)
        return (shown, f) if f.code == "E_INTERNAL" else None
    finally:
        signal.alarm(0)
    return None


def _show(v, objects) -> object:
    if isinstance(v, dict):
        return {k: _show(x, objects) for k, x in v.items()}
    if isinstance(v, list):
        return [_show(x, objects) for x in v]
    if not isinstance(v, Handle):
        return v
    obj = objects.get(v.id)
    if isinstance(obj, torch.Tensor):
        return f"<{str(obj.dtype).replace('torch.', '')}{list(obj.shape)}>"
    return f"<{type(obj).__name__}>"


def sweep(seed: int, calls: int, names=None, programs: int = 0) -> dict:
    rng = random.Random(seed)
    torch.manual_seed(seed)
    session = Session("sweep")
    pools = Pools(rng, session)
    ctx = Ctx(CPU, session)
    internal, slow, n = [], [], 0
    for name in sorted(names or OPS):
        for _ in range(calls):
            r = call(name, pools, ctx)
            n += 1
            if r is not None:
                args, f = r
                if f == "slow":
                    slow.append({"op": name, "args": repr(args)[:300]})
                else:
                    internal.append({"op": name, "args": repr(args)[:300], "error": f.message[:300]})
            session.objects.clear()
    for _ in range(programs):
        r = _program_call(pools, ctx)
        if r is not None:
            args, f = r
            entry = {"op": "program", "args": repr(args)[:600]}
            if f == "slow":
                slow.append(entry)
            else:
                internal.append({**entry, "error": f.message[:300]})
        session.objects.clear()
    return {"calls": n, "programs": programs, "internal": internal, "slow": slow}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calls", type=int, default=40, help="calls per op")
    ap.add_argument("--mem-gib", type=float, default=6.0)
    ap.add_argument("--op", nargs="*")
    ap.add_argument("--programs", type=int, default=0, help="random programs to define and run")
    a = ap.parse_args()
    limit = int(a.mem_gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _alarm)
    with tempfile.TemporaryDirectory() as root:
        # file ops run, confined to a scratch folder; factories stay off (os:system is in the pool)
        policy.set_policy(factories=False, files=True, root=root)
        t0 = time.monotonic()
        out = sweep(a.seed, a.calls, a.op, a.programs)
        out["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
