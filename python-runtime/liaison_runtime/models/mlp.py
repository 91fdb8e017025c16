"""The multilayer perceptron of a `{"kind": "mlp"}` spec."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuntimeFault
from .base import Described

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLP(Described, nn.Module):
    """(B, sizes[0]) -> (B, sizes[-1]). Linear layers are `layers.0`, `layers.1`, …; the
    activation after hidden layer i is the module `acts.i`, so it can be captured by name."""

    spec_kind = "mlp"

    def __init__(self, sizes: list[int], activation: str = "relu", bias: bool = True, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b, bias=bias) for a, b in zip(sizes, sizes[1:], strict=False))
        self.acts = nn.ModuleList(ACTIVATIONS[activation]() for _ in sizes[2:])
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_in = self.layers[0].in_features
        if x.dim() < 1 or x.shape[-1] != n_in:
            raise RuntimeFault("E_SHAPE", f"model_forward: the mlp takes (B, {n_in}) inputs, got shape "
                               f"{list(x.shape)}", param="inputs")
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.acts):
                x = self.acts[i](x)
                if self.dropout:
                    x = F.dropout(x, self.dropout, self.training)
        return x
