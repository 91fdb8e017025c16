"""Calls ops the way the executor does, for the op tests: tensors go into a session's store
and reach the op as handles, through the op's own argument binding."""

import pytest
import torch

from liaison_runtime.errors import RuntimeFault
from liaison_runtime.ops import OPS
from liaison_runtime.ops.registry import Ctx
from liaison_runtime.program import Program
from liaison_runtime.protocol import Handle
from liaison_runtime.session import Session

CPU = torch.device("cpu")


class Runner:
    """One session; `runner(name, *args, **kw)` runs op `name` and returns its result."""

    def __init__(self, session: Session | None = None):
        self.session = session or Session("test")
        self.ctx = Ctx(CPU, self.session)
        self._next = 1

    def wire(self, v):
        if isinstance(v, (torch.Tensor, torch.nn.Module, Program)):
            hid, self._next = self._next, self._next + 1
            self.session.put(hid, v)
            return Handle(hid)
        if isinstance(v, list) and v and all(isinstance(x, torch.Tensor) for x in v):
            return [self.wire(x) for x in v]
        return v

    def __call__(self, name, *args, **kw):
        d = OPS[name]
        bound = d.bind([self.wire(a) for a in args], {k: self.wire(v) for k, v in kw.items()}, self.session)
        return d.fn(self.ctx, **bound)

    def obj(self, v) -> Handle:
        """Store any object (a hook, a program) in the session and name it by a handle."""
        hid, self._next = self._next, self._next + 1
        self.session.put(hid, v)
        return Handle(hid)


def fault(code, fn, *args, **kw) -> RuntimeFault:
    """fn(*args, **kw) must raise a RuntimeFault with this code; returns it."""
    with pytest.raises(RuntimeFault) as info:
        fn(*args, **kw)
    assert info.value.code == code, info.value.message
    return info.value


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Torch on one thread for a module of tiny models, which imports this fixture: two
    intra-op workers only spin against each other (and against other test processes on a
    shared machine), which made such modules ~15x slower."""
    was = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(was)


def greedy(m, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """The reference for cached decoding: `steps` greedy tokens after (B, T0) `prompt`, each
    from a full forward over everything so far (no cache) -> (B, T0 + steps)."""
    seq = prompt
    with torch.no_grad():
        for _ in range(steps):
            seq = torch.cat([seq, m(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    return seq
