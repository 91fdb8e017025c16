"""Elementwise arithmetic, comparisons, logic and `where` (all broadcasting)."""

from __future__ import annotations

import torch

from .checks import need_broadcast, need_float
from .registry import P, op


def _shape(v):
    return v.shape if isinstance(v, torch.Tensor) else ()


def _binary(name: str, fn, floats_only: bool = False):
    def run(ctx, input, other):
        if isinstance(other, torch.Tensor):
            need_broadcast(name, input.shape, other.shape, param="other")
        if floats_only:
            need_float(name, "input", input)
        return fn(input, other)

    run.__doc__ = f"{name}(input, other): elementwise, broadcasting; other may be a number."
    op(name, P("input", "tensor"), P("other", "tensor|scalar"))(run)


def _like(a, b):
    return b if isinstance(b, torch.Tensor) else torch.tensor(b, dtype=a.dtype, device=a.device)


for _n, _f in {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": lambda a, b: torch.maximum(a, _like(a, b)),
    "minimum": lambda a, b: torch.minimum(a, _like(a, b)),
    "remainder": torch.remainder, "floor_divide": torch.floor_divide,
    "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
    # these four take only tensors in torch; a number is made a 0-d tensor (broadcasts)
    "logical_and": lambda a, b: torch.logical_and(a, _like(a, b)),
    "logical_or": lambda a, b: torch.logical_or(a, _like(a, b)),
    "logical_xor": lambda a, b: torch.logical_xor(a, _like(a, b)),
}.items():
    _binary(_n, _f)

_binary("atan2", lambda a, b: torch.atan2(a, _like(a, b)), floats_only=True)


def _unary(name: str, fn, floats_only: bool = False):
    def run(ctx, input):
        if floats_only:
            need_float(name, "input", input)
        return fn(input)

    run.__doc__ = f"{name}(input): elementwise."
    op(name, P("input", "tensor"))(run)


for _n, _f in {"neg": torch.neg, "abs": torch.abs, "sign": torch.sign, "square": torch.square,
               "logical_not": torch.logical_not, "relu": torch.relu, "floor": torch.floor, "ceil": torch.ceil,
               "round": torch.round}.items():
    _unary(_n, _f)
for _n, _f in {"exp": torch.exp, "log": torch.log, "log1p": torch.log1p, "expm1": torch.expm1,
               "sqrt": torch.sqrt, "rsqrt": torch.rsqrt, "sin": torch.sin, "cos": torch.cos,
               "tanh": torch.tanh,
               "sigmoid": torch.sigmoid, "reciprocal": torch.reciprocal,
               "gelu": torch.nn.functional.gelu, "silu": torch.nn.functional.silu,
               "isnan": torch.isnan, "isfinite": torch.isfinite}.items():
    _unary(_n, _f, floats_only=_n not in ("isnan", "isfinite"))


@op("clamp", P("input", "tensor"), P("min", "scalar?", None), P("max", "scalar?", None))
def clamp(ctx, input, min, max):
    """clamp(input, min=None, max=None): limit values to [min, max]."""
    return torch.clamp(input, min=min, max=max)


@op("where", P("condition", "tensor"), P("input", "tensor|scalar"), P("other", "tensor|scalar"))
def where(ctx, condition, input, other):
    """where(condition, input, other): input where condition is true, else other."""
    if condition.dtype is not torch.bool:
        from ..errors import RuntimeFault
        raise RuntimeFault("E_DTYPE", f"where: 'condition' must be a bool tensor, got {condition.dtype}",
                           param="condition")
    need_broadcast("where", condition.shape, _shape(input), _shape(other), param="other")
    return torch.where(condition, input, other)
