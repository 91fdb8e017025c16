"""Mixture-of-experts layer whose routing is a hook.

The router is whatever the client installs with `model_hook(model, 'router', hook, {form})`:
a callable `hook([x, *params])` returning the route in one of three forms (hooks.py,
docs/protocol.md "Hook points"), typically a program traced from TypeScript:

- 'weights' (token choice): [weights (N, E), aux, zloss, probs] (or the older [weights, aux]);
- 'indices' (expert choice): [indices (E, C) int, gates (E, C), aux, zloss, probs];
- 'slots' (Soft MoE): [dispatch (N, E, S), combine (N, E, S), aux, zloss, probs].

The layer owns the router's parameters (declared in the spec, so they train with the model
and appear in `named_parameters`), the experts, and the dispatch. The experts run batched
(moe_dispatch.py: grouped by expert on a CPU, one batched matmul over their stacked weights
on an accelerator) unless the spec says `batched: false` or an expert's Linear carries a
hook, which only its own forward runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuntimeFault

# the experts' activations by spec name (a GPT's feed-forward keeps GELU)
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}

FORMS = ("weights", "indices", "slots")
# what a routing program returns, by form: the form's own tensors, then aux, zloss, probs
OUTPUTS = {
    "weights": ("weights (N, E)", "aux ()", "zloss ()", "probs (N, E) or (0,)"),
    "indices": ("indices (E, C) i64", "gates (E, C)", "aux ()", "zloss ()", "probs (N, E) or (0,)"),
    "slots": ("dispatch (N, E, S)", "combine (N, E, S)", "aux ()", "zloss ()", "probs (N, E) or (0,)"),
}


class FeedForward(nn.Module):
    """The 2-layer MLP of a transformer block (GELU, biases, back to `dim`), and of each
    expert: `fc` (hidden, dim), the activation, then `proj` (out, hidden)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0, out: int | None = None,
                 activation: str = "gelu", bias: bool = True):
        super().__init__()
        self.fc = nn.Linear(dim, hidden, bias=bias)
        self.proj = nn.Linear(hidden, dim if out is None else out, bias=bias)
        self.dropout = dropout
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(self.proj(ACTIVATIONS[self.activation](self.fc(x))), self.dropout, self.training)


def init_param(shape: list[int], init: str, scale: float | None) -> torch.Tensor:
    """A router parameter's initial value. normal: std (default 0.02); uniform: ±bound
    (default 1/sqrt(shape[0]), the fan-in rule of nn.Linear); zeros; ones."""
    t = torch.empty(shape)
    if init == "normal":
        return nn.init.normal_(t, 0.0, 0.02 if scale is None else scale)
    if init == "uniform":
        bound = (1.0 / math.sqrt(shape[0]) if shape and shape[0] else 1.0) if scale is None else scale
        return nn.init.uniform_(t, -bound, bound)
    return t.fill_(0.0 if init == "zeros" else 1.0)


class Router(nn.Module):
    """Holds the router parameters, in the spec's declared order (the order the hook gets)."""

    def __init__(self, params: dict[str, torch.Tensor]):
        super().__init__()
        for name, value in params.items():
            self.register_parameter(name, nn.Parameter(value))


@dataclass
class Route:
    """One forward's routing: `a`, `b` the form's tensors (weights and None; indices and
    gates; dispatch and combine), aux and zloss 0-d (autograd intact), probs (N, E) or None."""

    form: str
    a: torch.Tensor
    b: torch.Tensor | None
    aux: torch.Tensor
    zloss: torch.Tensor
    probs: torch.Tensor | None

    def detached(self) -> Route:
        b, probs = (None if t is None else t.detach() for t in (self.b, self.probs))
        return Route(self.form, self.a.detach(), b, self.aux.detach(), self.zloss.detach(), probs)


class MoE(nn.Module):
    """(…, D) -> (…, out): the experts' outputs mixed as the router's route says."""

    def __init__(self, dim: int, hidden: int, experts: int, params: dict[str, torch.Tensor], out: int | None = None,
                 activation: str = "gelu", bias: bool = True, batched: bool = True):
        super().__init__()
        self.out = dim if out is None else out
        self.experts = nn.ModuleList(FeedForward(dim, hidden, 0.0, self.out, activation, bias) for _ in range(experts))
        self.router = Router(params)
        self.batched = batched
        # plain attributes (not submodules): a hook is the client's object, not part of the model
        self.__dict__["hook"] = None
        self.__dict__["form"] = "weights"
        self.__dict__["last_aux"] = None
        self.__dict__["last_zloss"] = None
        self.__dict__["last_route"] = None  # (the last forward's Route, detached; its N): stats() reads it
        self.label = "moe"  # the layer's name in the model, for error messages (set by the model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .moe_dispatch import batched_ok, dispatch

        hook = self.__dict__["hook"]
        if hook is None:
            raise RuntimeFault("E_ARG", f"model_forward: MoE layer {self.label} has no router; install one with "
                               "model_hook(model, 'router', hook)", param="model")
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, D)
        route = self._route(hook, flat)
        out = dispatch(self, flat, route, self.batched and batched_ok(self))
        self.__dict__["last_aux"] = route.aux
        self.__dict__["last_zloss"] = route.zloss
        # kept for stats(), computed only when asked (a decode step need not pay for them)
        self.__dict__["last_route"] = (route.detached(), flat.shape[0])
        return out.reshape(*shape[:-1], self.out)

    def stats(self) -> dict[str, torch.Tensor] | None:
        """moe_dispatch.stats() of the last forward's route (None before the first forward)."""
        from .moe_dispatch import stats

        last = self.__dict__["last_route"]
        if last is None:
            return None
        with torch.no_grad():
            return stats(last[0], last[1], len(self.experts))

    def _route(self, hook, flat: torch.Tensor) -> Route:
        n, e, form = flat.shape[0], len(self.experts), self.__dict__["form"]
        got = hook([flat, *self.router.parameters()])
        who = f"the router hook of {self.label} (form '{form}')"
        sizes = (2, 4) if form == "weights" else (5,)
        if not isinstance(got, (list, tuple)) or len(got) not in sizes or \
                not all(isinstance(t, torch.Tensor) for t in got):
            raise RuntimeFault("E_ARG", f"model_forward: {who} must return [{', '.join(OUTPUTS[form])}], got "
                               f"{_kinds(got)}", param="hook")
        if form == "weights" and len(got) == 2:  # the 2-output convention of routers before forms
            got = [got[0], got[1], got[1].new_zeros(()), got[0].new_zeros(0)]
        k = 1 if form == "weights" else 2
        a, b = got[0], got[1] if k == 2 else None
        aux, zloss, probs = got[k:]

        def fault(what: str, t: torch.Tensor, want: str):
            return RuntimeFault("E_SHAPE", f"model_forward: {who} returned {what} of shape {list(t.shape)} "
                                f"({t.dtype}); expected {want}", param="hook")

        if form == "weights":
            if list(a.shape) != [n, e] or not a.is_floating_point():
                raise fault("weights", a, f"float [{n}, {e}] (tokens, experts)")
        elif form == "indices":
            if a.dim() != 2 or a.shape[0] != e or a.is_floating_point() or a.dtype == torch.bool:
                raise fault("indices", a, f"an integer [{e}, C] (experts, slots)")
            if list(b.shape) != list(a.shape) or not b.is_floating_point():
                raise fault("gates", b, f"float {list(a.shape)}, the shape of indices")
            if a.numel():
                lo, hi = torch.aminmax(a)
                lo, hi = int(lo), int(hi)  # one sync: an index out of range would be a device assert on CUDA
                if lo < 0 or hi >= n:
                    raise RuntimeFault("E_ARG", f"model_forward: {who} returned indices from {lo} to {hi}; "
                                       f"tokens are 0..{n - 1}", param="hook")
            a = a.long()
        else:
            if a.dim() != 3 or list(a.shape[:2]) != [n, e] or a.shape[2] < 1 or not a.is_floating_point():
                raise fault("dispatch", a, f"float [{n}, {e}, S] (tokens, experts, slots per expert)")
            if b.shape != a.shape or not b.is_floating_point():
                raise fault("combine", b, f"float {list(a.shape)}, the shape of dispatch")
        for name, t in (("aux", aux), ("zloss", zloss)):
            if t.dim() != 0 or not t.is_floating_point():
                raise fault(name, t, "a 0-d float loss")
        if probs.numel() == 0:
            probs = None
        elif list(probs.shape) != [n, e] or not probs.is_floating_point():
            raise fault("probs", probs, f"float [{n}, {e}] or an empty (0,)")
        dt = flat.dtype
        return Route(form, a if form == "indices" else a.to(dt), None if b is None else b.to(dt), aux, zloss, probs)


def _kinds(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(f"tensor {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
                               for t in v) + "]"
    return type(v).__name__
