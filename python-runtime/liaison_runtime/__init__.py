"""Liaison runtime: serves named tensor ops to the TypeScript SDK over ZeroMQ.

`liaison_runtime.serve(model, optimizer=...)` serves a PyTorch script's own model to a
TypeScript service that installs plugins into it (serve.py, docs/any-loop.md). It is
imported on first use: `python -m liaison_runtime.plot` and other light tools must not
pay for torch.
"""
import importlib

__version__ = "0.1.0"

_SERVE = ("serve", "Service", "ServiceStopped", "PluginOptimizer")
__all__ = [*_SERVE, "__version__"]


def __getattr__(name: str):
    if name in _SERVE:
        m = importlib.import_module(".serve", __name__)  # sets this package's `serve` to the module…
        globals().update({n: getattr(m, n) for n in _SERVE})  # …which the function replaces here
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
