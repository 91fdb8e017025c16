"""Reshaping, joining, splitting and slicing.

Most results are views that share memory with their input, as in torch; `contiguous`
or `clone` makes an independent copy. Split-like ops return a list whose length the
request names with its `out` handles (outputs=-1).
"""

from __future__ import annotations

import math

import torch

from ..errors import RuntimeFault
from .checks import need_dim, need_dims, need_rank
from .registry import P, op


def _at_least(name: str, param: str, t: torch.Tensor, k: int) -> None:
    need_rank(name, param, t, k, max(t.dim(), k))


def _shape_fault(name: str, msg: str, param: str) -> RuntimeFault:
    return RuntimeFault("E_SHAPE", f"{name}: {msg}", param=param)


def _arg_fault(name: str, msg: str, param: str) -> RuntimeFault:
    return RuntimeFault("E_ARG", f"{name}: {msg}", param=param)


def _new_dim(name: str, t: torch.Tensor, dim: int, param: str = "dim") -> int:
    """A dim that may also name the slot after the last one (unsqueeze, stack)."""
    n = t.dim() + 1
    if not -n <= dim < n:
        raise _shape_fault(name, f"{param}={dim} is out of range for inserting a dimension into shape "
                           f"{list(t.shape)}", param)
    return dim % n


@op("reshape", P("input", "tensor"), P("shape", "ints"))
def reshape(ctx, input, shape):
    """reshape(input, shape): same elements, new shape; one entry may be -1 (inferred)."""
    if any(s < -1 for s in shape) or shape.count(-1) > 1:
        raise _arg_fault("reshape", f"'shape' may hold sizes >= 0 and at most one -1, got {shape}", "shape")
    known = math.prod(s for s in shape if s != -1)
    n = input.numel()
    if -1 in shape and known == 0:
        raise _shape_fault("reshape", f"cannot infer the -1 in {shape}: the other sizes multiply to 0, so any "
                           f"size would do (reshaping {list(input.shape)}); give every size", "shape")
    fits = n % known == 0 if -1 in shape else n == known
    if not fits:
        raise _shape_fault("reshape", f"cannot reshape {list(input.shape)} ({n} elements) into {shape}",
                           "shape")
    return torch.reshape(input, shape)


@op("permute", P("input", "tensor"), P("dims", "ints"))
def permute(ctx, input, dims):
    """permute(input, dims): reorder all dimensions; dims is a permutation of 0..n-1."""
    if len(dims) != input.dim():
        raise _shape_fault("permute", f"'dims' {dims} must name all {input.dim()} dimensions of shape "
                           f"{list(input.shape)}", "dims")
    return input.permute(need_dims("permute", input, dims, "dims"))


@op("transpose", P("input", "tensor"), P("dim0", "int"), P("dim1", "int"))
def transpose(ctx, input, dim0, dim1):
    """transpose(input, dim0, dim1): swap two dimensions."""
    need_dim("transpose", input, dim0, "dim0")
    need_dim("transpose", input, dim1, "dim1")
    return torch.transpose(input, dim0, dim1)


@op("squeeze", P("input", "tensor"), P("dim", "ints?", None))
def squeeze(ctx, input, dim):
    """squeeze(input, dim=None): drop size-1 dims (only those in dim, when given)."""
    if dim is None:
        return torch.squeeze(input)
    return torch.squeeze(input, need_dims("squeeze", input, dim))


@op("unsqueeze", P("input", "tensor"), P("dim", "int"))
def unsqueeze(ctx, input, dim):
    """unsqueeze(input, dim): insert a size-1 dim at dim (-1: at the end)."""
    return torch.unsqueeze(input, _new_dim("unsqueeze", input, dim))


@op("flatten", P("input", "tensor"), P("start_dim", "int", 0), P("end_dim", "int", -1))
def flatten(ctx, input, start_dim, end_dim):
    """flatten(input, start_dim=0, end_dim=-1): merge dims start_dim..end_dim into one."""
    need_dim("flatten", input, start_dim, "start_dim")
    need_dim("flatten", input, end_dim, "end_dim")
    n = max(input.dim(), 1)
    if start_dim % n > end_dim % n:
        raise _arg_fault("flatten", f"'start_dim' ({start_dim}) comes after 'end_dim' ({end_dim})",
                         "start_dim")
    return torch.flatten(input, start_dim, end_dim)


@op("expand", P("input", "tensor"), P("shape", "ints"))
def expand(ctx, input, shape):
    """expand(input, shape): broadcast size-1 dims without copying; -1 keeps a dim's size."""
    have = list(input.shape)
    lead = len(shape) - len(have)
    if lead < 0:
        raise _shape_fault("expand", f"'shape' {shape} has fewer dims than the input {have}", "shape")
    for i, s in enumerate(shape):
        old = have[i - lead] if i >= lead else None
        if not (s >= 0 and (old is None or old in (1, s))) and not (s == -1 and old is not None):
            raise _shape_fault("expand", f"cannot expand shape {have} to {shape}", "shape")
    return input.expand(shape)


@op("cat", P("tensors", "tensors"), P("dim", "int", 0))
def cat(ctx, tensors, dim):
    """cat(tensors, dim=0): join along an existing dim; other dims must match."""
    first = tensors[0]
    _at_least("cat", "tensors", first, 1)
    need_dim("cat", first, dim)
    d = dim % first.dim()
    for i, t in enumerate(tensors[1:], 1):
        if t.dim() != first.dim() or any(
                a != b for k, (a, b) in enumerate(zip(t.shape, first.shape, strict=True)) if k != d):
            raise _shape_fault("cat", f"'tensors'[{i}] has shape {list(t.shape)}, which does not match "
                               f"'tensors'[0]'s {list(first.shape)} outside dim {dim}", "tensors")
    return torch.cat(tensors, dim)


@op("stack", P("tensors", "tensors"), P("dim", "int", 0))
def stack(ctx, tensors, dim):
    """stack(tensors, dim=0): join equal-shaped tensors along a new dim."""
    first = tensors[0]
    for i, t in enumerate(tensors[1:], 1):
        if t.shape != first.shape:
            raise _shape_fault("stack", f"'tensors'[{i}] has shape {list(t.shape)} but 'tensors'[0] has "
                               f"{list(first.shape)}", "tensors")
    return torch.stack(tensors, _new_dim("stack", first, dim))


@op("split", P("input", "tensor"), P("split_size_or_sections", "int|ints"), P("dim", "int", 0), outputs=-1)
def split(ctx, input, split_size_or_sections, dim):
    """split(input, split_size_or_sections, dim=0): pieces of one size (an int) or of the listed sizes."""
    _at_least("split", "input", input, 1)
    need_dim("split", input, dim)
    size = input.shape[dim]
    s = split_size_or_sections
    if isinstance(s, int):
        if s <= 0:
            raise _arg_fault("split", f"'split_size_or_sections' must be a positive size, got {s}",
                             "split_size_or_sections")
    elif any(x < 0 for x in s) or sum(s) != size:
        raise _shape_fault("split", f"'split_size_or_sections' {s} must be >= 0 and add up to {size}, the "
                           f"size of dim {dim} of shape {list(input.shape)}", "split_size_or_sections")
    return list(torch.split(input, s, dim))


@op("chunk", P("input", "tensor"), P("chunks", "int"), P("dim", "int", 0), outputs=-1)
def chunk(ctx, input, chunks, dim):
    """chunk(input, chunks, dim=0): at most `chunks` near-equal pieces (fewer when dim is small)."""
    _at_least("chunk", "input", input, 1)
    need_dim("chunk", input, dim)
    if chunks <= 0:
        raise _arg_fault("chunk", f"'chunks' must be positive, got {chunks}", "chunks")
    return list(torch.chunk(input, chunks, dim))


@op("unbind", P("input", "tensor"), P("dim", "int", 0), outputs=-1)
def unbind(ctx, input, dim):
    """unbind(input, dim=0): one tensor per index along dim, dim removed."""
    _at_least("unbind", "input", input, 1)
    need_dim("unbind", input, dim)
    return list(torch.unbind(input, dim))


@op("contiguous", P("input", "tensor"))
def contiguous(ctx, input):
    """contiguous(input): input itself when already C-ordered, else a C-ordered copy."""
    return input.contiguous()


@op("flip", P("input", "tensor"), P("dims", "ints"))
def flip(ctx, input, dims):
    """flip(input, dims): reverse the order along each of dims (a copy)."""
    return torch.flip(input, need_dims("flip", input, dims, "dims"))


@op("roll", P("input", "tensor"), P("shifts", "ints"), P("dims", "ints?", None))
def roll(ctx, input, shifts, dims):
    """roll(input, shifts, dims=None): rotate along dims; without dims, over the flattened tensor."""
    if dims is None:
        if len(shifts) != 1:
            raise _arg_fault("roll", f"without 'dims', 'shifts' must be one number, got {shifts}", "shifts")
        return torch.roll(input, shifts[0])
    if len(shifts) != len(dims):
        raise _arg_fault("roll", f"'shifts' {shifts} and 'dims' {dims} must have the same length", "shifts")
    for d in dims:
        need_dim("roll", input, d, "dims")
    return torch.roll(input, shifts, dims)


@op("repeat", P("input", "tensor"), P("repeats", "ints"))
def repeat(ctx, input, repeats):
    """repeat(input, repeats): tile; repeats has one count per dim (extra leading counts add dims)."""
    if len(repeats) < input.dim() or any(r < 0 for r in repeats):
        raise _shape_fault("repeat", f"'repeats' {repeats} needs at least {input.dim()} counts >= 0 "
                           f"for shape {list(input.shape)}", "repeats")
    return input.repeat(repeats)


def _triangle(name: str, fn):
    def run(ctx, input, diagonal):
        _at_least(name, "input", input, 2)
        return fn(input, diagonal)

    run.__doc__ = f"{name}(input, diagonal=0): keep one triangle of the last two dims, zero the rest."
    op(name, P("input", "tensor"), P("diagonal", "int", 0))(run)


_triangle("tril", torch.tril)
_triangle("triu", torch.triu)


@op("diag", P("input", "tensor"), P("diagonal", "int", 0))
def diag(ctx, input, diagonal):
    """diag(input, diagonal=0): 1-D -> a diagonal matrix; 2-D -> its diagonal as 1-D."""
    need_rank("diag", "input", input, 1, 2)
    return torch.diag(input, diagonal)


@op("narrow", P("input", "tensor"), P("dim", "int"), P("start", "int"), P("length", "int"))
def narrow(ctx, input, dim, start, length):
    """narrow(input, dim, start, length): elements start..start+length-1 along dim (a view)."""
    _at_least("narrow", "input", input, 1)
    need_dim("narrow", input, dim)
    size = input.shape[dim]
    if not -size <= start <= size:
        raise _shape_fault("narrow", f"'start' {start} is out of range for size {size} (dim {dim})", "start")
    if start < 0:
        start += size
    if length < 0 or start + length > size:
        raise _shape_fault("narrow", f"start {start} + length {length} exceeds size {size} of dim {dim}",
                           "length")
    return torch.narrow(input, dim, start, length)


@op("slice", P("input", "tensor"), P("dim", "int"), P("start", "int?", None), P("end", "int?", None),
    P("step", "int", 1))
def slice_(ctx, input, dim, start, end, step):
    """slice(input, dim, start=None, end=None, step=1): input[start:end:step] along dim, as in Python."""
    _at_least("slice", "input", input, 1)
    need_dim("slice", input, dim)
    if step == 0:
        raise _arg_fault("slice", "'step' must not be 0", "step")
    size, lead = input.shape[dim], (slice(None),) * (dim % input.dim())
    r = range(*slice(start, end, step).indices(size))
    if step > 0:
        return input[lead + (slice(r.start, r.stop, step),)]
    if not r:
        return input.narrow(dim, 0, 0)
    # torch has no negative strides: index the flipped tensor forwards instead (a copy).
    first = size - 1 - r.start
    return torch.flip(input, (dim,))[lead + (slice(first, first + (len(r) - 1) * -step + 1, -step),)]
