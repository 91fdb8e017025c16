"""Mixture-of-experts feed-forward layer whose routing is a hook.

The router is whatever the client installs with `model_hook(model, 'router', hook)`: a
callable `hook([x, *params]) -> [weights, aux]`, typically a program traced from
TypeScript. The layer owns the router's parameters (declared in the spec, so they train
with the model and appear in `named_parameters`), the experts, and the dispatch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuntimeFault

# the experts' activations by spec name (a GPT's feed-forward keeps GELU)
ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


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


class MoE(nn.Module):
    """(B, T, D) -> (B, T, D): sum over experts e of weights[:, e] * expert_e(x), each
    expert run only on the tokens whose weight for it is nonzero."""

    def __init__(self, dim: int, hidden: int, experts: int, params: dict[str, torch.Tensor], out: int | None = None,
                 activation: str = "gelu", bias: bool = True, batched: bool = True):
        super().__init__()
        self.out = dim if out is None else out
        self.experts = nn.ModuleList(FeedForward(dim, hidden, 0.0, self.out, activation, bias) for _ in range(experts))
        self.batched = batched
        self.router = Router(params)
        # plain attributes (not submodules): a hook is the client's object, not part of the model
        self.__dict__["hook"] = None
        self.__dict__["last_aux"] = None
        self.label = "moe"  # the layer's name in the model, for error messages (set by the model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hook = self.__dict__["hook"]
        if hook is None:
            raise RuntimeFault("E_ARG", f"model_forward: MoE layer {self.label} has no router; install one with "
                               "model_hook(model, 'router', hook)", param="model")
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, D)
        weights, aux = self._route(hook, flat)
        out = flat.new_zeros(flat.shape[0], self.out)
        for e, expert in enumerate(self.experts):
            # tokens this expert serves; the index carries no gradient, the weights do
            idx = weights[:, e].nonzero().squeeze(1)  # (n_e,)
            if idx.numel():
                out = out.index_add(0, idx, weights[idx, e:e + 1] * expert(flat[idx]))
        self.__dict__["last_aux"] = aux
        return out.reshape(*shape[:-1], self.out)

    def _route(self, hook, flat: torch.Tensor):
        n, e = flat.shape[0], len(self.experts)
        got = hook([flat, *self.router.parameters()])
        who = f"the router hook of {self.label}"
        if not isinstance(got, (list, tuple)) or len(got) != 2 or not all(isinstance(t, torch.Tensor) for t in got):
            raise RuntimeFault("E_ARG", f"model_forward: {who} must return [weights (N, E), aux (0-d)], got "
                               f"{_kinds(got)}", param="hook")
        weights, aux = got
        if list(weights.shape) != [n, e] or not weights.is_floating_point():
            raise RuntimeFault("E_SHAPE", f"model_forward: {who} returned weights of shape {list(weights.shape)} "
                               f"({weights.dtype}); expected float [{n}, {e}] (tokens, experts)", param="hook")
        if aux.dim() != 0 or not aux.is_floating_point():
            raise RuntimeFault("E_SHAPE", f"model_forward: {who} returned aux of shape {list(aux.shape)} "
                               f"({aux.dtype}); expected a 0-d float loss", param="hook")
        return weights.to(flat.dtype), aux


def _kinds(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(f"tensor {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
                               for t in v) + "]"
    return type(v).__name__
