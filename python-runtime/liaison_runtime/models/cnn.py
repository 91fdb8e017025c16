"""The small convolutional classifier of a `{"kind": "cnn"}` spec."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuntimeFault
from .base import Described


class CNN(Described, nn.Module):
    """(B, C, H, W), or (B, C*H*W) flat (sklearn's digits), -> (B, classes) logits.

    Per entry of `channels`: a conv (`convs.i`, padding 'same') + ReLU + 2x2 max-pool, then
    flatten, `fc` (hidden) + ReLU, `head` (classes)."""

    spec_kind = "cnn"

    def __init__(self, in_channels: int, image: list[int], channels: list[int], kernel: int, hidden: int,
                 classes: int):
        super().__init__()
        self.in_channels, self.image = in_channels, tuple(image)
        chans = [in_channels, *channels]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, kernel, padding="same") for a, b in zip(chans, chans[1:],
                                                                                        strict=False))
        h, w = image
        for _ in channels:
            h, w = h // 2, w // 2
        self.fc = nn.Linear(channels[-1] * h * w, hidden)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, (h, w) = self.in_channels, self.image
        if x.dim() == 2 and x.shape[1] == c * h * w:
            x = x.reshape(x.shape[0], c, h, w)  # flat features, row-major as sklearn stores images
        if x.dim() != 4 or tuple(x.shape[1:]) != (c, h, w):
            raise RuntimeFault("E_SHAPE", f"model_forward: the cnn takes (B, {c}, {h}, {w}) or (B, {c * h * w}) "
                               f"inputs, got shape {list(x.shape)}", param="inputs")
        for conv in self.convs:
            x = F.max_pool2d(F.relu(conv(x)), 2)
        return self.head(F.relu(self.fc(x.flatten(1))))
