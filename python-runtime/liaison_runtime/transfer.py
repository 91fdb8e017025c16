"""Tensor bytes on and off the wire: raw ZeroMQ frames, or /dev/shm files on one host.

Copies are the ones the transport forces: a large aligned frame becomes a tensor without a
copy (torch.frombuffer over the received frame); a CPU tensor is sent from its own memory
(the server then waits for the send before anything writes into that memory in place).
"""

from __future__ import annotations

import os
import re
import stat
import warnings

import numpy as np
import torch

from .errors import RuntimeFault
from .ops.registry import DTYPE_NAMES, TORCH_DTYPES
from .protocol import DTYPES

# Below this a frame is copied: small frames may sit unaligned inside libzmq's receive buffer.
ZERO_COPY_MIN = 1 << 16
# Only files of this shape are touched: private per-client folders under /dev/shm.
SHM_PATH = re.compile(r"^/dev/shm/liaison-[A-Za-z0-9_-]{6,64}/[A-Za-z0-9_.-]{1,64}$")
# numpy has no bfloat16: such tensors travel as their 16-bit patterns.
_BITS_AS = {torch.bfloat16: torch.int16}


def _check_meta(meta) -> tuple[torch.dtype, list[int], int]:
    if not isinstance(meta, dict):
        raise RuntimeFault("E_ARG", "upload: the tensor description must be a map {dtype, shape, frame|shm}")
    name, shape = meta.get("dtype"), meta.get("shape")
    if name not in DTYPES:
        raise RuntimeFault("E_DTYPE", f"upload: unknown dtype {name!r}; one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in shape):
        raise RuntimeFault("E_SHAPE", f"upload: shape must be a list of non-negative integers, got {shape!r}")
    numel = 1
    for s in shape:
        numel *= s
    return TORCH_DTYPES[name], shape, numel * DTYPES[name]


def from_frame(meta, buffers, device: torch.device) -> torch.Tensor:
    dtype, shape, nbytes = _check_meta(meta)
    k = meta.get("frame")
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(buffers):
        raise RuntimeFault("E_PROTOCOL", f"upload: frame index {k!r} does not name one of the "
                           f"{len(buffers)} buffer frames")
    buf = buffers[k]
    buf = buf.buffer if hasattr(buf, "buffer") else memoryview(buf)
    if buf.nbytes != nbytes:
        raise RuntimeFault("E_SHAPE", f"upload: {DTYPE_NAMES[dtype]} {shape} needs {nbytes} bytes, "
                           f"frame {k} has {buf.nbytes}")
    return _bytes_to_tensor(buf, dtype, shape, nbytes, device)


def _bytes_to_tensor(buf, dtype, shape, nbytes, device) -> torch.Tensor:
    if nbytes == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    with warnings.catch_warnings():
        # pyzmq frames are read-only views; the frame is ours alone once received, and the
        # tensor keeps it alive, so writing into it later is safe.
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.frombuffer(buf, dtype=torch.uint8)
    itemsize = DTYPES[DTYPE_NAMES[dtype]]
    if nbytes < ZERO_COPY_MIN or raw.data_ptr() % itemsize:
        raw = raw.clone()
    t = raw.view(dtype).reshape(shape) if dtype is not torch.bool else raw.ne(0).reshape(shape)
    return t.to(device) if device.type != "cpu" else t


def _check_shm_path(path, what: str) -> str:
    """A path of the protocol's shape, in a real folder (not a link) that is ours alone:
    the runtime reads, writes and unlinks there, so nobody else may have put it there."""
    if not isinstance(path, str) or not SHM_PATH.match(path):
        raise RuntimeFault("E_ARG", f"{what}: shm path {path!r} is not a Liaison shared-memory file")
    try:
        st = os.lstat(os.path.dirname(path))
    except OSError:
        raise RuntimeFault("E_ARG", f"{what}: shared-memory folder of {path} does not exist") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RuntimeFault("E_ARG", f"{what}: {os.path.dirname(path)} is not a private folder of this user")
    return path


def from_shm(meta, device: torch.device) -> torch.Tensor:
    """Map a client-written /dev/shm file (copy-on-write) and unlink it."""
    dtype, shape, nbytes = _check_meta(meta)
    path = _check_shm_path(meta.get("shm"), "upload")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise RuntimeFault("E_ARG", f"upload: cannot open shared-memory file {path}: {e.strerror}") from None
    try:
        size = os.fstat(fd).st_size
    finally:
        os.close(fd)
    if size < nbytes:
        raise RuntimeFault("E_SHAPE", f"upload: {DTYPE_NAMES[dtype]} {shape} needs {nbytes} bytes, "
                           f"shared-memory file has {size}")
    if nbytes == 0:
        t = torch.empty(shape, dtype=dtype)
    else:
        raw = torch.from_file(path, shared=False, size=nbytes, dtype=torch.uint8)
        t = raw.view(dtype).reshape(shape) if dtype is not torch.bool else raw.ne(0).reshape(shape)
    try:
        os.unlink(path)
    except OSError:
        pass
    return t.to(device) if device.type != "cpu" else t


def to_bytes(t: torch.Tensor):
    """A tensor -> (dtype name, shape, contiguous host buffer, aliases_store)."""
    t = t.detach()
    alias = t.device.type == "cpu"
    if not alias:
        t = t.cpu()
    if not t.is_contiguous():
        t = t.contiguous()
        alias = False
    name = DTYPE_NAMES.get(t.dtype)
    if name is None:
        raise RuntimeFault("E_DTYPE", f"cannot send a tensor of dtype {t.dtype}; cast it to one of "
                           f"{', '.join(DTYPES)} first")
    bits = _BITS_AS.get(t.dtype)
    arr = (t.view(bits) if bits is not None else t).numpy()
    return name, list(t.shape), arr, alias


def to_shm(arr: np.ndarray, path: str) -> None:
    """Write a host buffer into a new /dev/shm file inside the client's private folder."""
    _check_shm_path(path, "download")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        mv = memoryview(np.ascontiguousarray(arr)).cast("B")
        while mv.nbytes:
            n = os.write(fd, mv)
            mv = mv[n:]
    finally:
        os.close(fd)
