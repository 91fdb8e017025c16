"""Model specs -> nn.Module. A spec is a plain map from the client; every field is checked
here, and a bad one is refused with E_ARG naming it (and listing what is allowed)."""

from __future__ import annotations

import importlib

import torch
from torch import nn

from .. import policy
from ..errors import RuntimeFault
from .additive import Additive
from .base import REQUIRED, boolean, choice, fields, is_int, number, pos_int, pos_ints, spec_fault
from .cnn import CNN
from .gpt import GPT
from .mlp import ACTIVATIONS, MLP
from .moe import MoE, init_param

KINDS = ("mlp", "cnn", "gpt", "additive", "factory")
INITS = ("normal", "zeros", "ones", "uniform")


def _mlp(spec: dict) -> nn.Module:
    f = fields(spec, "", {"kind": REQUIRED, "sizes": REQUIRED, "activation": "relu", "bias": True,
                          "dropout": 0.0, "seed": None})
    return MLP(pos_ints("sizes", f["sizes"], 2), choice("activation", f["activation"], tuple(ACTIVATIONS)),
               boolean("bias", f["bias"]), number("dropout", f["dropout"], 0.0, 1.0, hi_open=True))


def _cnn(spec: dict) -> nn.Module:
    f = fields(spec, "", {"kind": REQUIRED, "in_channels": 1, "image": REQUIRED, "channels": REQUIRED,
                          "kernel": 3, "hidden": 64, "classes": REQUIRED, "seed": None})
    image = pos_ints("image", f["image"], 2)
    if len(image) != 2:
        raise spec_fault("image", f"must be [height, width], got {image}")
    channels = pos_ints("channels", f["channels"], 1)
    if min(image) >> len(channels) < 1:
        # each entry pools by 2; the feature map must keep at least one pixel
        raise spec_fault("channels", f"has {len(channels)} conv+pool stages, too many for an image of "
                         f"{image[0]}x{image[1]} (each halves it)")
    return CNN(pos_int("in_channels", f["in_channels"]), image, channels, pos_int("kernel", f["kernel"]),
               pos_int("hidden", f["hidden"]), pos_int("classes", f["classes"]))


def _router_params(spec) -> dict[str, torch.Tensor]:
    if not isinstance(spec, dict):
        raise spec_fault("moe.params", f"must be a map of name -> {{shape, init, std|bound}}, got {spec!r}"[:160])
    out = {}
    for name, p in spec.items():
        where = f"moe.params.{name}"
        if not isinstance(name, str) or not name.isidentifier():
            raise spec_fault(where, "must be named by an identifier (letters, digits, _; no dots)")
        f = fields(p, where + ".", {"shape": REQUIRED, "init": "normal", "std": None, "bound": None})
        shape = f["shape"]
        if not isinstance(shape, list) or not all(is_int(x) and x >= 0 for x in shape):
            raise spec_fault(where + ".shape", f"must be a list of non-negative integers, got {shape!r}")
        init = choice(where + ".init", f["init"], INITS)
        for key, used_by in (("std", "normal"), ("bound", "uniform")):
            if f[key] is not None:
                if init != used_by:
                    raise spec_fault(f"{where}.{key}", f"applies to init '{used_by}' only, not '{init}'")
                number(f"{where}.{key}", f[key], 0.0)
        out[name] = init_param(shape, init, f["std"] if init == "normal" else f["bound"])
    return out


def _gpt(spec: dict) -> nn.Module:
    f = fields(spec, "", {"kind": REQUIRED, "vocab": REQUIRED, "context": REQUIRED, "dim": 64, "layers": 2,
                          "heads": 4, "mlp_ratio": 4, "dropout": 0.0, "moe": None, "seed": None})
    dim, heads, layers = pos_int("dim", f["dim"]), pos_int("heads", f["heads"]), pos_int("layers", f["layers"])
    if dim % heads:
        raise spec_fault("heads", f"must divide dim ({dim}); got {heads}")
    make_moe = None
    if f["moe"] is not None:
        m = fields(f["moe"], "moe.", {"experts": REQUIRED, "hidden": REQUIRED, "every": 1, "params": {}})
        experts, hidden = pos_int("moe.experts", m["experts"]), pos_int("moe.hidden", m["hidden"])
        every = pos_int("moe.every", m["every"])
        if every > layers:
            raise spec_fault("moe.every", f"is {every}, so no block of the {layers} would be an MoE layer")
        _router_params(m["params"])  # checked once up front, so a bad field fails before any block is built

        def make_moe(i: int):
            # blocks every, 2*every, … (1-based): every=1 -> all blocks, every=2 -> blocks 1, 3, …
            return MoE(dim, hidden, experts, _router_params(m["params"])) if (i + 1) % every == 0 else None

    return GPT(pos_int("vocab", f["vocab"]), pos_int("context", f["context"]), dim, layers, heads,
               pos_int("mlp_ratio", f["mlp_ratio"]), number("dropout", f["dropout"], 0.0, 1.0, hi_open=True),
               make_moe)


def _additive(spec: dict) -> nn.Module:
    f = fields(spec, "", {"kind": REQUIRED, "linear": REQUIRED, "relu": REQUIRED, "seed": None})
    return Additive(pos_int("linear", f["linear"]), pos_int("relu", f["relu"]))


def _factory(spec: dict) -> nn.Module:
    f = fields(spec, "", {"kind": REQUIRED, "ref": REQUIRED, "kwargs": {}, "seed": None})
    if not policy.ALLOW_FACTORIES:
        raise spec_fault("kind", "'factory' imports and runs Python code, which this runtime does not allow: "
                         "start it with --allow-factories (a local ipc:// runtime allows it by default)")
    ref, kwargs = f["ref"], f["kwargs"]
    mod_name, _, attr = ref.partition(":") if isinstance(ref, str) else ("", "", "")
    if not mod_name or not attr:
        raise spec_fault("ref", f"must be 'package.module:function', got {ref!r}")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
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


_BUILDERS = {"mlp": _mlp, "cnn": _cnn, "gpt": _gpt, "additive": _additive, "factory": _factory}


def build(spec, device: torch.device) -> nn.Module:
    """spec -> a module on `device`. An integer `seed` makes the initial weights reproducible
    without touching the process's global random stream."""
    if not isinstance(spec, dict):
        raise RuntimeFault("E_ARG", f"model_build: 'spec' must be a map with a 'kind' ({', '.join(KINDS)}), got "
                           f"{type(spec).__name__}", param="spec")
    kind = choice("kind", spec.get("kind"), KINDS)
    seed = spec.get("seed")
    if seed is not None and not is_int(seed):
        raise spec_fault("seed", f"must be an integer, got {seed!r}")
    if seed is None:
        return _BUILDERS[kind](spec).to(device)
    with torch.random.fork_rng(devices=[]):  # the global stream is left as it was
        # torch.manual_seed would reseed the CUDA streams too (which fork_rng(devices=[]) does
        # not restore); initialisation draws from the CPU generator only
        torch.default_generator.manual_seed(seed)
        return _BUILDERS[kind](spec).to(device)
