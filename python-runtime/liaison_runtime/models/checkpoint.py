"""State in and out of a model: by name from tensors, and safetensors files (a single file,
or a Hugging Face style folder holding model.safetensors or a sharded index)."""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from ..errors import RuntimeFault

_LISTED = 20  # names an error message shows before "…"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def listed(names) -> str:
    names = list(names)
    shown = ", ".join(names[:_LISTED])
    return shown + (f", … ({len(names)} in all)" if len(names) > _LISTED else "") if names else "none"


def load_state(op: str, model: nn.Module, named: dict[str, torch.Tensor], strict: bool, guard=None) -> None:
    """Copy `named` into the model's state_dict entries, under no_grad. strict: the names must
    be exactly the model's; otherwise missing and unexpected names are skipped. A shape
    mismatch is refused either way, before anything is written."""
    sd = model.state_dict()  # detached tensors sharing the model's memory
    missing = [n for n in sd if n not in named]
    unexpected = [n for n in named if n not in sd]
    if strict and (missing or unexpected):
        raise RuntimeFault("E_ARG", f"{op}: the state does not match the model: missing {listed(missing)}; "
                           f"unexpected {listed(unexpected)} (pass strict=false to load what matches)",
                           param="names", missing=missing[:_LISTED], unexpected=unexpected[:_LISTED])
    bad = [(n, list(sd[n].shape), list(t.shape)) for n, t in named.items() if n in sd and sd[n].shape != t.shape]
    if bad:
        text = "; ".join(f"{n}: expected {want}, got {got}" for n, want, got in bad[:_LISTED])
        raise RuntimeFault("E_SHAPE", f"{op}: shape mismatch for {len(bad)} entr{'y' if len(bad) == 1 else 'ies'}: "
                           f"{text}", param="tensors")
    with torch.no_grad():
        for n, t in named.items():
            if n in sd:
                if guard is not None:
                    guard(sd[n])  # a send may still be reading this memory
                sd[n].copy_(t)


def _resolve(op: str, path: str) -> list[str]:
    """A file, or a folder's model.safetensors / sharded index -> the files to read."""
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        single, index = os.path.join(path, SINGLE), os.path.join(path, INDEX)
        if os.path.isfile(single):
            return [single]
        if os.path.isfile(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                raise RuntimeFault("E_ARG", f"{op}: {index!r} is not a safetensors index (a JSON map with a "
                                   f"'weight_map' of tensor name -> shard file): {type(e).__name__}: {e}",
                                   param="path") from None
            if not all(isinstance(x, str) and os.path.basename(x) == x for x in shards):
                raise RuntimeFault("E_ARG", f"{op}: {index!r} names shards outside its folder", param="path")
            return [os.path.join(path, x) for x in shards]
        raise RuntimeFault("E_ARG", f"{op}: folder {path!r} holds neither {SINGLE} nor {INDEX}", param="path")
    if not os.path.isfile(path):
        raise RuntimeFault("E_ARG", f"{op}: no file or folder at {path!r}", param="path")
    return [path]


def read_file(op: str, path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in _resolve(op, path):
        try:
            out.update(load_file(f, device="cpu"))
        except Exception as e:  # noqa: BLE001 — a corrupt or foreign file is the path's fault
            raise RuntimeFault("E_ARG", f"{op}: cannot read {f!r} as safetensors: {e}", param="path") from None
    return out


def write_file(op: str, model: nn.Module, path: str) -> str:
    """Save the state_dict; a path not ending in .safetensors is a folder (created) that gets
    model.safetensors, as Hugging Face lays it out. Returns the file written."""
    from safetensors.torch import save_file

    path = os.path.expanduser(path)
    if not path.endswith(".safetensors"):
        os.makedirs(path, exist_ok=True)
        path = os.path.join(path, SINGLE)
    elif os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    tensors, seen = {}, set()
    for n, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        # safetensors refuses tensors sharing memory (tied weights): each name gets its own copy
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        tensors[n] = t.clone() if key in seen else t
        seen.add(key)
    save_file(tensors, path, metadata={"format": "pt"})
    return path
