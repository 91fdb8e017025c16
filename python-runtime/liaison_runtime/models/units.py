"""Structured units of the built models, for the model's description (`units`, `flops`).

A unit is a hidden neuron of a Linear layer or a filter (output channel) of a conv: removing
it removes one slice of every member parameter — its weight row and bias entry, and the input
columns of the layer that reads it. A member's `block` is how many consecutive entries of its
dim one unit owns: 1, except where a conv's (C, H', W') output is flattened into a Linear, where
channel j owns columns j*H'W' … (j+1)*H'W'-1 (flatten is channel-major).

`flops` is the multiply–adds of one sample's forward through every Linear and conv, at the
input size the spec fixes (biases, activations and pooling not counted); None when unknown.

One entry per model class in `_KINDS`; a class not there (gpt, additive, a factory's or an
adopted module) has no groups and unknown flops."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..errors import RuntimeFault
from .cnn import CNN
from .mlp import MLP

_INDEX_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _member(param: str, dim: int, block: int = 1) -> dict:
    return {"param": param, "dim": dim, "block": block}


def _group(name: str, kind: str, size: int, field: str, members: list[dict]) -> dict:
    return {"name": name, "kind": kind, "size": size, "field": field, "members": members}


def _own(m: nn.Module, prefix: str) -> list[dict]:
    """The rows of a layer's weight and its bias entries (when it has a bias)."""
    out = [_member(f"{prefix}.weight", 0)]
    if getattr(m, "bias", None) is not None:
        out.append(_member(f"{prefix}.bias", 0))
    return out


def _mlp_units(m: MLP) -> list[dict]:
    # hidden layer i (spec sizes[i+1]) is read by layer i+1; the output layer is no group
    return [_group(f"layers.{i}", "neuron", layer.out_features, f"sizes.{i + 1}",
                   [*_own(layer, f"layers.{i}"), _member(f"layers.{i + 1}.weight", 1)])
            for i, layer in enumerate(m.layers[:-1])]


def _cnn_units(m: CNN) -> list[dict]:
    # fc reads the last stage's (C, H', W') flattened: H'W' columns per channel
    hw = m.fc.in_features // m.convs[-1].out_channels
    last = len(m.convs) - 1
    groups = []
    for i, conv in enumerate(m.convs):
        reader = _member(f"convs.{i + 1}.weight", 1) if i < last else _member("fc.weight", 1, hw)
        groups.append(_group(f"convs.{i}", "filter", conv.out_channels, f"channels.{i}",
                             [*_own(conv, f"convs.{i}"), reader]))
    groups.append(_group("fc", "neuron", m.fc.out_features, "hidden", [*_own(m.fc, "fc"), _member("head.weight", 1)]))
    return groups


def _mlp_flops(m: MLP) -> int:
    return sum(layer.in_features * layer.out_features for layer in m.layers)


def _cnn_flops(m: CNN) -> int:
    h, w = m.image
    total = 0
    for conv in m.convs:
        kh, kw = conv.kernel_size
        # padding 'same': the conv's output is the stage's input size; the pool then halves it
        total += conv.out_channels * (conv.in_channels // conv.groups) * kh * kw * h * w
        h, w = h // 2, w // 2
    return total + m.fc.in_features * m.fc.out_features + m.head.in_features * m.head.out_features


_KINDS: dict[type, tuple[Callable[[nn.Module], list[dict]], Callable[[nn.Module], int]]] = {
    MLP: (_mlp_units, _mlp_flops),
    CNN: (_cnn_units, _cnn_flops),
}


def units_of(m: nn.Module) -> list[dict]:
    entry = _KINDS.get(type(m))
    return entry[0](m) if entry else []


def flops_of(m: nn.Module) -> int | None:
    entry = _KINDS.get(type(m))
    return entry[1](m) if entry else None


def unit_index(op_name: str, m: nn.Module, group: str, index: torch.Tensor, block: int) -> torch.Tensor:
    """The entries of a member's dim that the kept units `index` (k,) own: (k*block,) int64,
    unit j expanded to j*block … j*block+block-1. The units must be the group's, ascending and
    distinct, so that a slice and the scatter back pair entries the same way."""
    groups = {g["name"]: g for g in units_of(m)}
    g = groups.get(group)
    if g is None:
        kind = getattr(m, "spec_kind", "module")
        has = ", ".join(groups) if groups else f"none (the {kind} model has no unit groups; mlp and cnn have)"
        raise RuntimeFault("E_ARG", f"{op_name}: no unit group {group!r}; the model's groups are {has}", param="group")
    if index.dtype not in _INDEX_DTYPES or index.dim() != 1:
        raise RuntimeFault("E_ARG", f"{op_name}: the kept units of group {group!r} must be a 1-D integer tensor, "
                           f"got {str(index.dtype).removeprefix('torch.')} of shape {list(index.shape)}",
                           param="index")
    blocks = sorted({mem["block"] for mem in g["members"]})
    if block not in blocks:
        raise RuntimeFault("E_ARG", f"{op_name}: 'block' must be one of the blocks of group {group!r}'s members "
                           f"({', '.join(map(str, blocks))}), got {block}", param="block")
    index, size = index.long(), g["size"]
    if index.numel():
        lo, hi = int(index.min()), int(index.max())
        if lo < 0 or hi >= size:
            raise RuntimeFault("E_ARG", f"{op_name}: group {group!r} has {size} units (0..{size - 1}); the kept "
                               f"units run from {lo} to {hi}", param="index", group=group, size=size)
        if index.numel() > 1 and not bool((index[1:] > index[:-1]).all()):
            raise RuntimeFault("E_ARG", f"{op_name}: the kept units of group {group!r} must be ascending and "
                               "distinct (sort them, e.g. with topk's indices sorted)", param="index", group=group)
    return (index[:, None] * block + torch.arange(block, device=index.device)).flatten()
