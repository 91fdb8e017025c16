"""What every built model shares: the error of a spec field, and `describe()`, the summary a
client's `meta` request returns for a module handle."""

from __future__ import annotations

import torch

from ..errors import RuntimeFault


def spec_fault(field: str, msg: str) -> RuntimeFault:
    """The E_ARG of a spec field (models/spec.py checks against the schema; build.py what a
    schema cannot say), naming the field as the client spells it on the wire."""
    return RuntimeFault("E_ARG", f"model_build: spec field '{field}' {msg}", param="spec", field=field)


# ---- describe ----

def _dtype(d: torch.dtype) -> str:
    from ..ops.registry import DTYPE_NAMES  # here, not at the top: ops imports this package

    return DTYPE_NAMES.get(d, str(d).removeprefix("torch."))


def _entry(name: str, t: torch.Tensor) -> dict:
    return {"name": name, "shape": list(t.shape), "dtype": _dtype(t.dtype), "numel": t.numel()}


def describe_module(m: torch.nn.Module, kind: str | None = None) -> dict:
    """The summary of any module: its parameters, buffers and state_dict entries by name (in
    state_dict order, which is the order `model_state` returns), and its hook point sites
    (liaison_runtime/hooks.py): counts of the layer-indexed ones, names of the module-named ones
    and those modules' geometry (kind, in/out, kernel, stride, padding, dilation, groups);
    its structured unit groups and per-sample forward multiply–adds (models/units.py)."""
    from ..hooks import counts, geometry, module_sites  # here, not at the top: hooks imports this package
    from .units import flops_of, units_of  # units imports the model classes, which import this module

    return {
        "type": "Module",
        "kind": kind or getattr(m, "spec_kind", "module"),
        "params": [_entry(n, p) for n, p in m.named_parameters()],
        "buffers": [_entry(n, b) for n, b in m.named_buffers()],
        "state": [{"name": n, "shape": list(t.shape), "dtype": _dtype(t.dtype)} for n, t in m.state_dict().items()],
        "hooks": counts(m),
        "hook_modules": module_sites(m),
        "module_geometry": geometry(m),
        "units": units_of(m),
        "flops": flops_of(m),
    }


class Described:
    """Mixin for the built model classes: `describe()` under their spec kind."""

    spec_kind = "module"

    def describe(self) -> dict:
        return describe_module(self, self.spec_kind)
