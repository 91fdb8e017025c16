"""Ops on adopted `torch.nn.Module` objects (handed over through the embedded pythonia hatch,
docs/python-hatch.md). A handle may hold a module; tensor ops refuse it with E_ARG, these
two take it."""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from .registry import P, op

_LISTED = 20  # parameter names an error message shows before "…"


def _module(name: str, param: str, obj) -> torch.nn.Module:
    if isinstance(obj, torch.nn.Module):
        return obj
    raise RuntimeFault("E_ARG", f"{name}: argument '{param}' must be an adopted torch.nn.Module; the handle "
                       f"holds a {type(obj).__name__}", param=param)


@op("module_forward", P("module", "object"), P("inputs", "tensors"))
def module_forward(ctx, module, inputs):
    """module_forward(module, inputs): module(*inputs), which must return one tensor.
    Forward only: no autograd graph is kept."""
    m = _module("module_forward", "module", module)
    with torch.no_grad():
        out = m(*inputs)
    if not isinstance(out, torch.Tensor):
        raise RuntimeFault("E_ARG", f"module_forward: {type(m).__name__} returned a {type(out).__name__}, "
                           "not a tensor; only modules that return one tensor can be called", param="module")
    return out


@op("module_param", P("module", "object"), P("name", "str"))
def module_param(ctx, module, name):
    """module_param(module, name): the named parameter (e.g. 'weight', '0.bias'), sharing the
    module's memory: an in-place op on it changes the module."""
    m = _module("module_param", "module", module)
    params = dict(m.named_parameters())
    p = params.get(name)
    if p is None:
        names = list(params)
        shown = ", ".join(names[:_LISTED]) + (f", … ({len(names)} in all)" if len(names) > _LISTED else "")
        raise RuntimeFault("E_ARG", f"module_param: {type(m).__name__} has no parameter {name!r}; it has "
                           f"{shown or 'none'}", param="name")
    return p.detach()
