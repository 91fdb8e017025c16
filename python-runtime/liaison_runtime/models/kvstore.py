"""Slot storage of a KV cache: the keys or values of C slots per (batch row, head), held as
they are (bits 32: the model's dtype) or quantized group-wise (bits 8 or 4).

Quantized storage follows KIVI / FlexGen's asymmetric group-wise scheme (Liu et al. 2024,
https://arxiv.org/abs/2402.02750; Sheng et al. 2023, https://arxiv.org/abs/2303.06865):
each (token, head) vector is split along D into groups of `group` values; per group a
minimum and a scale (both f16) map the values to integer codes in [0, 2^bits - 1]. 4-bit
codes are packed two per byte along D (element 2i in the low nibble, 2i+1 in the high one).
A value comes back within half a scale step of what was written (plus the f16 rounding of
the minimum and the scale).

A stored tensor is a list of "parts", each (B, H, C, E) with the slots on dim 2, so writing
a slot, zeroing one or gathering a set of them is the same indexing whatever the bits.
"""

from __future__ import annotations

import torch


def _levels(bits: int) -> int:
    return (1 << bits) - 1


def encode(x: torch.Tensor, bits: int, group: int) -> list[torch.Tensor]:
    """x (B, H, T, D) -> its parts: [x] at bits 32, else [codes (B,H,T,D or D/2) u8,
    scale (B,H,T,G) f16, minimum (B,H,T,G) f16] with G = D / group."""
    if bits == 32:
        return [x]
    *lead, d = x.shape
    g = x.to(torch.float32).reshape(*lead, d // group, group)  # (B, H, T, G, group)
    lo, hi = g.amin(-1), g.amax(-1)  # (B, H, T, G)
    mn = lo.to(torch.float16)
    scale = ((hi - mn.float()) / _levels(bits)).to(torch.float16)
    # quantize against the f16 values actually stored, so decoding undoes exactly this
    codes = ((g - mn.float()[..., None]) / scale.float().clamp_min(1e-12)[..., None]).round()
    codes = codes.clamp_(0, _levels(bits)).to(torch.uint8).reshape(*lead, d)
    if bits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)  # (B, H, T, D/2)
    return [codes, scale, mn]


def decode(parts: list[torch.Tensor], bits: int, group: int, dtype: torch.dtype) -> torch.Tensor:
    """The parts of `encode` -> (B, H, T, D) in `dtype`."""
    if bits == 32:
        return parts[0]
    codes, scale, mn = parts
    if bits == 4:
        codes = torch.stack([codes & 15, codes >> 4], -1).flatten(-2)  # (B, H, T, D)
    *lead, d = codes.shape
    g = codes.to(torch.float32).reshape(*lead, d // group, group)
    return (g * scale.float()[..., None] + mn.float()[..., None]).reshape(*lead, d).to(dtype)


def alloc(b: int, h: int, c: int, d: int, bits: int, group: int, dtype: torch.dtype, device) -> list[torch.Tensor]:
    """Empty parts for C slots (zeros, which decode to zeros)."""
    if bits == 32:
        return [torch.zeros(b, h, c, d, dtype=dtype, device=device)]
    width = d if bits == 8 else d // 2
    return [torch.zeros(b, h, c, width, dtype=torch.uint8, device=device),
            torch.zeros(b, h, c, d // group, dtype=torch.float16, device=device),
            torch.zeros(b, h, c, d // group, dtype=torch.float16, device=device)]


def write_at(parts: list[torch.Tensor], new: list[torch.Tensor], slot: int) -> None:
    """Slots slot .. slot+T-1 of every (b, h) := new (B, H, T, E) parts."""
    for p, n in zip(parts, new, strict=True):
        p[:, :, slot:slot + n.shape[2]] = n


def scatter(parts: list[torch.Tensor], new: list[torch.Tensor], idx: torch.Tensor) -> None:
    """Slot idx[b, h, j] of (b, h) := new[b, h, j] for idx (B, H, T) i64, new (B, H, T, E) parts."""
    for p, n in zip(parts, new, strict=True):
        p.scatter_(2, idx[..., None].expand(-1, -1, -1, p.shape[-1]), n)


def clear(parts: list[torch.Tensor], idx: torch.Tensor, where: torch.Tensor | None = None) -> None:
    """Zero slots idx (B, H, m) i64 (an empty slot holds zeros); with `where` (B, H, 1) bool,
    only in the (b, h) where it is True (the others are written back as they are)."""
    for p in parts:
        wide = idx[..., None].expand(-1, -1, -1, p.shape[-1])
        zero = torch.zeros((), dtype=p.dtype, device=p.device)
        p.scatter_(2, wide, zero.expand(wide.shape) if where is None else
                   torch.where(where[..., None], zero, p.gather(2, wide)))


def gather(parts: list[torch.Tensor], idx: torch.Tensor) -> list[torch.Tensor]:
    """The slots idx (B, H, n) i64 of each (b, h), in that order -> parts (B, H, n, E)."""
    return [p.gather(2, idx[..., None].expand(-1, -1, -1, p.shape[-1])) for p in parts]


def window(parts: list[torch.Tensor], w: int) -> list[torch.Tensor]:
    """The first w slots (views)."""
    return [p[:, :, :w] for p in parts]


def nbytes(parts: list[torch.Tensor]) -> int:
    return sum(p.numel() * p.element_size() for p in parts)
