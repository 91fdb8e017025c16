"""Parameters the Trainer optimizes that are not the model's own (a plugin's scores, a low-rank
adapter's factors), and freezing: whether a tensor gets a gradient, the gradient itself, and
dropping it between steps (sdk/trainer-params.ts)."""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from .registry import FLOATS, P, op


@op("set_requires_grad", P("input", "tensor"), P("flag", "bool", True), outputs=0)
def set_requires_grad(ctx, input, flag):
    """set_requires_grad(input, flag=True): whether backward computes a gradient for this tensor.

    For leaves only (a model's parameter, a tensor made by a factory op): false freezes it, and
    backward then skips the work of its gradient. Its gradient is dropped either way."""
    if input.grad_fn is not None:
        raise RuntimeFault("E_ARG", "set_requires_grad: 'input' was computed from other tensors (it has a "
                           "gradient function); only a leaf (a parameter, or a tensor made by a factory op such "
                           "as zeros or randn) can be made to require a gradient or not", param="input")
    if flag and input.dtype not in FLOATS:
        raise RuntimeFault("E_DTYPE", f"set_requires_grad: only floating tensors can require a gradient, got "
                           f"{input.dtype}", param="input")
    input.requires_grad_(flag)
    input.grad = None
    return ()


@op("grad_of", P("input", "tensor"))
def grad_of(ctx, input):
    """grad_of(input): the gradient backward left on this leaf (zeros when it has none)."""
    return input.grad if input.grad is not None else torch.zeros_like(input, requires_grad=False)


@op("clear_grads", P("tensors", "tensors"), outputs=0)
def clear_grads(ctx, tensors):
    """clear_grads(tensors): drop each tensor's gradient (set to None), as zero_grad does for a model."""
    for t in tensors:
        t.grad = None
    return ()
