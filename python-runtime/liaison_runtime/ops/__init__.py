"""The op table. Importing this package registers every op module into OPS."""

from . import (  # noqa: F401  (registration happens on import)
    create,
    data,
    dist,
    elementwise,
    index,
    inplace,
    linalg,
    model,
    module,
    nn,
    params,
    program,
    reduce,
    shape,
    sort,
    tensorboard,
    tokenizer,
    train,
)
from .registry import OPS, OpDef, op

__all__ = ["OPS", "OpDef", "op"]
