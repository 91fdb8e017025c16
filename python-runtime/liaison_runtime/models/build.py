"""Model specs -> nn.Module. A spec is a plain map from the client, checked first against the
spec's JSON Schema (spec.py: field names, kinds, ranges and defaults, generated from the SDK's
schemas), then here for what a schema cannot say (heads dividing dim, an image too small for
its conv stages). A bad field is refused with E_ARG naming it (and listing what is allowed)."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from .. import policy
from .additive import Additive
from .base import spec_fault
from .cnn import CNN
from .gpt import GPT
from .mlp import MLP
from .moe import MoE, init_param
from .moe_model import MoEModel
from .spec import SCHEMA, check

KINDS = tuple(o["properties"]["kind"]["const"] for o in SCHEMA["oneOf"])

# Each builder takes the spec as spec.check() returns it: every field present (defaults
# filled in) and of the kind and range the schema says.


def _mlp(f: dict) -> nn.Module:
    return MLP(list(f["sizes"]), f["activation"], f["bias"], float(f["dropout"]))


def _cnn(f: dict) -> nn.Module:
    image, channels = list(f["image"]), list(f["channels"])
    if min(image) >> len(channels) < 1:
        # each entry pools by 2; the feature map must keep at least one pixel
        raise spec_fault("channels", f"has {len(channels)} conv+pool stages, too many for an image of "
                         f"{image[0]}x{image[1]} (each halves it)")
    return CNN(f["in_channels"], image, channels, f["kernel"], f["hidden"], f["classes"])


def _check_router_params(params: dict, where: str = "moe.") -> None:
    for name, p in params.items():
        for key, used_by in (("std", "normal"), ("bound", "uniform")):
            if p[key] is not None and p["init"] != used_by:
                raise spec_fault(f"{where}params.{name}.{key}", f"applies to init '{used_by}' only, not '{p['init']}'")


def _router_params(params: dict) -> dict[str, torch.Tensor]:
    return {name: init_param(list(p["shape"]), p["init"], p["std"] if p["init"] == "normal" else p["bound"])
            for name, p in params.items()}


def _gpt(f: dict) -> nn.Module:
    dim, heads, layers = f["dim"], f["heads"], f["layers"]
    if dim % heads:
        raise spec_fault("heads", f"must divide dim ({dim}); got {heads}")
    make_moe = None
    if f["moe"] is not None:
        m = f["moe"]
        experts, hidden, every = m["experts"], m["hidden"], m["every"]
        if every > layers:
            raise spec_fault("moe.every", f"is {every}, so no block of the {layers} would be an MoE layer")
        _check_router_params(m["params"])  # before any block is built

        def make_moe(i: int):
            # blocks every, 2*every, … (1-based): every=1 -> all blocks, every=2 -> blocks 1, 3, …
            return MoE(dim, hidden, experts, _router_params(m["params"]), batched=m["batched"]) \
                if (i + 1) % every == 0 else None

    if f["positions"] == "rotary" and (dim // heads) % 2:
        raise spec_fault("positions", f"'rotary' needs an even head dim (dim / heads), got {dim} / {heads} = "
                         f"{dim // heads}")
    return GPT(f["vocab"], f["context"], dim, layers, heads, f["mlp_ratio"], float(f["dropout"]), make_moe,
               f["positions"], f["rope_base"], f["smear_keys"])


def _moe(f: dict) -> nn.Module:
    _check_router_params(f["params"], "")
    return MoEModel(f["inputs"], f["outputs"], f["experts"], f["hidden"], _router_params(f["params"]),
                    f["activation"], f["bias"], f["output_bias"], f["batched"])


def _additive(f: dict) -> nn.Module:
    return Additive(f["linear"], f["relu"])


def _factory(f: dict) -> nn.Module:
    if not policy.ALLOW_FACTORIES:
        raise spec_fault("kind", "'factory' imports and runs Python code, which this runtime does not allow: "
                         "start it with --allow-factories (a local ipc:// runtime allows it by default)")
    ref, kwargs = f["ref"], f["kwargs"]
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise spec_fault("ref", f"must be 'package.module:function', got {ref!r}")
    if not all(isinstance(k, str) for k in kwargs):  # a msgpack map may have other keys than strings
        raise spec_fault("kwargs", f"must be a map of keyword arguments, got {kwargs!r}"[:160])
    try:
        target = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 — any import failure is the ref's fault
        raise spec_fault("ref", f"names module {mod_name!r}, which cannot be imported: {type(e).__name__}: {e}") \
            from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise spec_fault("ref", f"{ref!r}: {type(target).__name__} {getattr(target, '__name__', '')!r} has no "
                             f"attribute {part!r}")
        target = getattr(target, part)
    if not callable(target):
        raise spec_fault("ref", f"{ref!r} is not callable")
    try:
        m = target(**kwargs)
    except Exception as e:  # noqa: BLE001 — the factory's own error, reported as the spec's fault
        raise spec_fault("kwargs", f"{ref}(**kwargs) raised {type(e).__name__}: {e}") from None
    if not isinstance(m, nn.Module):
        raise spec_fault("ref", f"{ref} returned a {type(m).__name__}, not a torch.nn.Module")
    m.spec_kind = "factory"  # for describe_module
    return m


_BUILDERS = {"mlp": _mlp, "cnn": _cnn, "gpt": _gpt, "moe": _moe, "additive": _additive, "factory": _factory}


def build(spec, device: torch.device) -> nn.Module:
    """spec -> a module on `device`. An integer `seed` makes the initial weights reproducible
    without touching the process's global random stream."""
    f = check(spec)
    kind, seed = f["kind"], f["seed"]
    if seed is None:
        return _BUILDERS[kind](f).to(device)
    with torch.random.fork_rng(devices=[]):  # the global stream is left as it was
        # torch.manual_seed would reseed the CUDA streams too (which fork_rng(devices=[]) does
        # not restore); initialisation draws from the CPU generator only
        torch.default_generator.manual_seed(seed)
        return _BUILDERS[kind](f).to(device)
