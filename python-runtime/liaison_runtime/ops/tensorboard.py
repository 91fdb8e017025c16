"""TensorBoard scalars written by the runtime from tensors it already holds, so a training
loop logs a loss without reading it back. Needs the `tensorboard` package (optional: the
Trainer prints a notice and goes on without it) and file access (liaison_runtime.policy)."""

from __future__ import annotations

import torch

from .. import policy
from ..errors import RuntimeFault
from .registry import P, op


def _writer(name: str, obj):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # then tb_writer never made one, so obj is not one
        SummaryWriter = None
    if SummaryWriter is not None and isinstance(obj, SummaryWriter):
        return obj
    raise RuntimeFault("E_ARG", f"{name}: argument 'writer' must be a writer from tb_writer; the handle holds a "
                       f"{type(obj).__name__}", param="writer")


@op("tb_writer", P("logdir", "str"))
def tb_writer(ctx, logdir):
    """tb_writer(logdir): a TensorBoard event writer into logdir (needs tensorboard and file access).

    logdir must lie inside the runtime's --file-root. Event files get fresh names, so nothing
    already there is overwritten."""
    if not policy.ALLOW_FILES:
        raise RuntimeFault("E_ARG", "tb_writer: this runtime does not allow file access; start it with --allow-files "
                           "(a local ipc:// runtime allows it by default)", param="logdir")
    logdir = policy.confine("tb_writer", "logdir", logdir)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise RuntimeFault("E_ARG", f"tb_writer: TensorBoard is not installed in the runtime's Python ({e}); "
                           "`pip install tensorboard` there to get event files", param="logdir") from None
    try:
        return SummaryWriter(log_dir=logdir)
    except OSError as e:  # a folder it may not make or enter: not a bug in the runtime
        raise RuntimeFault("E_OP_FAILED", f"tb_writer: cannot write into {logdir!r}: {e.strerror or e}",
                           param="logdir") from None


@op("tb_scalar", P("writer", "object"), P("tag", "str"), P("value", "tensor"), P("step", "int"), outputs=0)
def tb_scalar(ctx, writer, tag, value, step):
    """tb_scalar(writer, tag, value, step): record the one-element tensor value under tag at step."""
    if value.numel() != 1:
        raise RuntimeFault("E_SHAPE", f"tb_scalar: 'value' must hold one element, got shape {list(value.shape)}",
                           param="value")
    _writer("tb_scalar", writer).add_scalar(tag, float(value.detach().to(torch.float64)), step)
    return ()


@op("tb_flush", P("writer", "object"), outputs=0)
def tb_flush(ctx, writer):
    """tb_flush(writer): write the buffered events to disk."""
    _writer("tb_flush", writer).flush()
    return ()


@op("tb_close", P("writer", "object"), outputs=0)
def tb_close(ctx, writer):
    """tb_close(writer): write what is buffered and close the event file (its writer thread ends)."""
    _writer("tb_close", writer).close()
    return ()
