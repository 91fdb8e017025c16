"""Rotary position embedding (RoPE, Su et al. 2021, https://arxiv.org/abs/2104.09864), in the
half-split "rotate_half" form of GPT-NeoX and Llama: the head dim D is two halves
(x1, x2) and pair i = (x1[i], x2[i]) is rotated by the angle pos * base^(-2i/D).

Pure functions on (B, H, T, D) tensors. A rotation by p then by d is a rotation by p + d,
and q·k of rotated vectors depends only on their distance. Angles are computed in float32
from int64 positions on every call (no table bound to a length), which is what lets cached
decoding run past the trained context.
"""

from __future__ import annotations

import torch

_SPEEDS: dict[tuple, torch.Tensor] = {}


def inv_freq(d: int, base: float, device) -> torch.Tensor:
    """(D/2,) float32 angular speeds base^(-2i/D), i = 0 .. D/2-1 (made once per d, base, device:
    a decoding step asks for them in every layer)."""
    key = (d, float(base), str(device))
    if key not in _SPEEDS:
        _SPEEDS[key] = base ** (-torch.arange(0, d, 2, device=device, dtype=torch.float32) / d)
    return _SPEEDS[key]


def cos_sin(pos: torch.Tensor, d: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """pos (...) int64 -> cos, sin (..., D) float32, each half repeated for rotate_half."""
    ang = pos.to(torch.float32)[..., None] * inv_freq(d, base, pos.device)  # (..., D/2)
    ang = torch.cat([ang, ang], -1)  # (..., D)
    return ang.cos(), ang.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) along the last dim."""
    x1, x2 = x.chunk(2, -1)
    return torch.cat([-x2, x1], -1)


def turn(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) rotated by the angles of `cos_sin` (broadcast over x) -> x's dtype."""
    xf = x.to(torch.float32)
    return (xf * cos + rotate_half(xf) * sin).to(x.dtype)


def apply_rope(x: torch.Tensor, pos: torch.Tensor, base: float) -> torch.Tensor:
    """x (B, H, T, D) rotated by its positions pos (B|1, H|1, T) int64 -> (B, H, T, D), x's dtype."""
    cos, sin = cos_sin(pos, x.shape[-1], base)  # (B|1, H|1, T, D)
    return turn(x, cos, sin)
