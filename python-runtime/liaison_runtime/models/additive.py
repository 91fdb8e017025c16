"""The additive model of a `{"kind": "additive"}` spec: Liao & Kyrillidis's toy partition model,
https://proceedings.mlr.press/v237/liao24a.html."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import RuntimeFault
from .base import Described


class Additive(Described, nn.Module):
    """Row i of the input is [a1_i, a2_i] (B, linear + relu); the output (B, 1) is
    a1_i . x + ReLU(a2_i . u), so that over the rows of A1 and A2 it is h = A1 x + ReLU(A2 u).

    The parameters are `x` (linear,) — the part in which a squared loss is strongly convex when
    A1 has full column rank — and `u` (relu,), the non-convex part coupled in through A2. Both
    start as N(0, 1/d) draws of their own width d: `u` must not start at 0, where ReLU(A2 u)
    and its gradient in u both vanish."""

    spec_kind = "additive"

    def __init__(self, linear: int, relu: int):
        super().__init__()
        self.x = nn.Parameter(torch.randn(linear) / math.sqrt(linear))
        self.u = nn.Parameter(torch.randn(relu) / math.sqrt(relu))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        d1, d2 = self.x.shape[0], self.u.shape[0]
        if rows.dim() != 2 or rows.shape[1] != d1 + d2:
            raise RuntimeFault("E_SHAPE", f"model_forward: the additive model takes (B, {d1 + d2}) rows [a1, a2] "
                               f"(linear {d1} + relu {d2}), got shape {list(rows.shape)}", param="inputs")
        a1, a2 = rows[:, :d1], rows[:, d1:]
        return (a1 @ self.x + torch.relu(a2 @ self.u)).unsqueeze(1)  # (B, 1), as a regression MLP's
