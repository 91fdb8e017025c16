"""In-place updates (optimizer steps, parameter edits): each writes into `input` and
returns it, so the op's out handle becomes one more name for the same tensor.

The result must fit `input` as it is: other operands may broadcast *to* its shape but
not grow it, and the computed dtype must cast to input's without loss of kind (no float
results into an int tensor). Both are checked before anything is written, so a refused
op leaves input untouched.
"""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from .checks import need_broadcast, need_dim, need_float, need_index, need_rank
from .registry import DTYPE_NAMES, P, op


def _name(dtype: torch.dtype) -> str:
    return DTYPE_NAMES.get(dtype, str(dtype))


def _writable(name: str, input: torch.Tensor) -> None:
    # An expanded view has several entries on one memory cell; writing it is ill-defined.
    if input.is_contiguous():  # the common case (parameters, buffers), answered in C
        return
    if any(st == 0 and sz > 1 for st, sz in zip(input.stride(), input.shape, strict=True)):
        raise RuntimeFault("E_ARG", f"{name}: 'input' is a broadcast view (from expand) whose entries share "
                           "memory; clone it before writing into it", param="input")


def _fits(name: str, input: torch.Tensor, *operands) -> None:
    """operands: (param, tensor-or-number) pairs that must broadcast to input's shape."""
    ish = input.shape
    for p, v in operands:
        if not isinstance(v, torch.Tensor):
            continue
        s = v.shape
        if s == ish or not s:  # input's own shape, or 0-d (a learning rate): fits, checked for free
            continue
        if len(s) <= len(ish) and all(a == 1 or a == b for a, b in zip(reversed(s), reversed(ish), strict=False)):
            continue
        need_broadcast(name, ish, s, param=p)  # not broadcastable at all: that error first
        raise RuntimeFault("E_SHAPE", f"{name}: '{p}' {list(s)} does not broadcast to the shape of "
                           f"'input' {list(ish)} (an in-place op cannot grow its input)", param=p)


def _castable(name: str, input: torch.Tensor, param: str, other) -> None:
    if type(other) is torch.Tensor and other.dtype == input.dtype:  # an optimizer step's case
        return
    rt = torch.result_type(input, other)
    if not torch.can_cast(rt, input.dtype):
        raise RuntimeFault("E_DTYPE", f"{name}: the result with '{param}' is {_name(rt)}, which cannot be "
                           f"written into 'input' ({_name(input.dtype)})", param=param)


def _alpha(name: str, input: torch.Tensor, alpha):
    if input.is_floating_point():
        return alpha
    if isinstance(alpha, float):
        if not alpha.is_integer():
            raise RuntimeFault("E_DTYPE", f"{name}: 'alpha' {alpha} is not a whole number, but 'input' is "
                               f"{_name(input.dtype)}", param="alpha")
        alpha = int(alpha)
    if input.dtype != torch.bool:
        # torch converts alpha to the input's integer type and overflows on a larger one
        info = torch.iinfo(input.dtype)
        if not info.min <= alpha <= info.max:
            raise RuntimeFault("E_ARG", f"{name}: 'alpha' {alpha:.6g} does not fit 'input''s dtype "
                               f"{_name(input.dtype)} (from {info.min} to {info.max})", param="alpha")
    return alpha


def _add_like(name: str, method: str):
    def run(ctx, input, other, alpha):
        _writable(name, input)
        _fits(name, input, ("other", other))
        _castable(name, input, "other", other)
        return getattr(input, method)(other, alpha=_alpha(name, input, alpha))

    run.__doc__ = f"{name}(input, other, alpha=1): input {'+' if method == 'add_' else '-'}= alpha * other."
    op(name, P("input", "tensor"), P("other", "tensor|scalar"), P("alpha", "scalar", 1), inplace=True)(run)


_add_like("add_", "add_")
_add_like("sub_", "sub_")


@op("mul_", P("input", "tensor"), P("other", "tensor|scalar"), inplace=True)
def mul_(ctx, input, other):
    """mul_(input, other): input *= other."""
    _writable("mul_", input)
    _fits("mul_", input, ("other", other))
    _castable("mul_", input, "other", other)
    return input.mul_(other)


@op("div_", P("input", "tensor"), P("other", "tensor|scalar"), inplace=True)
def div_(ctx, input, other):
    """div_(input, other): input /= other (true division, so input must be floating)."""
    need_float("div_", "input", input)
    _writable("div_", input)
    _fits("div_", input, ("other", other))
    _castable("div_", input, "other", other)
    return input.div_(other)


def _addc(name: str, method: str):
    def run(ctx, input, tensor1, tensor2, value):
        for t, p in ((input, "input"), (tensor1, "tensor1"), (tensor2, "tensor2")):
            need_float(name, p, t)
        _writable(name, input)
        _fits(name, input, ("tensor1", tensor1), ("tensor2", tensor2))
        _castable(name, input, "tensor1", tensor1)
        _castable(name, input, "tensor2", tensor2)
        return getattr(input, method)(tensor1, tensor2, value=value)

    sym = "*" if method == "addcmul_" else "/"
    run.__doc__ = f"{name}(input, tensor1, tensor2, value=1): input += value * tensor1 {sym} tensor2."
    op(name, P("input", "tensor"), P("tensor1", "tensor"), P("tensor2", "tensor"), P("value", "float", 1.0),
       inplace=True)(run)


_addc("addcmul_", "addcmul_")
_addc("addcdiv_", "addcdiv_")


@op("lerp_", P("input", "tensor"), P("end", "tensor"), P("weight", "tensor|scalar"), inplace=True)
def lerp_(ctx, input, end, weight):
    """lerp_(input, end, weight): input += weight * (end - input)."""
    need_float("lerp_", "input", input)
    need_float("lerp_", "end", end)
    if isinstance(weight, torch.Tensor):
        need_float("lerp_", "weight", weight)
    _writable("lerp_", input)
    _fits("lerp_", input, ("end", end), ("weight", weight))
    for p, v in (("end", end), ("weight", weight)):
        if isinstance(v, torch.Tensor) and v.dtype != input.dtype:
            raise RuntimeFault("E_DTYPE", f"lerp_: '{p}' ({_name(v.dtype)}) must have the dtype of 'input' "
                               f"({_name(input.dtype)})", param=p)
    return input.lerp_(end, weight)


@op("copy_", P("input", "tensor"), P("src", "tensor"), inplace=True)
def copy_(ctx, input, src):
    """copy_(input, src): overwrite input with src (broadcast to input's shape, cast to its dtype)."""
    _writable("copy_", input)
    _fits("copy_", input, ("src", src))
    return input.copy_(src)


@op("clamp_", P("input", "tensor"), P("min", "scalar?", None), P("max", "scalar?", None), inplace=True)
def clamp_(ctx, input, min, max):
    """clamp_(input, min=None, max=None): limit input's values to [min, max]."""
    if min is None and max is None:
        raise RuntimeFault("E_ARG", "clamp_: give at least one of 'min' and 'max'", param="min")
    _writable("clamp_", input)
    for p, v in (("min", min), ("max", max)):
        if v is not None:
            _castable("clamp_", input, p, v)
    return input.clamp_(min=min, max=max)


@op("zero_", P("input", "tensor"), inplace=True)
def zero_(ctx, input):
    """zero_(input): set every entry to 0."""
    _writable("zero_", input)
    return input.zero_()


@op("fill_", P("input", "tensor"), P("value", "scalar"), inplace=True)
def fill_(ctx, input, value):
    """fill_(input, value): set every entry to value."""
    _writable("fill_", input)
    _castable("fill_", input, "value", value)
    return input.fill_(value)


@op("masked_fill_", P("input", "tensor"), P("mask", "tensor"), P("value", "scalar"), inplace=True)
def masked_fill_(ctx, input, mask, value):
    """masked_fill_(input, mask, value): set input to value where the bool mask (broadcast) is true."""
    if mask.dtype is not torch.bool:
        raise RuntimeFault("E_DTYPE", f"masked_fill_: 'mask' must be a bool tensor, got {_name(mask.dtype)}",
                           param="mask")
    _writable("masked_fill_", input)
    _fits("masked_fill_", input, ("mask", mask))
    _castable("masked_fill_", input, "value", value)
    return input.masked_fill_(mask, value)


@op("index_copy_", P("input", "tensor"), P("dim", "int"), P("index", "tensor"), P("source", "tensor"),
    inplace=True)
def index_copy_(ctx, input, dim, index, source):
    """index_copy_(input, dim, index, source): input[..., index[i], ...] = source[..., i, ...] along dim."""
    name = "index_copy_"
    _writable(name, input)
    need_dim(name, input, dim)
    need_rank(name, "index", index, 0, 1)
    size = input.shape[dim] if input.dim() else 1
    index = need_index(name, "index", index, size)
    if source.dtype != input.dtype:
        raise RuntimeFault("E_DTYPE", f"{name}: 'source' ({_name(source.dtype)}) must have the dtype "
                           f"of 'input' ({_name(input.dtype)})", param="source")
    d = dim % max(input.dim(), 1)
    want = list(input.shape)
    if want:
        want[d] = index.numel()
    if list(source.shape) != want:
        raise RuntimeFault("E_SHAPE", f"{name}: 'source' has shape {list(source.shape)}, expected {want} "
                           f"(input's shape with dim {dim} the length of 'index')", param="source")
    return input.index_copy_(dim, index, source)
