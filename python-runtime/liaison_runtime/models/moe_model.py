"""The standalone mixture of experts of a `{"kind": "moe"}` spec: one MoE layer as the whole
model, y = Σ_e route(x)_e · proj_e(act(fc_e(x))), as the soft-routed MoE of "Guided by the
Experts" (teacher and student alike). It is the MoE layer of a GPT (models/moe.py), so it has
the same router hook point, batched experts and router statistics."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import RuntimeFault
from .base import Described
from .moe import MoE


class MoEModel(Described, nn.Module):
    """(B, inputs) -> (B, outputs). Parameters `moe.experts.<e>.fc.weight` (hidden, inputs),
    `moe.experts.<e>.proj.weight` (outputs, hidden) (and their biases with `bias`),
    `moe.router.<name>`, and `output_bias` (outputs,) with `output_bias`."""

    spec_kind = "moe"

    def __init__(self, inputs: int, outputs: int, experts: int, hidden: int, params: dict[str, torch.Tensor],
                 activation: str, bias: bool, output_bias: bool, batched: bool):
        super().__init__()
        self.moe = MoE(inputs, hidden, experts, params, outputs, activation, bias, batched)
        self.output_bias = nn.Parameter(torch.zeros(outputs)) if output_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.moe.experts[0].fc.in_features
        if x.dim() < 1 or x.shape[-1] != d:
            raise RuntimeFault("E_SHAPE", f"model_forward: the moe model takes (B, {d}) inputs, got shape "
                               f"{list(x.shape)}", param="inputs")
        y = self.moe(x)
        return y if self.output_bias is None else y + self.output_bias
