"""Sorting and top-k along one dimension. Indices come back as i64."""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from .checks import need_dim
from .registry import P, op


@op("topk", P("input", "tensor"), P("k", "int"), P("dim", "int", -1), P("largest", "bool", True),
    P("sorted", "bool", True), outputs=2)
def topk(ctx, input, k, dim, largest, sorted):
    """topk(input, k, dim=-1, largest=True, sorted=True) -> (values, indices)."""
    need_dim("topk", input, dim)
    size = input.shape[dim] if input.dim() else 1
    if not 0 <= k <= size:
        raise RuntimeFault("E_ARG", f"topk: 'k' must be between 0 and {size} (the size of dim {dim} of shape "
                           f"{list(input.shape)}), got {k}", param="k")
    values, indices = torch.topk(input, k, dim=dim, largest=largest, sorted=sorted)
    return values, indices


@op("sort", P("input", "tensor"), P("dim", "int", -1), P("descending", "bool", False),
    P("stable", "bool", False), outputs=2)
def sort(ctx, input, dim, descending, stable):
    """sort(input, dim=-1, descending=False, stable=False) -> (values, indices)."""
    need_dim("sort", input, dim)
    values, indices = torch.sort(input, dim=dim, descending=descending, stable=stable)
    return values, indices


@op("argsort", P("input", "tensor"), P("dim", "int", -1), P("descending", "bool", False),
    P("stable", "bool", False))
def argsort(ctx, input, dim, descending, stable):
    """argsort(input, dim=-1, descending=False, stable=False): the indices that sort input."""
    need_dim("argsort", input, dim)
    return torch.argsort(input, dim=dim, descending=descending, stable=stable)
