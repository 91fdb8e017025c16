"""Liaison runtime: serves named tensor ops to the TypeScript SDK over ZeroMQ.

`liaison_runtime.serve(model, optimizer=...)` serves a PyTorch script's own model to a
TypeScript service that installs plugins into it (serve.py, docs/any-loop.md).
"""
__version__ = "0.1.0"

from .serve import PluginOptimizer, Service, ServiceStopped, serve  # noqa: E402 — after __version__, which they import

__all__ = ["PluginOptimizer", "Service", "ServiceStopped", "serve", "__version__"]
