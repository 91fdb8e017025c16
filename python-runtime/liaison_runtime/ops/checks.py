"""Shared argument checks that op bodies call: each raises the right error code with a
message naming the op and the parameter (the registry checks kinds; these check dtypes,
ranks, dimensions and broadcasting, which depend on the values)."""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from .registry import DTYPE_NAMES, FLOATS


def need_float(op_name: str, param: str, t: torch.Tensor) -> None:
    if t.dtype not in FLOATS:
        raise RuntimeFault("E_DTYPE", f"{op_name}: '{param}' must be a floating-point tensor, "
                           f"got {DTYPE_NAMES.get(t.dtype, str(t.dtype))}", param=param)


def need_dtype(op_name: str, param: str, t: torch.Tensor, allowed: frozenset) -> None:
    if t.dtype not in allowed:
        names = ", ".join(sorted(DTYPE_NAMES[d] for d in allowed))
        raise RuntimeFault("E_DTYPE", f"{op_name}: '{param}' must have dtype {names}, "
                           f"got {DTYPE_NAMES.get(t.dtype, str(t.dtype))}", param=param)


def need_rank(op_name: str, param: str, t: torch.Tensor, lo: int, hi: int | None = None) -> None:
    hi = lo if hi is None else hi
    if not lo <= t.dim() <= hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise RuntimeFault("E_SHAPE", f"{op_name}: '{param}' must have {want} dimensions, got shape "
                           f"{list(t.shape)}", param=param)


def need_broadcast(op_name: str, *shapes, param: str | None = None) -> None:
    # torch.broadcast_shapes is pure-Python reference code (~25 us a call); this is the
    # same rule in a few comparisons, and it runs before every broadcasting op.
    if len(shapes) == 2 and (shapes[0] == shapes[1] or not shapes[1]):
        return
    n = max(len(s) for s in shapes)
    for i in range(1, n + 1):
        d = 1
        for s in shapes:
            if len(s) >= i:
                x = s[-i]
                if x != 1:
                    if d == 1:
                        d = x
                    elif x != d:
                        extra = {"param": param} if param else {}
                        who = f"'{param}': " if param else ""
                        raise RuntimeFault("E_SHAPE", f"{op_name}: {who}shapes "
                                           f"{' and '.join(str(list(s)) for s in shapes)} do not broadcast",
                                           **extra)


def need_dim(op_name: str, t: torch.Tensor, dim: int, param: str = "dim") -> None:
    n = max(t.dim(), 1)
    if not -n <= dim < n:
        raise RuntimeFault("E_SHAPE", f"{op_name}: {param}={dim} is out of range for a tensor of shape "
                           f"{list(t.shape)}", param=param)


def need_dims(op_name: str, t: torch.Tensor, dims, param: str = "dim") -> tuple[int, ...]:
    """Checks each dim and returns them normalized (non-negative); a repeat is refused."""
    out = []
    for d in dims:
        need_dim(op_name, t, d, param)
        out.append(d % max(t.dim(), 1))
    if len(set(out)) != len(out):
        raise RuntimeFault("E_ARG", f"{op_name}: '{param}' names a dimension twice: {list(dims)}",
                           param=param)
    return tuple(out)


def need_same_dtype(op_name: str, param: str, t: torch.Tensor, like: torch.Tensor, like_param: str) -> None:
    if t.dtype != like.dtype:
        have, want = DTYPE_NAMES.get(t.dtype, str(t.dtype)), DTYPE_NAMES.get(like.dtype, str(like.dtype))
        raise RuntimeFault("E_DTYPE", f"{op_name}: '{param}' ({have}) must have the same dtype as "
                           f"'{like_param}' ({want})", param=param)


_INDEX_DTYPES = frozenset({torch.int64, torch.int32})


def need_index(op_name: str, param: str, t: torch.Tensor, size: int | None = None) -> torch.Tensor:
    """An index tensor as int64. With `size`, values must lie in [0, size): an out-of-range
    index is a device-side assert on CUDA, which poisons the whole context, so it is
    refused here at the cost of one sync."""
    need_dtype(op_name, param, t, _INDEX_DTYPES)
    t = t.long()
    if size is not None and t.numel():
        lo, hi = int(t.min()), int(t.max())
        if lo < 0 or hi >= size:
            raise RuntimeFault("E_SHAPE", f"{op_name}: '{param}' holds indices from {lo} to {hi}, outside "
                               f"[0, {size})", param=param)
    return t
