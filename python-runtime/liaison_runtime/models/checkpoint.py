"""State in and out of a model: by name from tensors, and safetensors files (a single file,
or a Hugging Face style folder holding model.safetensors or a sharded index)."""

from __future__ import annotations

import json
import os
import secrets

import torch
from torch import nn

from ..errors import RuntimeFault
from ..policy import confine

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
    """A file, or a folder's model.safetensors / sharded index -> the files to read, each a
    real path inside the runtime's file root (a shard or index may be a link pointing out)."""
    path = confine(op, "path", path)
    if os.path.isdir(path):
        single, index = os.path.join(path, SINGLE), os.path.join(path, INDEX)
        if os.path.isfile(single):
            return [confine(op, "path", single)]
        if os.path.isfile(index):
            index = confine(op, "path", index)
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
            return [confine(op, "path", os.path.join(path, x)) for x in shards]
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


def write_file(op: str, model: nn.Module, path: str, overwrite: bool = False) -> str:
    """Save the state_dict; a path not ending in .safetensors is a folder (created) that gets
    model.safetensors, as Hugging Face lays it out. An existing file is replaced only with
    `overwrite`. Returns the file written."""
    from safetensors.torch import save_file

    path = confine(op, "path", path)
    if not path.endswith(".safetensors"):
        folder, path = path, os.path.join(path, SINGLE)
    else:
        folder = os.path.dirname(path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise RuntimeFault("E_ARG", f"{op}: {folder!r} is a file, not a folder; a path not ending in .safetensors "
                           f"names a folder to hold {SINGLE}", param="path")
    if os.path.isdir(path):
        raise RuntimeFault("E_ARG", f"{op}: {path!r} is a folder; name a .safetensors file or a folder to hold "
                           f"{SINGLE}", param="path")
    if os.path.lexists(path) and not overwrite:
        raise _exists(op, path)
    tensors, seen = {}, set()
    for n, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        # safetensors refuses tensors sharing memory (tied weights): each name gets its own copy
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        tensors[n] = t.clone() if key in seen else t
        seen.add(key)
    try:
        _place(op, lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}), folder, path, overwrite)
    except OSError as e:  # a read-only or full disk, a folder we may not enter: not a bug here
        raise RuntimeFault("E_OP_FAILED", f"{op}: cannot write {path!r}: {e.strerror or e}", param="path",
                           path=path) from None
    return path


def _place(op: str, write, folder: str, path: str, overwrite: bool) -> None:
    """write(tmp) beside `path`, then move it into place: a reader never sees half a file,
    and without overwrite the final link fails if the name appeared meanwhile (no window
    between the check and the write)."""
    os.makedirs(folder, exist_ok=True)
    # made by hand, not by mkstemp, so the file gets the umask's mode as a plain open would
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666))
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise _exists(op, path) from None
        except OSError:  # a file system without hard links: check, then move
            if os.path.lexists(path):
                raise _exists(op, path) from None
            os.rename(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _exists(op: str, path: str) -> RuntimeFault:
    return RuntimeFault("E_ARG", f"{op}: {path!r} already exists; pass overwrite=true to replace it",
                        param="overwrite", path=path)
