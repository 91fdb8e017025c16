"""The op table. Importing this package registers every op module into OPS."""

from . import create, elementwise, index, inplace, linalg, module, nn, program, reduce, shape, sort  # noqa: F401  (registration happens on import)
from .registry import OPS, OpDef, op

__all__ = ["OPS", "OpDef", "op"]
