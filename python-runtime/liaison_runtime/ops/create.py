"""Creating tensors: constants, ranges, seeded random numbers, casts and copies."""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from .checks import need_float
from .registry import DTYPE_NAMES, FLOATS, P, op

_CPU = torch.device("cpu")  # where a seeded randperm draws (the same order on every device)


def _float_dtype(name: str, dtype: torch.dtype, param: str = "dtype") -> None:
    if dtype not in FLOATS:
        raise RuntimeFault("E_DTYPE", f"{name}: '{param}' must be a floating-point dtype, got "
                           f"{DTYPE_NAMES.get(dtype, dtype)}", param=param)


@op("zeros", P("shape", "shape"), P("dtype", "dtype", torch.float32))
def zeros(ctx, shape, dtype):
    """zeros(shape, dtype='f32')."""
    return torch.zeros(shape, dtype=dtype, device=ctx.device)


@op("ones", P("shape", "shape"), P("dtype", "dtype", torch.float32))
def ones(ctx, shape, dtype):
    """ones(shape, dtype='f32')."""
    return torch.ones(shape, dtype=dtype, device=ctx.device)


@op("full", P("shape", "shape"), P("value", "scalar"), P("dtype", "dtype", torch.float32))
def full(ctx, shape, value, dtype):
    """full(shape, value, dtype='f32')."""
    return torch.full(shape, value, dtype=dtype, device=ctx.device)


@op("arange", P("start", "scalar"), P("end", "scalar?", None), P("step", "scalar", 1),
    P("dtype", "dtype?", None))
def arange(ctx, start, end, step, dtype):
    """arange(start, end=None, step=1, dtype=None): like torch.arange(start, end, step)."""
    if end is None:
        start, end = 0, start
    return torch.arange(start, end, step, dtype=dtype, device=ctx.device)


@op("manual_seed", P("seed", "seed"), outputs=0)
def manual_seed(ctx, seed):
    """manual_seed(seed): reseed this session's random stream (ops called without a seed)."""
    ctx.session.seed(ctx.device, seed)
    return ()


@op("rand", P("shape", "shape"), P("dtype", "dtype", torch.float32), P("seed", "seed?", None))
def rand(ctx, shape, dtype, seed):
    """rand(shape, dtype='f32', seed=None): uniform on [0, 1)."""
    _float_dtype("rand", dtype)
    return torch.rand(shape, dtype=dtype, device=ctx.device, generator=ctx.generator(seed))


@op("randn", P("shape", "shape"), P("dtype", "dtype", torch.float32), P("seed", "seed?", None))
def randn(ctx, shape, dtype, seed):
    """randn(shape, dtype='f32', seed=None): standard normal."""
    _float_dtype("randn", dtype)
    return torch.randn(shape, dtype=dtype, device=ctx.device, generator=ctx.generator(seed))


@op("to", P("input", "tensor"), P("dtype", "dtype"))
def to(ctx, input, dtype):
    """to(input, dtype): cast (a copy, even to the same dtype)."""
    return input.to(dtype=dtype, copy=True)


@op("clone", P("input", "tensor"))
def clone(ctx, input):
    """clone(input): a copy with its own memory."""
    return input.clone()


@op("bernoulli", P("p", "tensor"), P("seed", "seed?", None))
def bernoulli(ctx, p, seed):
    """bernoulli(p, seed=None): 0/1 samples with probabilities p (floating tensor)."""
    need_float("bernoulli", "p", p)
    return torch.bernoulli(p, generator=ctx.generator(seed))


@op("randint", P("low", "int"), P("high", "int"), P("shape", "shape"), P("dtype", "dtype", torch.int64),
    P("seed", "seed?", None))
def randint(ctx, low, high, shape, dtype, seed):
    """randint(low, high, shape, dtype='i64', seed=None): uniform integers in [low, high)."""
    if high <= low:
        raise RuntimeFault("E_ARG", f"randint: 'high' ({high}) must be greater than 'low' ({low})",
                           param="high")
    return torch.randint(low, high, shape, dtype=dtype, device=ctx.device, generator=ctx.generator(seed))


@op("normal", P("mean", "float"), P("std", "float"), P("shape", "shape"), P("dtype", "dtype", torch.float32),
    P("seed", "seed?", None))
def normal(ctx, mean, std, shape, dtype, seed):
    """normal(mean, std, shape, dtype='f32', seed=None): Gaussian samples."""
    _float_dtype("normal", dtype)
    if std < 0:
        raise RuntimeFault("E_ARG", f"normal: 'std' must be >= 0, got {std}", param="std")
    return torch.normal(mean, std, shape, dtype=dtype, device=ctx.device, generator=ctx.generator(seed))


@op("randperm", P("n", "int"), P("dtype", "dtype", torch.int64), P("seed", "seed?", None))
def randperm(ctx, n, dtype, seed):
    """randperm(n, dtype='i64', seed=None): a random permutation of 0..n-1.

    A seeded permutation is drawn on the CPU and moved to the device, so a seed gives the same
    order on every device (CUDA's randperm draws another one): a data order, and the training
    it makes, reproduce across machines. Unseeded draws use the session's stream on the device."""
    if n < 0:
        raise RuntimeFault("E_ARG", f"randperm: 'n' must be >= 0, got {n}", param="n")
    if seed is None:
        return torch.randperm(n, dtype=dtype, device=ctx.device, generator=ctx.generator(None))
    return torch.randperm(n, dtype=dtype, generator=ctx.generator(seed, _CPU)).to(ctx.device)


@op("eye", P("n", "int"), P("m", "int?", None), P("dtype", "dtype", torch.float32))
def eye(ctx, n, m, dtype):
    """eye(n, m=None, dtype='f32'): ones on the diagonal of an n x m (default n x n) matrix."""
    for v, p in ((n, "n"), (m, "m")):
        if v is not None and v < 0:
            raise RuntimeFault("E_ARG", f"eye: '{p}' must be >= 0, got {v}", param=p)
    return torch.eye(n, n if m is None else m, dtype=dtype, device=ctx.device)


@op("linspace", P("start", "float"), P("end", "float"), P("steps", "int"), P("dtype", "dtype", torch.float32))
def linspace(ctx, start, end, steps, dtype):
    """linspace(start, end, steps, dtype='f32'): steps evenly spaced values from start to end inclusive."""
    if steps < 0:
        raise RuntimeFault("E_ARG", f"linspace: 'steps' must be >= 0, got {steps}", param="steps")
    return torch.linspace(start, end, steps, dtype=dtype, device=ctx.device)


@op("zeros_like", P("input", "tensor"), P("dtype", "dtype?", None))
def zeros_like(ctx, input, dtype):
    """zeros_like(input, dtype=None): zeros with input's shape (and dtype unless given)."""
    return torch.zeros_like(input, dtype=dtype)


@op("ones_like", P("input", "tensor"), P("dtype", "dtype?", None))
def ones_like(ctx, input, dtype):
    """ones_like(input, dtype=None): ones with input's shape (and dtype unless given)."""
    return torch.ones_like(input, dtype=dtype)


@op("full_like", P("input", "tensor"), P("value", "scalar"), P("dtype", "dtype?", None))
def full_like(ctx, input, value, dtype):
    """full_like(input, value, dtype=None): value everywhere, input's shape (and dtype unless given)."""
    return torch.full_like(input, value, dtype=dtype)


def _random_like(name: str, fn):
    def run(ctx, input, dtype, seed):
        if dtype is None:
            need_float(name, "input", input)
            dtype = input.dtype
        else:
            _float_dtype(name, dtype)
        # Drawn by shape rather than *_like so a seed gives the same values as rand/randn.
        return fn(input.shape, dtype=dtype, device=ctx.device, generator=ctx.generator(seed))

    run.__doc__ = f"{name}(input, dtype=None, seed=None): random values with input's shape (float dtypes)."
    op(name, P("input", "tensor"), P("dtype", "dtype?", None), P("seed", "seed?", None))(run)


_random_like("rand_like", torch.rand)
_random_like("randn_like", torch.randn)
