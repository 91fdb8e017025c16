"""Collectives over the runtime's group (liaison_runtime/group.py) as ops.

Every op here is functional (its results are new tensors, its inputs untouched) and runs
without autograd: a collective inside a traced step works on gradients and losses after
backward. On a plain runtime they behave as a group of one (identity, rank 0, world 1),
so one program runs unchanged on one runtime and on a group.

Before each collective the ranks meet: one all-gather of a row of 16 int64 saying which
collective, dtype, shape and arguments each brings. A rank whose tensor does not fit then
fails with E_SHAPE / E_DTYPE / E_ARG — on every rank, naming every rank's shape — instead
of a collective of mismatched sizes, which gloo answers by hanging until the timeout and
breaking its connections. It also lets an all-gather take parts of different sizes along
its dim (a `dist_shard` of an uneven batch), padded for the wire and cut back after.

`check=false` skips the meeting where the caller knows the shapes agree (a data-parallel
step's gradients): one small collective less per call, and a mismatch is then the
backend's to find (E_GROUP, the group broken) rather than E_SHAPE.

A collective that raises or times out is E_GROUP naming the rank, the op and the cause,
and the group is broken from then on (group.py says what that means).

Bytes (group.COUNTS, `stats().collectives`): each rank counts its calls and the bytes it
contributes: an all-reduce, reduce-scatter or all-reduce-many of n bytes counts n, an
all-gather its own part (unpadded), a broadcast n on the source rank and 0 elsewhere. The
meeting row (128 bytes) is not counted; a plain runtime counts nothing.
"""

from __future__ import annotations

import zlib

import torch

from .. import group
from ..errors import RuntimeFault
from .checks import need_dim
from .registry import DTYPE_NAMES, FLOATS, TORCH_DTYPES, P, op

REDUCE = ("sum", "mean", "max", "min", "prod")
_CODES = {"dist_all_reduce": 1, "dist_all_gather": 2, "dist_broadcast": 3, "dist_reduce_scatter": 4,
          "dist_all_reduce_many": 5}
_NAMES = {v: k for k, v in _CODES.items()}
# ops that talk to the other ranks: a program's fusion (fusion.py) never reorders them
COLLECTIVES = frozenset(_CODES)
_DTYPE_CODES = {dt: i + 1 for i, dt in enumerate(TORCH_DTYPES.values())}
_MAXDIM = 8  # dims carried in the row; a tensor with more is compared by its shape's hash
_BAD_DIM = -(1 << 40)  # a dim argument out of range, marked so every rank refuses it together


def _dtype_name(dt) -> str:
    return DTYPE_NAMES.get(dt, str(dt))


def _hash(v) -> int:
    return zlib.crc32(repr(v).encode())


def _row(name: str, x: torch.Tensor, arg: int, extra: int = 0, shape_key=None) -> list[int]:
    """[code, dtype, ndim, numel, arg, extra, hash, 0, d0..d7]: what this rank brings."""
    dims = list(x.shape)[:_MAXDIM]
    key = list(x.shape) if shape_key is None else shape_key
    return [_CODES[name], _DTYPE_CODES.get(x.dtype, 0), x.dim(), x.numel(), arg, extra, _hash(key), 0,
            *dims, *([0] * (_MAXDIM - len(dims)))]


def _shape_of(row) -> str:
    return str(row[8:8 + row[2]]) if row[2] <= _MAXDIM else f"(a {row[2]}-d tensor of {row[3]} elements)"


def _meet(name: str, row: list[int], device: torch.device, check: bool = True) -> list[list[int]]:
    """Every rank's row, in rank order ([row] on a plain runtime); refuses a rank that runs
    another collective or brings another dtype. Unchecked, every rank is taken to bring this
    rank's row: nothing is sent, and a rank that does not fit fails the collective itself."""
    st = group.STATE
    if st is None:
        return [row]
    if not check:
        return [row] * st.world_size
    import torch.distributed as dist

    comm = device if st.backend == "nccl" else torch.device("cpu")
    mine = torch.tensor(row, dtype=torch.int64, device=comm)
    rows = [torch.empty_like(mine) for _ in range(st.world_size)]
    _guard(st, name, lambda: dist.all_gather(rows, mine))
    rows = [r.tolist() for r in rows]
    if len({r[0] for r in rows}) > 1:
        ran = ", ".join(f"rank {i} {_NAMES.get(r[0], '?')}" for i, r in enumerate(rows))
        raise RuntimeFault("E_GROUP", f"{name}: the ranks ran different collectives ({ran}): every rank must be "
                           "given the same ops in the same order", rank=st.rank)
    if len({r[1] for r in rows}) > 1:
        if name == "dist_all_reduce_many":
            raise RuntimeFault("E_DTYPE", f"{name}: the ranks' lists differ in their tensors' dtypes", param="xs")
        names = {v: _dtype_name(k) for k, v in _DTYPE_CODES.items()}
        got = ", ".join(f"rank {i} {names.get(r[1], '?')}" for i, r in enumerate(rows))
        raise RuntimeFault("E_DTYPE", f"{name}: the ranks' tensors differ in dtype ({got})", param="x")
    return rows


def _mismatch(name: str, what: str, rows, param: str = "x") -> RuntimeFault:
    shapes = ", ".join(f"rank {i} {_shape_of(r)}" for i, r in enumerate(rows))
    return RuntimeFault("E_SHAPE", f"{name}: {what} ({shapes})", param=param)


def _same_shapes(name: str, rows) -> None:
    if len({(r[2], r[3], r[6]) for r in rows}) > 1:
        raise _mismatch(name, "the ranks' tensors differ in shape", rows)


def _same_args(name: str, rows, what: str, cols=(4,)) -> None:
    """Arguments every rank must agree on (the same op record on every rank gives them)."""
    if len({tuple(r[c] for c in cols) for r in rows}) > 1:
        got = ", ".join(f"rank {i} {[r[c] for c in cols]}" for i, r in enumerate(rows))
        raise RuntimeFault("E_ARG", f"{name}: the ranks were given different {what} ({got})")


def _guard(st, name: str, fn):
    """Run one collective call; a failure breaks the group (group.py) and is E_GROUP."""
    if st.broken:
        raise RuntimeFault("E_GROUP", f"{name}: rank {st.rank} of {st.world_size}: the group is broken since "
                           f"{st.broken}; a process group cannot be repaired: start the group again",
                           rank=st.rank, collective=name)
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 — whatever the backend raised, the group is now unusable
        cause = (str(e).strip().splitlines() or [type(e).__name__])[0][:500]
        late = "timed out" in cause.lower() or "timeout" in cause.lower()
        group.mark_broken(f"{name} on rank {st.rank}: {cause}")
        raise RuntimeFault("E_GROUP", f"{name}: rank {st.rank} of {st.world_size}: the collective "
                           f"{'timed out' if late else 'failed'} ({cause}); a peer rank died, was not given the "
                           "same op, or could not be reached. The group is broken: every later collective on this "
                           "rank fails at once", rank=st.rank, collective=name, cause=cause) from None


def _send(st, name: str, t: torch.Tensor, fn) -> None:
    """One data collective on t; with no elements (on every rank: the shapes met) nothing to send."""
    if t.numel() or st.broken:
        _guard(st, name, fn)


def _count(nbytes: int) -> None:
    group.COUNTS["calls"] += 1
    group.COUNTS["bytes"] += int(nbytes)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _reducible(name: str, dt, how: str, param: str = "x") -> None:
    if dt == torch.bool:
        raise RuntimeFault("E_DTYPE", f"{name}: a bool tensor cannot be reduced with {how!r}: convert it to u8",
                           param=param)
    if how == "mean" and dt not in FLOATS:
        raise RuntimeFault("E_DTYPE", f"{name}: op 'mean' needs a floating-point tensor, got {_dtype_name(dt)} "
                           "(use 'sum')", param=param)


def _redop(how: str):
    import torch.distributed as dist

    return {"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX,
            "min": dist.ReduceOp.MIN, "prod": dist.ReduceOp.PRODUCT}[how]


def _dim_arg(x: torch.Tensor, dim: int) -> tuple[int, int]:
    """(normalized dim, its size), or (_BAD_DIM, -1) when out of range: refused after the meeting."""
    n = x.dim()
    return (dim % n, x.shape[dim]) if n and -n <= dim < n else (_BAD_DIM, -1)


def _need_dim(name: str, x: torch.Tensor, dim: int) -> None:
    if x.dim() == 0:
        raise RuntimeFault("E_SHAPE", f"{name}: 'x' must have at least one dimension, got a 0-d tensor", param="x")
    need_dim(name, x, dim)


@op("dist_all_reduce", P("x", "tensor"), P("op", "str", "sum", choices=REDUCE), P("check", "bool", True))
def dist_all_reduce(ctx, x, op, check):
    """dist_all_reduce(x, op='sum', check=true): x reduced over every rank of the group (sum, mean,
    max, min, prod), x's shape, on every rank. A plain runtime is a group of one: a copy of x.
    check=false skips the ranks' meeting (one small collective less, for a hot loop whose shapes
    agree by construction): a rank whose x does not fit then fails the group (E_GROUP)."""
    name = "dist_all_reduce"
    rows = _meet(name, _row(name, x, REDUCE.index(op)), ctx.device, check)
    _same_shapes(name, rows)
    _same_args(name, rows, "reduce ops")
    _reducible(name, x.dtype, op)
    with torch.no_grad():
        y = x.detach().clone(memory_format=torch.contiguous_format)
        st = group.STATE
        if st is not None:
            import torch.distributed as dist

            _send(st, name, y, lambda: dist.all_reduce(y, op=_redop(op)))
            _count(_nbytes(y))
            if op == "mean":
                y.div_(st.world_size)
    return y


@op("dist_all_gather", P("x", "tensor"), P("dim", "int", 0), P("check", "bool", True))
def dist_all_gather(ctx, x, dim, check):
    """dist_all_gather(x, dim=0, check=true): every rank's x concatenated along dim, in rank order.
    The parts may differ in size along dim only (an uneven `dist_shard`); any other difference is
    E_SHAPE naming every rank's shape. check=false (as for dist_all_reduce): parts of one shape."""
    name = "dist_all_gather"
    d, size = _dim_arg(x, dim)
    key = [s if i != d else -1 for i, s in enumerate(x.shape)]
    rows = _meet(name, _row(name, x, d, size, key), ctx.device, check)
    if len({r[2] for r in rows}) > 1:
        raise _mismatch(name, "the ranks' tensors differ in number of dimensions", rows)
    _need_dim(name, x, dim)
    _same_args(name, rows, "dims")
    if len({r[6] for r in rows}) > 1:
        raise _mismatch(name, f"the ranks' tensors may differ in size along dim {d} only", rows)
    sizes = [r[5] for r in rows]
    st = group.STATE
    with torch.no_grad():
        if st is None:
            return x.detach().clone(memory_format=torch.contiguous_format)
        part = x.detach().contiguous()
        import torch.distributed as dist

        top = max(sizes)
        if size < top:  # the wire wants equal parts: pad, and cut each back after
            pad = list(part.shape)
            pad[d] = top - size
            part = torch.cat([part, part.new_zeros(pad)], d)
        outs = [torch.empty_like(part) for _ in range(st.world_size)]
        _send(st, name, part, lambda: dist.all_gather(outs, part))
        _count(_nbytes(x))
        if any(s != top for s in sizes):
            outs = [o.narrow(d, 0, s) for o, s in zip(outs, sizes, strict=True)]
        return torch.cat(outs, d)


@op("dist_broadcast", P("x", "tensor"), P("src", "int", 0), P("check", "bool", True))
def dist_broadcast(ctx, x, src, check):
    """dist_broadcast(x, src=0, check=true): rank src's x on every rank (every rank's x must have
    its shape and dtype: it is the buffer the value arrives in). check: as for dist_all_reduce."""
    name = "dist_broadcast"
    st = group.STATE
    world = st.world_size if st is not None else 1
    if not 0 <= src < world:
        raise RuntimeFault("E_ARG", f"{name}: 'src' must be a rank of the group (0..{world - 1}), got {src}",
                           param="src")
    rows = _meet(name, _row(name, x, src), ctx.device, check)
    _same_shapes(name, rows)
    _same_args(name, rows, "source ranks")
    with torch.no_grad():
        y = x.detach().clone(memory_format=torch.contiguous_format)
        if st is not None:
            import torch.distributed as dist

            _send(st, name, y, lambda: dist.broadcast(y, src))
            _count(_nbytes(y) if st.rank == src else 0)
    return y


@op("dist_reduce_scatter", P("x", "tensor"), P("op", "str", "sum", choices=REDUCE), P("dim", "int", 0),
    P("check", "bool", True))
def dist_reduce_scatter(ctx, x, op, dim, check):
    """dist_reduce_scatter(x, op='sum', dim=0, check=true): x reduced over the ranks, and rank r keeps
    chunk r of it along dim (x.size(dim) must be divisible by the world size: E_SHAPE otherwise).
    check: as for dist_all_reduce."""
    name = "dist_reduce_scatter"
    d, _ = _dim_arg(x, dim)
    rows = _meet(name, _row(name, x, REDUCE.index(op), d), ctx.device, check)
    _same_shapes(name, rows)
    _same_args(name, rows, "reduce ops and dims", (4, 5))
    _need_dim(name, x, dim)
    _reducible(name, x.dtype, op)
    st = group.STATE
    world = st.world_size if st is not None else 1
    if x.shape[d] % world:
        raise RuntimeFault("E_SHAPE", f"{name}: x's size along dim {d} ({x.shape[d]}) must be divisible by the "
                           f"group's world size {world}", param="x")
    with torch.no_grad():
        if st is None:
            return x.detach().clone(memory_format=torch.contiguous_format)
        import torch.distributed as dist

        whole = x.detach().movedim(d, 0).contiguous()  # chunks along dim 0 are contiguous
        out = whole.new_empty((whole.shape[0] // world, *whole.shape[1:]))
        _send(st, name, whole, lambda: dist.reduce_scatter_single(out, whole, op=_redop(op)))
        _count(_nbytes(whole))
        if op == "mean":
            out.div_(world)
        return out.movedim(0, d).contiguous()


@op("dist_all_reduce_many", P("xs", "tensors"), P("op", "str", "sum", choices=REDUCE), P("check", "bool", True),
    outputs=-1)
def dist_all_reduce_many(ctx, xs, op, check):
    """dist_all_reduce_many(xs, op='sum', check=true): each tensor of the list reduced over the ranks,
    as a list (one flat bucket per dtype on the wire, as DDP does): for gradients. check: as for
    dist_all_reduce (a data-parallel step's gradients agree by construction)."""
    name = "dist_all_reduce_many"
    shapes = [list(t.shape) for t in xs]
    dtypes = [_dtype_name(t.dtype) for t in xs]
    numel = sum(t.numel() for t in xs)
    row = [_CODES[name], _hash(dtypes), len(xs), numel, REDUCE.index(op), 0, _hash(shapes), 0, *([0] * _MAXDIM)]
    rows = _meet(name, row, ctx.device, check)
    if len({(r[2], r[3], r[6]) for r in rows}) > 1:
        got = ", ".join(f"rank {i} {r[2]} tensors of {r[3]} elements" for i, r in enumerate(rows))
        raise RuntimeFault("E_SHAPE", f"{name}: the ranks' lists differ in their tensors' shapes ({got})",
                           param="xs")
    _same_args(name, rows, "reduce ops")
    for t in xs:
        _reducible(name, t.dtype, op, "xs")
    st = group.STATE
    with torch.no_grad():
        if st is None:
            return [t.detach().clone(memory_format=torch.contiguous_format) for t in xs]
        import torch.distributed as dist

        out: list = [None] * len(xs)
        buckets: dict = {}
        for i, t in enumerate(xs):
            buckets.setdefault(t.dtype, []).append(i)
        for idx in buckets.values():
            flat = torch.cat([xs[i].detach().reshape(-1) for i in idx])
            _send(st, name, flat, lambda flat=flat: dist.all_reduce(flat, op=_redop(op)))
            _count(_nbytes(flat))
            if op == "mean":
                flat.div_(st.world_size)
            # copies, not views of one bucket: a program's fusion keeps segments that share
            # memory apart, and an optimizer's in-place update of one must not alias the others
            parts = flat.split([xs[i].numel() for i in idx])
            for i, p in zip(idx, parts, strict=True):
                out[i] = p.view(xs[i].shape).clone()
        return out


@op("dist_rank")
def dist_rank(ctx):
    """dist_rank(): this rank's number in the group, a () i64 tensor (0 on a plain runtime)."""
    st = group.STATE
    return torch.tensor(st.rank if st is not None else 0, dtype=torch.int64, device=ctx.device)


@op("dist_world_size")
def dist_world_size(ctx):
    """dist_world_size(): how many ranks the group has, a () i64 tensor (1 on a plain runtime)."""
    st = group.STATE
    return torch.tensor(st.world_size if st is not None else 1, dtype=torch.int64, device=ctx.device)


@op("dist_shard", P("x", "tensor"), P("dim", "int", 0))
def dist_shard(ctx, x, dim):
    """dist_shard(x, dim=0): this rank's part of x along dim, torch.tensor_split(x, world)[rank]
    (sizes may be uneven; a view of x). On a plain runtime all of x."""
    _need_dim("dist_shard", x, dim)
    st = group.STATE
    world, rank = (st.world_size, st.rank) if st is not None else (1, 0)
    return torch.tensor_split(x, world, dim)[rank]
