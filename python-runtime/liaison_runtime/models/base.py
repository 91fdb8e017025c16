"""What every built model shares: spec-field checks with errors that name the field, and
`describe()`, the summary a client's `meta` request returns for a module handle."""

from __future__ import annotations

import torch

from ..errors import RuntimeFault

REQUIRED = object()  # the default of a spec field that must be given


def spec_fault(field: str, msg: str) -> RuntimeFault:
    return RuntimeFault("E_ARG", f"model_build: spec field '{field}' {msg}", param="spec", field=field)


def _show(v) -> str:
    return f"{type(v).__name__} {v!r}"[:80]


def fields(spec, where: str, allowed: dict) -> dict:
    """`spec` merged over the defaults in `allowed`; a key outside `allowed` or a required
    one (default REQUIRED) left out is refused. `where` prefixes field names ("moe.")."""
    if not isinstance(spec, dict):
        raise RuntimeFault("E_ARG", f"model_build: {'spec' if not where else repr(where[:-1])} must be a map, "
                           f"got {_show(spec)}", param="spec", field=where[:-1] or "spec")
    for k in spec:
        if k not in allowed:
            raise spec_fault(f"{where}{k}", f"is not known; allowed: {', '.join(allowed)}")
    out = {}
    for k, default in allowed.items():
        if k in spec:
            out[k] = spec[k]
        elif default is REQUIRED:
            raise spec_fault(f"{where}{k}", "is required")
        else:
            out[k] = default
    return out


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def pos_int(field: str, v, lo: int = 1) -> int:
    if is_int(v) and v >= lo:
        return v
    raise spec_fault(field, f"must be an integer >= {lo}, got {_show(v)}")


def pos_ints(field: str, v, min_len: int = 1) -> list[int]:
    if isinstance(v, (list, tuple)) and len(v) >= min_len and all(is_int(x) and x >= 1 for x in v):
        return list(v)
    raise spec_fault(field, f"must be a list of at least {min_len} positive integers, got {_show(v)}")


def number(field: str, v, lo: float, hi: float | None = None, hi_open: bool = False) -> float:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if ok:
        return float(v)
    span = f">= {lo}" if hi is None else f"in [{lo}, {hi}{')' if hi_open else ']'}"
    raise spec_fault(field, f"must be a number {span}, got {_show(v)}")


def boolean(field: str, v) -> bool:
    if isinstance(v, bool):
        return v
    raise spec_fault(field, f"must be true or false, got {_show(v)}")


def choice(field: str, v, options) -> str:
    if v in options:
        return v
    raise spec_fault(field, f"must be one of {', '.join(options)}, got {_show(v)}")


# ---- describe ----

def _dtype(d: torch.dtype) -> str:
    from ..ops.registry import DTYPE_NAMES  # here, not at the top: ops imports this package

    return DTYPE_NAMES.get(d, str(d).removeprefix("torch."))


def _entry(name: str, t: torch.Tensor) -> dict:
    return {"name": name, "shape": list(t.shape), "dtype": _dtype(t.dtype), "numel": t.numel()}


def describe_module(m: torch.nn.Module, kind: str | None = None, hooks: dict | None = None) -> dict:
    """The summary of any module: its parameters, buffers and state_dict entries by name (in
    state_dict order, which is the order `model_state` returns), and its hook points."""
    return {
        "type": "Module",
        "kind": kind or getattr(m, "spec_kind", "module"),
        "params": [_entry(n, p) for n, p in m.named_parameters()],
        "buffers": [_entry(n, b) for n, b in m.named_buffers()],
        "state": [{"name": n, "shape": list(t.shape), "dtype": _dtype(t.dtype)} for n, t in m.state_dict().items()],
        "hooks": hooks or {"kv": 0, "router": 0},
    }


class Described:
    """Mixin for the built model classes: `describe()` plus their hook points."""

    spec_kind = "module"

    def hook_counts(self) -> dict:
        return {"kv": 0, "router": 0}

    def describe(self) -> dict:
        return describe_module(self, self.spec_kind, self.hook_counts())
