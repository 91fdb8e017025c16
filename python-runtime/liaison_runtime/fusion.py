"""Side-by-side replay of a program's repeated segments as multi-tensor ops.

An optimizer's update traced over every parameter records the same few ops once per
parameter: a 4-layer MLP's Nesterov step is 8 copies of 6 ops, 48 dispatches a step. When
the trace marks such a run as a group (sdk/program.ts `traceEach`) and its segments check
out as one computation over different tensors that stay out of each other's writes, the
group is replayed op by op across the segments: `torch._foreach_*` where the op has one
(one dispatch for every parameter; on CUDA one kernel launch), a tight loop otherwise.

A group is fused only after a first run of the program as written, so every op's own
checks (shapes, dtypes, writability) have passed on the real tensors, and only if no
tensor one segment writes shares memory with a tensor another segment touches — then
running the segments column by column computes exactly what running them one after the
other does. A group holding a collective (ops/dist.py) is never fused: it is replayed in
the order traced, the same on every rank of a group.
"""

from __future__ import annotations

import torch

from .errors import RuntimeFault
from .ops.dist import COLLECTIVES
from .ops.registry import FUSED, OPS


def check_groups(name: str, groups, n_steps: int) -> list[list[int]]:
    """`groups`: lists of segment boundaries [s0, s1, …, sn] (segment i = ops s_i … s_{i+1}−1),
    increasing, inside the program, not overlapping one another."""
    if groups is None:
        return []
    if not isinstance(groups, list):
        raise RuntimeFault("E_ARG", f"program {name!r}: 'groups' must be a list of boundary lists", param="groups")
    out, end = [], 0
    for g in sorted(groups, key=lambda b: b[0] if isinstance(b, list) and b else -1):
        ok = isinstance(g, list) and len(g) >= 2 and all(type(b) is int for b in g)
        if not ok or any(b <= a for a, b in zip(g, g[1:], strict=False)) or g[0] < end or g[-1] > n_steps:
            raise RuntimeFault("E_ARG", f"program {name!r}: group {g!r} must be increasing op indices (at least 2) "
                               f"within 0..{n_steps}, not overlapping another group", param="groups")
        out.append(g)
        end = g[-1]
    return out


def check_ranges(name: str, ranges, n_steps: int) -> list[tuple[int, int]]:
    """`ranges`: [start, end) op-index pairs inside the program."""
    if ranges is None:
        return []
    ok = isinstance(ranges, list) and all(
        isinstance(r, list) and len(r) == 2 and all(type(b) is int for b in r) and 0 <= r[0] <= r[1] <= n_steps
        for r in ranges)
    if not ok:
        raise RuntimeFault("E_ARG", f"program {name!r}: 'no_grad' must be a list of [start, end) op index pairs "
                           f"within 0..{n_steps}", param="no_grad")
    return [(a, b) for a, b in ranges]


def fuse(steps: list, groups: list[list[int]], vals: list, make_step) -> list:
    """`steps` with each fusable group replaced by one fused step per op position.
    `vals`: the slot values of the run that just succeeded; `make_step(**fields)` builds a step."""
    out, at = [], 0
    for g in groups:
        out.extend(steps[at:g[0]])
        fused = _plan(steps, g, vals, make_step)
        out.extend(fused if fused is not None else steps[g[0]:g[-1]])
        at = g[-1]
    out.extend(steps[at:])
    return out


def _plan(steps, bounds, vals, make_step):
    segs = [steps[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    length = len(segs[0])
    if len(segs) < 2 or any(len(s) != length for s in segs):
        return None
    if any(st.name.split(" ", 1)[0] in COLLECTIVES for seg in segs for st in seg):
        return None  # a collective stays where the trace put it: every rank replays the same order
    # where each slot a segment makes comes from: (op position in the segment, output number)
    made = [{o: (j, k) for j, st in enumerate(seg) for k, o in enumerate(st.outs)} for seg in segs]
    touched = [_touched(seg, vals) for seg in segs]
    if not _independent(touched):
        return None
    fused = []
    for j in range(length):
        step = _column([seg[j] for seg in segs], made, [t[0][j] for t in touched], make_step)
        if step is None:
            return None
        fused.append(step)
    return fused


def _args(st, vals) -> list:
    """A step's arguments as its last run saw them."""
    args = list(st.template)
    for pos, slot in st.refs:
        args[pos] = vals[slot]
    for pos, i, slot in st.nested:
        args[pos] = list(args[pos])
        args[pos][i] = vals[slot]
    return args


def _touched(seg, vals):
    """Per step, the tensor an in-place op writes (or None); and every tensor the segment reads or writes."""
    writes, every = [], []
    for st in seg:
        args = _args(st, vals)
        d = OPS.get(st.name.split(" ", 1)[0])
        w = args[0] if d is not None and d.inplace and args and isinstance(args[0], torch.Tensor) else None
        writes.append(w)
        for a in args:
            every.extend(t for t in (a if isinstance(a, list) else (a,)) if isinstance(t, torch.Tensor) and t.numel())
    return writes, every


def _independent(touched) -> bool:
    """No memory one segment writes is touched by another segment (compared by storage)."""
    owner: dict[int, int] = {}
    for i, (writes, _) in enumerate(touched):
        for t in writes:
            if t is not None and t.numel() and owner.setdefault(t.untyped_storage().data_ptr(), i) != i:
                return False
    return all(owner.get(t.untyped_storage().data_ptr(), i) == i for i, (_, every) in enumerate(touched) for t in every)


def _column(column, made, written, make_step):
    """One op position across the segments -> one fused step, or None when they differ."""
    first = column[0]
    if any(st.fn is not first.fn or len(st.template) != len(first.template) or len(st.outs) != len(first.outs)
           or st.nested for st in column):
        return None
    update = any(st.update for st in column)
    if any(w is not None and w.requires_grad for w in written):
        # an in-place write into a tensor autograd tracks: a parameter (or a view of one) is an
        # update, run without autograd as the op's own wrapper would; anything else stays as written
        if not all(w is not None and (w.is_leaf or (w._base is not None and w._base.is_leaf)) for w in written):
            return None
        update = True
    n = len(column)
    template, refs, nested, varying = [], [], [], []
    for pos in range(len(first.template)):
        slots = [dict(st.refs).get(pos) for st in column]
        if all(s is None for s in slots):
            values = [st.template[pos] for st in column]
            same = _same(values)
            template.append(values[0] if same else values)
            varying.append(not same)
        elif all(s is not None for s in slots):
            local = [m.get(s) for m, s in zip(made, slots, strict=True)]
            if all(x is None for x in local) and len(set(slots)) == 1:
                template.append(None)  # one value from before the group, as a learning rate
                refs.append((pos, slots[0]))
                varying.append(False)
            elif all(x is None for x in local) or all(x == local[0] for x in local):
                template.append([None] * n)  # each segment's own value
                nested.extend((pos, i, s) for i, s in enumerate(slots))
                varying.append(True)
            else:
                return None
        else:
            return None
    writes = tuple(w for st in column for w in st.writes)
    return make_step(name=f"{first.name} (fused over {n} segments)", fn=_kernel(first, varying, n, template),
                     template=template, refs=tuple(refs), nested=tuple(nested),
                     outs=tuple(o for st in column for o in st.outs), guarded=None, writes=writes, update=update)


def _same(values) -> bool:
    """One constant for every segment: the same object, or equal plain values (numbers, strings, lists)."""
    v0 = values[0]
    if all(v is v0 for v in values):
        return True
    if isinstance(v0, torch.Tensor):
        return False
    try:
        return all(type(v) is type(v0) and bool(v == v0) for v in values)
    except Exception:  # noqa: BLE001 — a value without a plain equality is taken as differing
        return False


def _kernel(first, varying, n, template):
    """torch._foreach_* for the op when it has one and the varying arguments are tensors; else a loop."""
    own = FUSED.get(first.name)  # an op's own side-by-side form (ops/registry.py `fused`)
    run = own(varying, n) if own is not None else None
    if run is not None:
        return run
    build = _FOREACH.get(first.name)
    lists_ok = all(not v or all(x is None or isinstance(x, torch.Tensor) for x in t)
                   for v, t in zip(varying, template, strict=True))
    run = build(varying, n) if build is not None and varying and varying[0] and lists_ok else None
    if run is not None:
        return run
    fn, n_outs = first.fn, len(first.outs)

    def loop(ctx, *args):
        out = []
        for i in range(n):
            r = fn(ctx, *[a[i] if v else a for a, v in zip(args, varying, strict=True)])
            if n_outs == 1:
                out.append(r[0] if type(r) in (tuple, list) else r)
            elif n_outs > 1:
                out.extend(r)
        return out

    return loop


def _as_list(a, v, n):
    """A varying argument as is; a shared tensor repeated per segment; a shared number as is."""
    if v:
        return a
    return [a] * n if isinstance(a, torch.Tensor) else a


def _foreach(op: str, n_args: int, returns_input: bool):
    """Builds a kernel calling torch._foreach_<op>(lists…, *extras) on the bound arguments."""
    f = getattr(torch, f"_foreach_{op}")

    def build(varying, n):
        if any(varying[n_args:]):
            return None  # a per-segment value where foreach takes one: the loop handles it

        def run(ctx, *args):
            lists = [_as_list(a, v, n) for a, v in zip(args[:n_args], varying, strict=False)]
            r = f(*lists, *args[n_args:])
            return lists[0] if returns_input else r

        return run

    return build


def _with_alpha(op: str):
    """add_/sub_(input, other, alpha): foreach takes alpha with a tensor list, not with a number."""
    f = getattr(torch, f"_foreach_{op}")

    def build(varying, n):
        if varying[2]:
            return None

        def run(ctx, input, other, alpha):
            if varying[1] or isinstance(other, torch.Tensor):
                f(input, _as_list(other, varying[1], n), alpha=alpha)
            else:
                f(input, other * alpha)
            return input

        return run

    return build


# Ops whose registry body, once its checks have passed, is exactly the torch call.
_FOREACH = {
    "mul_": _foreach("mul_", 2, True), "div_": _foreach("div_", 2, True),
    "add_": _with_alpha("add_"), "sub_": _with_alpha("sub_"),
    "addcmul_": _foreach("addcmul_", 3, True), "addcdiv_": _foreach("addcdiv_", 3, True),
    "lerp_": _foreach("lerp_", 3, True),
    "mul": _foreach("mul", 2, False), "div": _foreach("div", 2, False),
    "add": _foreach("add", 2, False), "sub": _foreach("sub", 2, False),
    "sqrt": _foreach("sqrt", 1, False), "neg": _foreach("neg", 1, False),
    "zero_": _foreach("zero_", 1, True),
}
