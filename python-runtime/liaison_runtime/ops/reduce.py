"""Reductions over one, several or all dimensions, and running sums.

`dim` is None (every dimension), an int, or a list of ints; `keepdim` keeps the reduced
dimensions as size 1 so the result still broadcasts against the input.
"""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from .checks import need_dim, need_dims, need_float
from .registry import P, op


def _all_dims(name: str, t: torch.Tensor, dim) -> tuple[int, ...]:
    # Spelled out rather than passing dim=None: not every torch reduction accepts None,
    # and an explicit tuple behaves the same for all of them.
    return tuple(range(t.dim())) if dim is None else need_dims(name, t, dim)


def _reduction(name: str, fn, floats_only: bool = False):
    def run(ctx, input, dim, keepdim):
        if floats_only:
            need_float(name, "input", input)
        dims = _all_dims(name, input, dim)
        return fn(input, dims, keepdim)

    run.__doc__ = f"{name}(input, dim=None, keepdim=False): reduce over dim (None: all dims)."
    op(name, P("input", "tensor"), P("dim", "ints?", None), P("keepdim", "bool", False))(run)


def _prod(x, dims, keepdim):
    # torch.prod takes a single dim; reduce the highest dims first so lower indices stay valid.
    if not dims:
        return x.prod().reshape([1] * x.dim() if keepdim else [])
    for d in sorted(dims, reverse=True):
        x = x.prod(d, keepdim=keepdim)
    return x


_reduction("amax", lambda x, d, k: torch.amax(x, dim=d, keepdim=k))
_reduction("amin", lambda x, d, k: torch.amin(x, dim=d, keepdim=k))
_reduction("all", lambda x, d, k: torch.all(x, dim=d, keepdim=k) if d else torch.all(x))
_reduction("any", lambda x, d, k: torch.any(x, dim=d, keepdim=k) if d else torch.any(x))
_reduction("prod", _prod)
_reduction("mean", lambda x, d, k: torch.mean(x, dim=d, keepdim=k), floats_only=True)
_reduction("logsumexp", lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k), floats_only=True)


@op("sum", P("input", "tensor"), P("dim", "ints?", None), P("keepdim", "bool", False),
    P("dtype", "dtype?", None))
def sum_(ctx, input, dim, keepdim, dtype):
    """sum(input, dim=None, keepdim=False, dtype=None): bool and int inputs sum as i64."""
    return torch.sum(input, dim=_all_dims("sum", input, dim), keepdim=keepdim, dtype=dtype)


def _moment(name: str, fn):
    def run(ctx, input, dim, correction, keepdim):
        need_float(name, "input", input)
        if correction < 0:
            raise RuntimeFault("E_ARG", f"{name}: 'correction' must be >= 0, got {correction}",
                               param="correction")
        return fn(input, dim=_all_dims(name, input, dim), correction=correction, keepdim=keepdim)

    run.__doc__ = f"{name}(input, dim=None, correction=1, keepdim=False): correction 1 is Bessel's."
    op(name, P("input", "tensor"), P("dim", "ints?", None), P("correction", "int", 1),
       P("keepdim", "bool", False))(run)


_moment("std", torch.std)
_moment("var", torch.var)


def _arg(name: str, fn):
    def run(ctx, input, dim, keepdim):
        if dim is not None:
            need_dim(name, input, dim)
        return fn(input, dim=dim, keepdim=keepdim)

    run.__doc__ = f"{name}(input, dim=None, keepdim=False): i64 index (flat index when dim is None)."
    op(name, P("input", "tensor"), P("dim", "int?", None), P("keepdim", "bool", False))(run)


_arg("argmax", torch.argmax)
_arg("argmin", torch.argmin)


def _extreme(name: str, fn):
    def run(ctx, input, dim, keepdim):
        need_dim(name, input, dim)
        values, indices = fn(input, dim=dim, keepdim=keepdim)
        return values, indices

    run.__doc__ = f"{name}(input, dim, keepdim=False) -> (values, indices i64) along dim."
    op(name, P("input", "tensor"), P("dim", "int"), P("keepdim", "bool", False), outputs=2)(run)


_extreme("max_dim", torch.max)
_extreme("min_dim", torch.min)


@op("cumsum", P("input", "tensor"), P("dim", "int"), P("dtype", "dtype?", None))
def cumsum(ctx, input, dim, dtype):
    """cumsum(input, dim, dtype=None): running sum along dim; same shape as input."""
    need_dim("cumsum", input, dim)
    return torch.cumsum(input, dim=dim, dtype=dtype)


def vector_norm(name: str, input, ord, dim, keepdim):
    need_float(name, "input", input)
    return torch.linalg.vector_norm(input, ord=ord, dim=_all_dims(name, input, dim) or None, keepdim=keepdim)


@op("norm", P("input", "tensor"), P("ord", "float", 2.0), P("dim", "ints?", None),
    P("keepdim", "bool", False))
def norm(ctx, input, ord, dim, keepdim):
    """norm(input, ord=2, dim=None, keepdim=False): vector norm over dim (None: all elements)."""
    return vector_norm("norm", input, ord, dim, keepdim)
