"""Ops that define, run and inspect programs (liaison_runtime/program.py)."""

from __future__ import annotations

from ..errors import RuntimeFault
from ..protocol import Handle
from .registry import P, op


def _cls():
    # imported here: liaison_runtime.program imports the op table, which imports this module
    from ..program import Program

    return Program


def _program(name: str, obj):
    if isinstance(obj, _cls()):
        return obj
    raise RuntimeFault("E_ARG", f"{name}: argument 'program' must be a program; the handle holds a "
                       f"{type(obj).__name__}", param="program")


@op("program_define", P("name", "str"), P("ops", "any"), P("inputs", "any"), P("outputs", "any"),
    P("state_in", "any", None), P("state_out", "any", None), P("state_init", "any", None), P("specs", "any", None),
    P("groups", "any", None), P("no_grad", "any", None))
def program_define(ctx, name, ops, inputs, outputs, state_in, state_out, state_init, specs, groups, no_grad):
    """program_define(name, ops, inputs, outputs, state_in=[], state_out=[], state_init=[], specs=None,
    groups=None, no_grad=None): store a traced program. `ops` are op records as in a batch; `inputs`, `outputs`,
    `state_in`, `state_out` list handles of the trace; `state_init` lists session tensors holding
    the first state. Handles no op makes are captured from the session. Every record is checked
    now. `groups`: lists of op-index boundaries [s0, …, sn] of segments that are one computation
    over different tensors (an optimizer update per parameter), replayed side by side as
    multi-tensor ops after the first run when they check out (liaison_runtime/fusion.py).
    `no_grad`: [start, end) op ranges that run without autograd (an optimizer step)."""
    for field, v in (("inputs", inputs), ("outputs", outputs), ("state_in", state_in or []),
                     ("state_out", state_out or []), ("state_init", state_init or [])):
        if not isinstance(v, list):
            raise RuntimeFault("E_ARG", f"program_define: argument '{field}' must be a list of handles", param=field)
    if specs is not None and not isinstance(specs, dict):
        raise RuntimeFault("E_ARG", "program_define: argument 'specs' must be a map", param="specs")
    return _cls()(ctx, name, ops, inputs, outputs, state_in or [], state_out or [], state_init or [], specs,
                  groups, no_grad)


@op("program_run", P("program", "object"), P("inputs", "any", None), outputs=-1)
def program_run(ctx, program, inputs):
    """program_run(program, inputs=[]): replay a program on these tensors; its outputs, in order.
    Its state outputs become its state for the next run."""
    prog = _program("program_run", program)
    inputs = inputs or []
    if not isinstance(inputs, list):
        raise RuntimeFault("E_ARG", "program_run: argument 'inputs' must be a list of tensors", param="inputs")
    vals = []
    for i, h in enumerate(inputs):
        if type(h) is not Handle:
            raise RuntimeFault("E_ARG", f"program_run: inputs[{i}] must be a tensor handle", param="inputs")
        vals.append(ctx.session.get(h.id))
    return prog.run(ctx, vals)


@op("program_state", P("program", "object"), P("index", "int"))
def program_state(ctx, program, index):
    """program_state(program, index): the program's current state tensor number `index`."""
    prog = _program("program_state", program)
    if not 0 <= index < len(prog.state):
        raise RuntimeFault("E_ARG", f"program_state: program {prog.name!r} has {len(prog.state)} state tensors; "
                           f"index {index} is out of range", param="index")
    return prog.state[index]
