"""Weight hooks: a module's forward uses `hook([weight])[0]` in place of its stored weight.

Why forward hooks and not torch.nn.utils.parametrize: parametrize moves the stored weight
to `<module>.parametrizations.weight.original`, so `named_parameters()` and `state_dict()`
change names the moment a hook is installed — and those names are what checkpoints,
`model_param`/`model_grad`, the Trainer's optimizer slots and the client's cached model
description hold. Here the stored weight stays the module's `weight` Parameter, untouched:
a forward pre-hook computes the weight the forward uses and shadows the attribute for that
one call (an instance `__dict__` entry wins over nn.Module's parameter lookup), and a
forward hook registered with `always_call=True` removes the shadow even when the forward
raises. Autograd runs through the program, so gradients reach the stored weight (if it
requires grad) and every tensor the program captured (scores, low-rank factors).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import RuntimeFault

# the modules whose forward reads `self.weight` once, as the layer's weight
WEIGHT_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

_KEY = "_liaison_weight_hook"  # module.__dict__ entry: (hook, pre-handle, post-handle)


def _kinds(got) -> str:
    if isinstance(got, (list, tuple)):
        return f"{len(got)} values"
    return f"a {type(got).__name__}"


def install_weight_hook(module: nn.Module, name: str, hook) -> None:
    """Replace the module's weight hook (if any) with `hook`."""
    remove_weight_hook(module)

    def pre(mod, _args):
        w = mod._parameters["weight"]
        got = hook([w])
        if not isinstance(got, (list, tuple)) or len(got) != 1 or not isinstance(got[0], torch.Tensor):
            raise RuntimeFault("E_ARG", f"model_forward: the weight hook of {name} must return [weight], got "
                               f"{_kinds(got)}", param="hook")
        out = got[0]
        if out.shape != w.shape or out.dtype != w.dtype:
            raise RuntimeFault("E_SHAPE", f"model_forward: the weight hook of {name} returned a weight of shape "
                               f"{list(out.shape)} ({out.dtype}); the stored weight is {list(w.shape)} ({w.dtype}) "
                               "and the forward needs the same", param="hook")
        mod.__dict__["weight"] = out

    def post(mod, _args, _out):
        mod.__dict__.pop("weight", None)

    h1 = module.register_forward_pre_hook(pre)
    h2 = module.register_forward_hook(post, always_call=True)
    module.__dict__[_KEY] = (hook, h1, h2)


def remove_weight_hook(module: nn.Module) -> None:
    old = module.__dict__.pop(_KEY, None)
    if old is not None:
        old[1].remove()
        old[2].remove()
    module.__dict__.pop("weight", None)

