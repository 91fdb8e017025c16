"""Indexing with index tensors and masks.

Index tensors may be i64 or i32 (JavaScript's natural integer array); values are checked
against the indexed dim before torch runs, because an out-of-range index on CUDA is a
device-side assert that ends the context for every session, not just this op.
"""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from .checks import need_broadcast, need_dim, need_dtype, need_index, need_rank, need_same_dtype
from .registry import P, op

_BOOL = frozenset({torch.bool})


def _shape_fault(name: str, msg: str, param: str) -> RuntimeFault:
    return RuntimeFault("E_SHAPE", f"{name}: {msg}", param=param)


def _size(t: torch.Tensor, dim: int) -> int:
    return t.shape[dim] if t.dim() else 1


def _mask(name: str, input: torch.Tensor, mask: torch.Tensor) -> None:
    """mask is bool and broadcasts to input's own shape."""
    need_dtype(name, "mask", mask, _BOOL)
    need_broadcast(name, input.shape, mask.shape, param="mask")
    if torch.broadcast_shapes(input.shape, mask.shape) != input.shape:
        raise _shape_fault(name, f"'mask' {list(mask.shape)} would grow 'input' {list(input.shape)}", "mask")


def _like_input(name: str, input, dim: int, index, src=None) -> None:
    """gather/scatter's rule: same rank, and index no bigger than input outside dim (and
    no bigger than src anywhere)."""
    if index.dim() != input.dim():
        raise _shape_fault(name, f"'index' {list(index.shape)} must have as many dims as 'input' "
                           f"{list(input.shape)}", "index")
    if src is not None and src.dim() != index.dim():
        raise _shape_fault(name, f"'src' {list(src.shape)} must have as many dims as 'index' "
                           f"{list(index.shape)}", "src")
    d = dim % max(input.dim(), 1)
    for k in range(index.dim()):
        for other, pname in ((input, "input"), (src, "src")):
            if other is not None and (k != d or other is src) and index.shape[k] > other.shape[k]:
                raise _shape_fault(name, f"'index' {list(index.shape)} is larger than '{pname}' "
                                   f"{list(other.shape)} in dim {k}", "index")


@op("index_select", P("input", "tensor"), P("dim", "int"), P("index", "tensor"))
def index_select(ctx, input, dim, index):
    """index_select(input, dim, index): the entries at the 1-D index along dim."""
    need_dim("index_select", input, dim)
    need_rank("index_select", "index", index, 0, 1)
    return torch.index_select(input, dim, need_index("index_select", "index", index, _size(input, dim)))


@op("gather", P("input", "tensor"), P("dim", "int"), P("index", "tensor"))
def gather(ctx, input, dim, index):
    """gather(input, dim, index): out[i][j] = input[index[i][j]][j] (for dim 0); out has index's shape."""
    need_dim("gather", input, dim)
    index = need_index("gather", "index", index, _size(input, dim))
    _like_input("gather", input, dim, index)
    return torch.gather(input, dim, index)


def _scatter_checks(name: str, input, dim, index, src):
    need_dim(name, input, dim)
    index = need_index(name, "index", index, _size(input, dim))
    if isinstance(src, torch.Tensor):
        need_same_dtype(name, "src", src, input, "input")
        _like_input(name, input, dim, index, src)
    else:
        _like_input(name, input, dim, index)
    return index


@op("scatter", P("input", "tensor"), P("dim", "int"), P("index", "tensor"), P("src", "tensor|scalar"))
def scatter(ctx, input, dim, index, src):
    """scatter(input, dim, index, src): a copy of input with src written at index along dim."""
    return torch.scatter(input, dim, _scatter_checks("scatter", input, dim, index, src), src)


@op("scatter_add", P("input", "tensor"), P("dim", "int"), P("index", "tensor"), P("src", "tensor"))
def scatter_add(ctx, input, dim, index, src):
    """scatter_add(input, dim, index, src): a copy of input with src summed in at index along dim."""
    return torch.scatter_add(input, dim, _scatter_checks("scatter_add", input, dim, index, src), src)


@op("scatter_reduce", P("input", "tensor"), P("dim", "int"), P("index", "tensor"), P("src", "tensor"),
    P("reduce", "str", choices=("sum", "prod", "mean", "amax", "amin")), P("include_self", "bool", True))
def scatter_reduce(ctx, input, dim, index, src, reduce, include_self):
    """scatter_reduce(input, dim, index, src, reduce, include_self=True): reduce src into input at index."""
    index = _scatter_checks("scatter_reduce", input, dim, index, src)
    return torch.scatter_reduce(input, dim, index, src, reduce, include_self=include_self)


@op("masked_fill", P("input", "tensor"), P("mask", "tensor"), P("value", "tensor|scalar"))
def masked_fill(ctx, input, mask, value):
    """masked_fill(input, mask, value): a copy of input with value where the bool mask is true."""
    _mask("masked_fill", input, mask)
    if isinstance(value, torch.Tensor) and value.dim() != 0:
        raise _shape_fault("masked_fill", f"'value' must be a number or a 0-d tensor, got shape "
                           f"{list(value.shape)}", "value")
    return torch.masked_fill(input, mask, value)


@op("masked_select", P("input", "tensor"), P("mask", "tensor"))
def masked_select(ctx, input, mask):
    """masked_select(input, mask): 1-D tensor of the entries where mask (broadcast) is true."""
    need_dtype("masked_select", "mask", mask, _BOOL)
    need_broadcast("masked_select", input.shape, mask.shape, param="mask")
    return torch.masked_select(input, mask)


@op("take_along_dim", P("input", "tensor"), P("indices", "tensor"), P("dim", "int?", None))
def take_along_dim(ctx, input, indices, dim):
    """take_along_dim(input, indices, dim=None): gather with broadcasting; no dim: flat indices."""
    if dim is None:
        return torch.take_along_dim(input, need_index("take_along_dim", "indices", indices, input.numel()))
    need_dim("take_along_dim", input, dim)
    indices = need_index("take_along_dim", "indices", indices, _size(input, dim))
    if indices.dim() != input.dim():
        raise _shape_fault("take_along_dim", f"'indices' {list(indices.shape)} must have as many dims "
                           f"as 'input' {list(input.shape)}", "indices")
    d = dim % max(input.dim(), 1)
    rest = [list(t.shape[:d]) + list(t.shape[d + 1:]) for t in (input, indices)]
    need_broadcast("take_along_dim", *rest, param="indices")
    return torch.take_along_dim(input, indices, dim)


@op("nonzero", P("input", "tensor"))
def nonzero(ctx, input):
    """nonzero(input): (n, input.dim()) i64 coordinates of the non-zero entries."""
    return torch.nonzero(input)


@op("one_hot", P("input", "tensor"), P("num_classes", "int", -1))
def one_hot(ctx, input, num_classes):
    """one_hot(input, num_classes=-1): i64 (..., num_classes); -1 takes max(input) + 1."""
    if num_classes < -1:
        raise RuntimeFault("E_ARG", f"one_hot: 'num_classes' must be >= 0 or -1, got {num_classes}",
                           param="num_classes")
    input = need_index("one_hot", "input", input, num_classes if num_classes >= 0 else None)
    if num_classes == -1 and input.numel() and int(input.min()) < 0:
        raise _shape_fault("one_hot", f"'input' holds a negative class {int(input.min())}", "input")
    return torch.nn.functional.one_hot(input, num_classes)
