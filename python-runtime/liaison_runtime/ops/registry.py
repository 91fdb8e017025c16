"""The op table: every tensor op the runtime will run, with its signature.

An op is a plain function registered with `@op(name, *params)`. The registry binds the
wire arguments (positional `args` + keyword `kw`) to the declared params and checks each
one before the function runs, so an op body never sees a handle, a wrong kind or a
missing argument. Errors name the op and the parameter.

Nothing else runs: there is no pickle, no eval, no attribute lookup by name — a name that
is not in OPS is refused with E_UNKNOWN_OP.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import RuntimeFault
from ..protocol import Handle

TORCH_DTYPES: dict[str, torch.dtype] = {
    "f32": torch.float32, "f64": torch.float64, "f16": torch.float16, "bf16": torch.bfloat16,
    "i32": torch.int32, "i64": torch.int64, "u8": torch.uint8, "bool": torch.bool,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}
FLOATS = frozenset({torch.float32, torch.float64, torch.float16, torch.bfloat16})

_MISSING = object()


class Ctx:
    """What an op may use besides its arguments: the device, the session's RNG, and the
    guard an in-place write must pass (it waits for sends still reading that memory)."""

    __slots__ = ("device", "session", "guard")

    def __init__(self, device: torch.device, session, guard=None):
        self.device = device
        self.session = session
        self.guard = guard

    def generator(self, seed, device: torch.device | None = None):
        """A generator for a seeded op (on `device`, default the runtime's), or the session's
        own stream on the runtime's device when seed is None."""
        if seed is None:
            return self.session.generator(self.device)
        g = torch.Generator(device=device or self.device)
        g.manual_seed(seed)
        return g


def _fail(op: str, param: str, what: str, got) -> RuntimeFault:
    return RuntimeFault("E_ARG", f"{op}: argument '{param}' must be {what}, got {_describe(got)}",
                        param=param)


def _describe(v) -> str:
    if isinstance(v, Handle):
        return f"tensor handle {v.id}"
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)}"
    return f"{type(v).__name__} {v!r}"[:80]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---- checkers: (op, param, value, store) -> converted value, or raise RuntimeFault ----

def _deref(op, p, h: Handle, store) -> torch.Tensor:
    try:
        t = store.get(h.id)
    except RuntimeFault as f:
        # The store's message knows the handle but not which op argument named it.
        raise RuntimeFault(f.code, f"{op}: argument '{p}': {f.message}", param=p, **f.extra) from None
    if type(t) is torch.Tensor or isinstance(t, torch.Tensor):
        return t
    raise RuntimeFault("E_ARG", f"{op}: argument '{p}' must be a tensor; handle {h.id} holds a "
                       f"{type(t).__name__}", param=p)


_Tensor = torch.Tensor
_NUMBERS = (int, float, bool)


def _tensor(op, p, v, store):
    # fast path first: these checkers run for every argument of every op
    if type(v) is Handle:
        t = store.objects.get(v.id)
        if type(t) is _Tensor:
            return t
        return _deref(op, p, v, store)
    raise _fail(op, p, "a tensor", v)


def _scalar(op, p, v, store):
    if type(v) in _NUMBERS:
        return v
    raise _fail(op, p, "a number or bool", v)


def _tensor_or_scalar(op, p, v, store):
    if type(v) is Handle:
        t = store.objects.get(v.id)
        if type(t) is _Tensor:
            return t
        return _deref(op, p, v, store)
    if type(v) in _NUMBERS:
        return v
    raise _fail(op, p, "a tensor or a number", v)


def _int(op, p, v, store):
    if _is_int(v):
        return v
    raise _fail(op, p, "an integer", v)


# what torch's generators take: manual_seed wraps a negative seed into the u64 range
_SEED_MIN, _SEED_MAX = -(1 << 63), (1 << 64) - 1


def _seed(op, p, v, store):
    if _is_int(v) and _SEED_MIN <= v <= _SEED_MAX:
        return v
    raise _fail(op, p, f"an integer seed from {_SEED_MIN} to {_SEED_MAX}", v)


def _float(op, p, v, store):
    if _is_num(v):
        return float(v)
    raise _fail(op, p, "a number", v)


def _bool(op, p, v, store):
    if isinstance(v, bool):
        return v
    raise _fail(op, p, "true or false", v)


def _str(op, p, v, store):
    if isinstance(v, str):
        return v
    raise _fail(op, p, "a string", v)


def _ints(op, p, v, store):
    """A list of ints; a single int is taken as a list of one (dims, shapes)."""
    if _is_int(v):
        return [v]
    if isinstance(v, (list, tuple)) and all(_is_int(x) for x in v):
        return list(v)
    raise _fail(op, p, "an integer or a list of integers", v)


def _int_or_ints(op, p, v, store):
    """An int kept as an int, or a list of ints kept as a list (split sizes vs sections)."""
    if _is_int(v):
        return v
    if isinstance(v, (list, tuple)) and all(_is_int(x) for x in v):
        return list(v)
    raise _fail(op, p, "an integer or a list of integers", v)


def _shape(op, p, v, store):
    if isinstance(v, (list, tuple)) and all(_is_int(x) and x >= 0 for x in v):
        return list(v)
    raise _fail(op, p, "a shape (a list of non-negative integers)", v)


def _tensors(op, p, v, store):
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, Handle) for x in v):
        return [_deref(op, p, x, store) for x in v]
    raise _fail(op, p, "a non-empty list of tensors", v)


def _dtype(op, p, v, store):
    if isinstance(v, str) and v in TORCH_DTYPES:
        return TORCH_DTYPES[v]
    raise _fail(op, p, f"a dtype name ({', '.join(TORCH_DTYPES)})", v)


def _object(op, p, v, store):
    if isinstance(v, Handle):
        try:
            return store.get(v.id)
        except RuntimeFault as f:
            raise RuntimeFault(f.code, f"{op}: argument '{p}': {f.message}", param=p, **f.extra) from None
    raise _fail(op, p, "a handle", v)


def _any(op, p, v, store):
    return v


CHECKERS: dict[str, Callable] = {
    "tensor": _tensor, "scalar": _scalar, "tensor|scalar": _tensor_or_scalar, "int": _int, "seed": _seed,
    "float": _float, "bool": _bool, "str": _str, "ints": _ints, "int|ints": _int_or_ints, "shape": _shape,
    "tensors": _tensors, "dtype": _dtype, "object": _object, "any": _any,
}


@dataclass(frozen=True)
class Param:
    """One declared parameter. `kind` is a key of CHECKERS, optionally ending in '?'
    (None is then allowed). `choices` limits a str param to a set of values."""

    name: str
    kind: str
    default: Any = _MISSING
    choices: tuple | None = None


def P(name: str, kind: str, default: Any = _MISSING, choices: tuple | None = None) -> Param:
    base = kind.rstrip("?")
    if base not in CHECKERS:
        raise ValueError(f"unknown param kind {kind!r}")
    return Param(name, kind, default, choices)


@dataclass
class OpDef:
    name: str
    fn: Callable
    params: tuple[Param, ...]
    outputs: int  # how many tensors the op returns; -1: a list whose length the caller says
    inplace: bool  # writes into its first tensor argument (the runtime then waits for sends)
    doc: str
    _plan: tuple = ()
    _names: tuple = ()
    _fast: Callable | None = None

    def __post_init__(self):
        self._names = tuple(p.name for p in self.params)
        self._fast = _fast_binder(self.params)
        self._plan = tuple(
            (p.name, CHECKERS[p.kind.rstrip("?")], p.kind.endswith("?"), p.default, p.choices)
            for p in self.params
        )

    def bind(self, args: list, kw: dict, store) -> dict:
        """Wire args -> checked keyword arguments for fn."""
        return dict(zip(self._names, self.bind_args(args, kw, store), strict=True))

    def bind_args(self, args: list, kw: dict, store) -> list:
        """Wire args -> checked values for fn, in declared order (fn(ctx, *values))."""
        plan = self._plan
        if self._fast is not None and not kw and len(args) == len(plan):
            bound = self._fast(args, store.objects)
            if bound is not None:
                return bound
        if not kw and len(args) == len(plan):
            # the common case on the hot path: every parameter given positionally
            out = []
            for (name, check, optional, _default, choices), v in zip(plan, args, strict=True):
                if v is None and optional:
                    out.append(None)
                    continue
                v = check(self.name, name, v, store)
                if choices is not None and v not in choices:
                    raise RuntimeFault("E_ARG", f"{self.name}: argument '{name}' must be one of "
                                       f"{', '.join(map(str, choices))}; got {v!r}", param=name)
                out.append(v)
            return out
        if len(args) > len(plan):
            raise RuntimeFault("E_ARG", f"{self.name}: takes at most {len(plan)} arguments, got {len(args)}")
        out = {}
        for i, (name, check, optional, default, choices) in enumerate(plan):
            if i < len(args):
                v = args[i]
                if kw and name in kw:
                    raise RuntimeFault("E_ARG", f"{self.name}: argument '{name}' given twice", param=name)
            elif kw and name in kw:
                v = kw[name]
            elif default is not _MISSING:
                out[name] = default
                continue
            else:
                raise RuntimeFault("E_ARG", f"{self.name}: missing argument '{name}'", param=name)
            if v is None and optional:
                out[name] = None
                continue
            v = check(self.name, name, v, store)
            if choices is not None and v not in choices:
                raise RuntimeFault("E_ARG", f"{self.name}: argument '{name}' must be one of "
                                   f"{', '.join(map(str, choices))}; got {v!r}", param=name)
            out[name] = v
        if kw:
            extra = [k for k in kw if k not in out]
            if extra:
                raise RuntimeFault("E_ARG", f"{self.name}: unexpected argument '{extra[0]}'", param=extra[0])
        return [out[n] for n in self._names]


def _fast_binder(params: tuple[Param, ...]):
    """For the shapes most ops have — (tensor) and (tensor, tensor-or-number) — a binder
    without the generic loop. It returns None whenever anything is unusual, and the
    generic path then checks again and raises the precise error."""
    kinds = tuple(p.kind for p in params)
    if any(p.choices for p in params):
        return None
    if kinds == ("tensor",):
        def one(args, objects):
            a = args[0]
            if type(a) is Handle:
                t = objects.get(a.id)
                if type(t) is _Tensor:
                    return [t]
            return None
        return one
    if kinds in (("tensor", "tensor|scalar"), ("tensor", "tensor")):
        scalars = _NUMBERS if kinds[1] == "tensor|scalar" else ()

        def two(args, objects):
            a, b = args
            if type(a) is not Handle:
                return None
            t = objects.get(a.id)
            if type(t) is not _Tensor:
                return None
            if type(b) is Handle:
                u = objects.get(b.id)
                if type(u) is not _Tensor:
                    return None
                return [t, u]
            if type(b) in scalars:
                return [t, b]
            return None
        return two
    return None


OPS: dict[str, OpDef] = {}

# op name -> build(varying, n) -> kernel(ctx, *args) or None: the op's side-by-side form for a
# program's fused groups (fusion.py), where an op knows a faster one than a loop over its calls
FUSED: dict = {}


def fused(name: str):
    """Register the side-by-side form of op `name`; `varying[i]` says whether argument i differs per call."""

    def deco(build):
        FUSED[name] = build
        return build

    return deco


def _update(fn):
    """An in-place op on a parameter (a leaf that requires grad) is an update, as an optimizer
    step or a pruning mask makes: autograd refuses it unless it runs under no_grad."""

    set_grad = torch._C._set_grad_enabled  # the guard no_grad() wraps, without its Python frames

    @functools.wraps(fn)
    def run(ctx, *args, **kw):
        target = args[0] if args else next(iter(kw.values()), None)
        # a parameter, or a view of one (a slice a pruner or a subnetwork writes back)
        if isinstance(target, torch.Tensor) and target.requires_grad and torch.is_grad_enabled() and (
                target.is_leaf or (target._base is not None and target._base.is_leaf)):
            set_grad(False)
            try:
                return fn(ctx, *args, **kw)
            finally:
                set_grad(True)
        return fn(ctx, *args, **kw)

    return run


def op(name: str, *params: Param, outputs: int = 1, inplace: bool = False):
    """Register `fn(ctx, **bound)` under `name`. fn returns a tensor, or a tuple/list of
    tensors when outputs != 1."""

    def deco(fn):
        if name in OPS:
            raise ValueError(f"op {name!r} registered twice")
        OPS[name] = OpDef(name, _update(fn) if inplace else fn, tuple(params), outputs, inplace,
                          (fn.__doc__ or "").strip())
        return fn

    return deco
