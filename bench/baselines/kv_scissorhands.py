"""Baseline for kv.policy_program: the Scissorhands KV policy written by hand in Python.

`scissorhands(window, recent, threshold)` returns a plain callable with the `kv` hook
point's calling convention (liaison_runtime/hooks.py): [keys, values, attn, pos, count] ->
[scores, count]. The benchmark makes it through the pythonia hatch, adopts it, and installs
it with `model_hook` where the traced program of plugins/kv-policies/scissorhands.ts would
go; the runtime calls it per layer per decoding step, exactly where it would replay the
program. The math is the plugin's, op for op, so both generate the same tokens:

    count <- decay^R * count + sum_i decay^age_i * [attn_i * T_i < 1 and slot visible to row i]
    score  = -count, +inf for the `recent` newest positions

with decay = 1 - 1/window, age_i = R - 1 - i for the R query rows, T_i the tokens row i saw.
"""

from __future__ import annotations

import math

import torch


def scissorhands(window: int, recent: int, threshold="uniform"):
    decay = 1 - 1 / window
    log_decay = math.log(decay) if decay > 0 else 0.0

    def hook(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        _keys, _values, attn, pos, count = inputs  # attn (B, H, R, C), pos (B, H, C) i64, count (B, H, C)
        top = pos.amax(-1, keepdim=True)  # (B, H, 1): the newest position held
        ages = (attn[..., :1] >= -1).cumsum(2).flip(2) - 1  # (B, H, R, 1): R-1 .. 0
        seen = ((top - pos).unsqueeze(2) >= ages) & (pos >= 0).unsqueeze(2)  # (B, H, R, C)
        # below 1/T, T the tokens the row saw, as attn * T < 1
        below = (attn * seen.sum(-1, keepdim=True)) < 1 if threshold == "uniform" else attn < threshold
        low = below & seen  # (B, H, R, C) bool
        weight = (ages.to(torch.float32) * log_decay).exp() if decay > 0 else (ages == 0).to(torch.float32)
        count = count * (weight.amin(2) * decay) + (low * weight).sum(2)  # decay^R: R steps since the last call
        return [(-count).masked_fill(pos > top - recent, math.inf), count]

    return hook
