"""Sorting and top-k along one dimension (indices come back as i64) — k fixed, or a share of the
size (topk_frac) — and the straight-through top-k mask."""

from __future__ import annotations

import math

import torch

from ..errors import RuntimeFault
from .checks import need_dim, need_float
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


@op("topk_frac", P("input", "tensor"), P("frac", "float"), P("div", "int", 1), P("dim", "int", -1),
    P("largest", "bool", True), P("sorted", "bool", True), outputs=2)
def topk_frac(ctx, input, frac, div, dim, largest, sorted):
    """topk_frac(input, frac, div=1, dim=-1, largest=True, sorted=True) -> (values, indices): topk
    with k = min(n, ⌈n·frac/div⌉) for n = input.shape[dim], the size this call's input has.

    k follows the input's size at every run, so a traced program (a size it never sees) can
    keep a share of it: expert choice's C = ⌈c·N/E⌉ tokens per expert is frac = c, div = E.
    k is computed in float64 in the order (n·frac)/div, as a caller writing ⌈c·N/E⌉ does."""
    need_dim("topk_frac", input, dim)
    if not (math.isfinite(frac) and frac >= 0):
        raise RuntimeFault("E_ARG", f"topk_frac: 'frac' must be a finite number >= 0, got {frac}", param="frac")
    if div < 1:
        raise RuntimeFault("E_ARG", f"topk_frac: 'div' must be an integer >= 1, got {div}", param="div")
    n = input.shape[dim] if input.dim() else 1
    share = n * frac / div  # inf for a huge frac: then every entry
    k = n if share >= n else math.ceil(share)
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


class _TopKMask(torch.autograd.Function):
    """Forward: 0/1 at the k largest of `mag` (flattened; topk's indices scattered, so ties
    never keep more than k); backward: the gradient unchanged, as hidden-networks' GetSubnet."""

    @staticmethod
    def forward(fctx, mag, k):
        flat = torch.zeros(mag.numel(), dtype=mag.dtype, device=mag.device)
        flat.scatter_(0, mag.reshape(-1).topk(k, sorted=False).indices, 1.0)
        return flat.view_as(mag)

    @staticmethod
    def backward(fctx, g):
        return g, None


@op("topk_mask", P("scores", "tensor"), P("k", "int"), P("abs", "bool", True))
def topk_mask(ctx, scores, k, abs):
    """topk_mask(scores, k, abs=True): 0/1 as scores, 1 at its k largest (|scores| if abs); grad straight through.

    Exactly k ones over all entries (not along a dim). The gradient reaches scores unchanged,
    or g·sign(scores) when abs: edge-popup's straight-through estimator in one op."""
    need_float("topk_mask", "scores", scores)
    n = scores.numel()
    if not 1 <= k <= n:
        raise RuntimeFault("E_ARG", f"topk_mask: 'k' must be between 1 and {n} (the entries of 'scores' "
                           f"{list(scores.shape)}), got {k}", param="k")
    # abs outside the Function: autograd's own abs backward gives g·sign(s), as the baseline's s.abs()
    return _TopKMask.apply(scores.abs() if abs else scores, k)
