"""Baseline for bridge.vs_pythonia: the Python half of a pythonia round trip.

pythonia imports this file; the benchmark calls `roundtrip` with a JS array of numbers
(it arrives as a Python list, through pythonia's JSON channel) and reads the returned list
back with `valueOf()`.
"""

from __future__ import annotations

import torch


def roundtrip(xs: list) -> list:
    """A list of numbers -> a float32 tensor -> a list again."""
    return torch.tensor(xs, dtype=torch.float32).tolist()
