"""Programs: op sequences traced once in TypeScript, stored here, replayed in-process.

A program arrives as the same op records a batch carries (docs/protocol.md §4), plus which
handles are its inputs, its outputs and its state. Handles that none of its ops make and
that are not inputs are *captured*: tensors (or modules) of the session, resolved once at
definition and held by the program, so a parameter captured by an optimizer step stays
the very tensor the model trains.

Everything the batch path checks per op — that the op exists, the kinds of its arguments,
the choices of its string arguments — is checked once here, at definition, by binding
every record against stand-ins for the values that will flow at run time. A replay then
only fetches slot values and calls the op functions: no msgpack, no binding, no checks
(the op bodies keep their own shape and dtype checks). That is where a program beats a
batch of the same ops, and why it can run at a hook point inside a forward pass.

State is threaded by the program itself: its state outputs become its state inputs of the
next call, so a hook point needs to pass only the inputs (`prog([x, w])`).
"""

from __future__ import annotations

import torch

from .errors import RuntimeFault, classify
from .fusion import check_groups, check_ranges, fuse
from .ops.registry import DTYPE_NAMES, OPS, TORCH_DTYPES, Ctx
from .protocol import Handle

grad_on = torch.is_grad_enabled
set_grad = torch._C._set_grad_enabled  # the guard no_grad() wraps, without its Python frames

# Ops a program may not contain: they read frames or files of the request that defined it,
# hand over objects from the hatch, or define or run programs themselves (programs do not
# nest; a model's hook points may still run theirs).
_REFUSED = {"upload", "adopt", "program_define", "program_run"}


class _Stand:
    """The store a record is bound against at definition: slots map to stand-in tensors."""

    __slots__ = ("objects",)

    def __init__(self, objects: dict):
        self.objects = objects

    def get(self, hid: int):
        try:
            return self.objects[hid]
        except KeyError:
            raise RuntimeFault("E_HANDLE", f"handle {hid} does not exist in this session: it was never created, "
                               "was freed, or the op that would have made it failed", handle=hid) from None


class _Step:
    __slots__ = ("name", "fn", "template", "refs", "nested", "outs", "guarded", "writes", "update")

    def __init__(self, *, name, fn, template, refs, nested, outs, guarded, writes, update):
        self.name = name
        self.fn = fn
        self.template = template  # bound argument values; slot positions hold stand-ins
        self.refs = refs  # ((position, slot), ...) filled from the slots at run time
        self.nested = nested  # ((position, index, slot), ...) inside list arguments (cat, stack, …)
        self.outs = outs  # slot indices the results go to
        self.guarded = guarded  # a captured tensor this in-place op writes (the send guard waits for it)
        self.writes = writes  # the slots this in-place op writes, when it writes slots (guarded per run)
        self.update = update  # writes a captured tensor: an update, run without autograd


def _checked_specs(name: str, specs) -> dict:
    """specs {inputs: [{name, dtype, shape}], state: [...]}, checked once at definition."""
    if specs is None:
        return {}
    for kind in ("inputs", "state"):
        lst = specs.get(kind)
        if lst is None:
            continue
        if not isinstance(lst, list):
            raise RuntimeFault("E_ARG", f"program {name!r}: specs.{kind} must be a list", param="specs")
        for i, sp in enumerate(lst):
            where = f"specs.{kind}[{i}]"
            if not isinstance(sp, dict):
                raise RuntimeFault("E_ARG", f"program {name!r}: {where} must be a map", param="specs")
            dt = sp.get("dtype")
            if dt is not None and dt not in TORCH_DTYPES:
                raise RuntimeFault("E_ARG", f"program {name!r}: {where}.dtype must be one of "
                                   f"{', '.join(TORCH_DTYPES)}, got {dt!r}", param="specs")
            shape = sp.get("shape")
            if shape is not None and not (isinstance(shape, list) and all(
                    (isinstance(d, int) and not isinstance(d, bool) and d >= 0) or isinstance(d, str) for d in shape)):
                raise RuntimeFault("E_ARG", f"program {name!r}: {where}.shape must be a list of sizes (integers) "
                                   f"and symbolic sizes (strings), got {shape!r}", param="specs")
    return specs


def _spec_check(name: str, what: str, spec: dict | None, t) -> None:
    """An input or state value against the placeholder's declared dtype and shape
    (ints are fixed sizes; strings are symbolic dims: any size)."""
    if not isinstance(t, torch.Tensor):
        raise RuntimeFault("E_ARG", f"program {name!r}: {what} must be a tensor, got {type(t).__name__}")
    if not spec:
        return
    dt = spec.get("dtype")
    if dt is not None and TORCH_DTYPES.get(dt) != t.dtype:
        raise RuntimeFault("E_DTYPE", f"program {name!r}: {what} must be {dt}, got "
                           f"{DTYPE_NAMES.get(t.dtype, str(t.dtype))}")
    shape = spec.get("shape")
    if shape is not None:
        if len(shape) != t.dim() or any(isinstance(s, int) and s != n for s, n in zip(shape, t.shape, strict=False)):
            want = "(" + ", ".join(str(s) for s in shape) + ")"
            raise RuntimeFault("E_SHAPE", f"program {name!r}: {what} must have shape {want}, got {list(t.shape)}")


class Program:
    """A stored program. `prog(inputs)` runs it on tensors (a hook point calls it so);
    `run(ctx, inputs)` is the `program_run` op's path, with the in-place send guard."""

    def __init__(self, ctx: Ctx, name: str, records: list, inputs: list, outputs: list,
                 state_in: list, state_out: list, state_init: list, specs: dict | None, groups=None,
                 no_grad=None):
        self.name = name
        self.ctx = Ctx(ctx.device, ctx.session)  # no send guard at hook points: they run inside an op
        self.specs = _checked_specs(name, specs)
        sess = ctx.session
        if len(state_in) != len(state_out) or len(state_in) != len(state_init):
            raise RuntimeFault("E_ARG", f"program {name!r}: state_in, state_out and state_init must have the same "
                               f"length, got {len(state_in)}, {len(state_out)} and {len(state_init)}")
        slots: dict[int, int] = {}  # handle id -> slot index
        stands: dict[int, object] = {}  # handle id -> what binding sees for it
        by_identity: dict[int, int] = {}  # id(stand-in) -> slot index

        def new_slot(h: Handle, why: str) -> int:
            if type(h) is not Handle:
                raise RuntimeFault("E_PROTOCOL", f"program {name!r}: {why} must be handles")
            if h.id in slots:
                raise RuntimeFault("E_ARG", f"program {name!r}: handle {h.id} is made twice ({why})")
            slots[h.id] = len(slots)
            stand = stands[h.id] = torch.empty(0)  # a distinct stand-in per slot, found again by identity
            by_identity[id(stand)] = slots[h.id]
            return slots[h.id]

        for h in [*inputs, *state_in]:
            new_slot(h, "inputs and state")
        self.n_inputs = len(inputs)
        self.captured: dict[int, object] = {}
        self.steps: list[_Step] = []
        if not isinstance(records, list):
            raise RuntimeFault("E_PROTOCOL", f"program {name!r}: ops must be a list of op records")
        for index, rec in enumerate(records):
            try:
                self.steps.append(self._compile(rec, index, sess, stands, by_identity, new_slot))
            except RuntimeFault as f:
                f.message = f"program {name!r}, op {index}: {f.message}"
                f.args = (f.message,)
                f.extra.setdefault("index", index)
                raise
        self.out_slots = [self._source(h, slots, sess, "outputs") for h in outputs]
        self.state_out = [self._source(h, slots, sess, "state_out") for h in state_out]
        self.state = [self._captured_tensor(h, sess, "state_init") for h in state_init]
        for i, t in enumerate(self.state):
            _spec_check(name, f"state {i}", self._spec("state", i), t)
        self.n_slots = len(slots)
        self.guarded = [st.guarded for st in self.steps if st.guarded is not None]
        # segments to replay side by side (fusion.py), fused after a first run as written
        self.groups = check_groups(name, groups, len(self.steps))
        # ranges that run without autograd (an optimizer step): nothing there joins a graph
        for start, end in check_ranges(name, no_grad, len(self.steps)):
            for st in self.steps[start:end]:
                st.update = True

    # ---- definition ----

    def _captured_tensor(self, h, sess, why: str):
        if type(h) is not Handle:
            raise RuntimeFault("E_PROTOCOL", f"program {self.name!r}: {why} must be handles")
        return sess.get(h.id)

    def _source(self, h, slots, sess, why: str):
        """Where an output comes from: a slot index, or ('const', object) for a captured value."""
        if type(h) is not Handle:
            raise RuntimeFault("E_PROTOCOL", f"program {self.name!r}: {why} must be handles")
        if h.id in slots:
            return slots[h.id]
        return ("const", sess.get(h.id))

    def _compile(self, rec, index, sess, stands, by_identity, new_slot) -> _Step:
        if not isinstance(rec, dict) or not isinstance(rec.get("op"), str) or not isinstance(rec.get("out"), list):
            raise RuntimeFault("E_PROTOCOL", "an op record must be a map {op: str, out: [handles], args, kw}")
        name = rec["op"]
        if name in _REFUSED:
            raise RuntimeFault("E_ARG", f"{name} cannot run inside a program (make the tensor before tracing "
                               "and use it there: it is captured)", op=name)
        d = OPS.get(name)
        if d is None:
            raise RuntimeFault("E_UNKNOWN_OP", f"unknown op {name!r}", op=name)
        args, kw = rec.get("args") or [], rec.get("kw") or {}
        if not isinstance(args, list) or not isinstance(kw, dict):
            raise RuntimeFault("E_PROTOCOL", f"{name}: args must be a list and kw a map")
        # Captured handles join the stand-in store as the real objects.
        for h in _handles_in(args, kw):
            if h.id not in stands:
                obj = sess.get(h.id)
                self.captured[h.id] = obj
                stands[h.id] = obj
        bound = d.bind_args(args, kw, _Stand(stands))
        refs, nested, guarded, writes = [], [], None, ()
        for pos, v in enumerate(bound):
            slot = by_identity.get(id(v))
            if slot is not None:
                refs.append((pos, slot))
            elif isinstance(v, list):
                for j, x in enumerate(v):
                    s = by_identity.get(id(x))
                    if s is not None:
                        nested.append((pos, j, s))
            if d.inplace and pos == 0 and isinstance(v, torch.Tensor):
                if slot is None:
                    guarded = v
                else:
                    writes = (slot,)
        outs = [new_slot(h, f"outputs of {name}") for h in rec["out"]]
        if d.outputs >= 0 and len(outs) != d.outputs:
            raise RuntimeFault("E_ARG", f"{name}: makes {d.outputs} outputs but the record names {len(outs)}")
        template = [None if by_identity.get(id(v)) is not None else v for v in bound]
        # an in-place write into a captured tensor (optimizer state, a mask, an EMA) is an update:
        # with autograd on, an operand that requires grad would chain a graph onto it, run after run
        return _Step(name=name, fn=d.fn, template=template, refs=tuple(refs), nested=tuple(nested), outs=tuple(outs),
                     guarded=guarded, writes=writes, update=guarded is not None)

    def _spec(self, kind: str, i: int):
        lst = self.specs.get(kind)
        return lst[i] if isinstance(lst, list) and i < len(lst) and isinstance(lst[i], dict) else None

    # ---- replay ----

    def run(self, ctx: Ctx, inputs: list) -> list:
        """The program_run op: inputs checked against their specs, then replayed."""
        if len(inputs) != self.n_inputs:
            raise RuntimeFault("E_ARG", f"program {self.name!r} takes {self.n_inputs} inputs, got {len(inputs)}")
        for i, t in enumerate(inputs):
            spec = self._spec("inputs", i)
            _spec_check(self.name, f"input {spec.get('name', i) if spec else i}", spec, t)
        if ctx.guard is not None:
            for t in self.guarded:
                ctx.guard(t)
        return self(inputs, ctx.guard)

    def __call__(self, inputs: list, guard=None) -> list:
        if len(inputs) != self.n_inputs:  # a hook point calls this directly, with what it has
            raise RuntimeFault("E_ARG", f"program {self.name!r} takes {self.n_inputs} inputs, got {len(inputs)}")
        vals: list = [None] * self.n_slots
        vals[: self.n_inputs] = inputs
        vals[self.n_inputs: self.n_inputs + len(self.state)] = self.state
        ctx = self.ctx
        step = None
        try:
            for step in self.steps:
                args = step.template.copy()
                for pos, slot in step.refs:
                    args[pos] = vals[slot]
                if step.nested:
                    for pos, j, slot in step.nested:
                        if args[pos] is step.template[pos]:
                            args[pos] = list(args[pos])
                        args[pos][j] = vals[slot]
                if step.writes and guard is not None:
                    for w in step.writes:
                        guard(vals[w])  # an input or state may alias memory still being sent
                if step.update and grad_on():
                    set_grad(False)
                    try:
                        r = step.fn(ctx, *args)
                    finally:
                        set_grad(True)
                else:
                    r = step.fn(ctx, *args)
                outs = step.outs
                if not outs:
                    continue
                if len(outs) == 1:
                    vals[outs[0]] = r if type(r) is not tuple and type(r) is not list else r[0]
                else:
                    for o, x in zip(outs, r, strict=True):
                        vals[o] = x
        except RuntimeFault as f:
            i = self.steps.index(step) if step is not None else 0
            f.message = f"program {self.name!r}, op {i} ({step.name if step else '?'}): {f.message}"
            f.args = (f.message,)
            raise
        except Exception as e:  # noqa: BLE001 — replay failures go back typed, naming the op
            i = self.steps.index(step) if step is not None else 0
            raise classify(e, f"program {self.name!r}, op {i} ({step.name if step else '?'})") from None
        if self.groups:
            self.steps = fuse(self.steps, self.groups, vals, _Step)
            self.groups = []
        if self.state:
            # detached: a state that depends on parameters must not carry this run's graph into the next
            self.state = [(s[1] if type(s) is tuple else vals[s]).detach() for s in self.state_out]
        return [s[1] if type(s) is tuple else vals[s] for s in self.out_slots]

    def describe(self) -> dict:
        return {"kind": "program", "name": self.name, "ops": [s.name for s in self.steps],
                "inputs": self.n_inputs, "outputs": len(self.out_slots), "state": len(self.state),
                "captured": len(self.captured)}


def _handles_in(args: list, kw: dict):
    for v in (*args, *kw.values()):
        if type(v) is Handle:
            yield v
        elif isinstance(v, list):
            for x in v:
                if type(x) is Handle:
                    yield x
