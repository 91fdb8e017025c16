"""Output hooks: a module's forward returns `hook([x, y])[0]` in place of its output y.

The program sees the module's input x (as its forward got it) and its output y, and returns
what the rest of the model gets instead of y — an adapter adds its side path to y there
(y + scale·B·A·x). It is a plain torch forward hook, so autograd runs through the program:
the tensors it captured (low-rank factors, gates) get gradients, and nothing about the
module's parameters changes (their names, the state_dict, what checkpoints hold). It
composes with a weight hook on the same module (models/weights.py): that one changes the
weight y is computed with; this one changes y afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import RuntimeFault
from .weights import _kinds

_KEY = "_liaison_output_hook"  # module.__dict__ entry: (hook, handle)


def install_output_hook(module: nn.Module, name: str, hook) -> None:
    """Replace the module's output hook (if any) with `hook`."""
    remove_output_hook(module)

    def post(mod, args, kwargs, y):
        # x is the input nn.Linear / nn.Conv*d's forward takes: positional, or by its name 'input'
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor):
            raise RuntimeFault("E_ARG", f"model_forward: {name} was called with no input tensor as its first "
                               f"argument or as 'input' (keywords {sorted(kwargs)}), so its output hook has no x",
                               param="hook")
        got = hook([x, y])
        if not isinstance(got, (list, tuple)) or len(got) != 1 or not isinstance(got[0], torch.Tensor):
            raise RuntimeFault("E_ARG", f"model_forward: the output hook of {name} must return [output], got "
                               f"{_kinds(got)}", param="hook")
        out = got[0]
        # shapes and dtypes are known without a sync: the check costs nothing per forward
        if out.shape != y.shape or out.dtype != y.dtype:
            raise RuntimeFault("E_SHAPE", f"model_forward: the output hook of {name} returned shape "
                               f"{list(out.shape)} ({out.dtype}); the module's output is {list(y.shape)} "
                               f"({y.dtype}) and the model needs the same", param="hook")
        return out

    handle = module.register_forward_hook(post, with_kwargs=True)
    module.__dict__[_KEY] = (hook, handle)


def remove_output_hook(module: nn.Module) -> None:
    old = module.__dict__.pop(_KEY, None)
    if old is not None:
        old[1].remove()
