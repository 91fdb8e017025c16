"""The executor's inline loop for common op records (Executor._run_all) behaves exactly as the
general path (Executor._run) does: the same results, the same typed errors with the same
fields, the same ops counted and frees applied, for records it takes and records it must not."""

import pytest
import torch

from liaison_runtime.errors import RuntimeFault
from liaison_runtime.executor import Executor
from liaison_runtime.protocol import Handle as H


class GeneralOnly(Executor):
    """Every record through `_run`, as the executor ran them before the inline loop."""

    def _run_all(self, ctx, sess, ops, buffers, ran):
        for i, rec in enumerate(ops):
            ran[0] = i
            self._run(ctx, sess, rec, buffers, i)
        ran[0] = len(ops)


SETUP = [
    {"op": "ones", "out": [H(1)], "args": [[2, 3]]},
    {"op": "ones", "out": [H(2)], "args": [[4]]},
    {"op": "arange", "out": [H(3)], "args": [6]},  # an integer tensor
    {"op": "zeros", "out": [H(4)], "args": [[3]]},
]

RECORDS = {
    "binary with a number": {"op": "add", "out": [H(10)], "args": [H(1), 0.5]},
    "binary with a tensor": {"op": "mul", "out": [H(10)], "args": [H(1), H(1)]},
    "unary": {"op": "tanh", "out": [H(10)], "args": [H(1)]},
    "broadcast mismatch": {"op": "add", "out": [H(10)], "args": [H(1), H(2)]},
    "matmul mismatch": {"op": "matmul", "out": [H(10)], "args": [H(1), H(1)]},
    "float-only op on integers": {"op": "tanh", "out": [H(10)], "args": [H(3)]},
    "missing handle": {"op": "relu", "out": [H(10)], "args": [H(99)]},
    "wrong argument kind": {"op": "add", "out": [H(10)], "args": [H(1), "seven"]},
    "missing argument": {"op": "add", "out": [H(10)], "args": [H(1)]},
    "too many arguments": {"op": "relu", "out": [H(10)], "args": [H(1), 2]},
    "empty kw": {"op": "add", "out": [H(10)], "args": [H(1), 2], "kw": {}},
    "falsy kw that is not a map": {"op": "add", "out": [H(10)], "args": [H(1), 2], "kw": 0},
    "kw given twice": {"op": "relu", "out": [H(10)], "args": [H(1)], "kw": {"input": H(1)}},
    "two out handles for one result": {"op": "add", "out": [H(10), H(11)], "args": [H(1), 1]},
    "out not a handle": {"op": "add", "out": [10], "args": [H(1), 1]},
    "out not a list": {"op": "add", "out": H(10), "args": [H(1), 1]},
    "args not a list": {"op": "add", "out": [H(10)], "args": {"input": H(1)}},
    "op not a string": {"op": ["add"], "out": [H(10)], "args": [H(1), 1]},
    "not a map": "add",
    "unknown op": {"op": "frobnicate", "out": [H(10)], "args": [H(1)]},
    "in place": {"op": "add_", "out": [H(10)], "args": [H(4), 1]},
    "several results": {"op": "max_dim", "out": [H(10), H(11)], "args": [H(1), 1]},
}


def outcome(ex_cls, rec):
    ex = ex_cls(torch.device("cpu"))
    sid = ex.handle({"kind": "hello", "id": 1}, [])[0]["sid"]
    ex.handle({"kind": "batch", "id": 2, "sid": sid, "ops": SETUP}, [])
    ops = [{"op": "neg", "out": [H(20)], "args": [H(1)]}, rec, {"op": "neg", "out": [H(21)], "args": [H(1)]}]
    try:
        ex.handle({"kind": "batch", "id": 3, "sid": sid, "ops": ops, "free": [H(2)]}, [])
        err = None
    except RuntimeFault as f:
        err = (f.code, f.message, {k: v for k, v in f.extra.items() if k != "traceback"})
    objects = ex.sessions.get(sid).objects
    values = {h: (o.tolist() if isinstance(o, torch.Tensor) else type(o).__name__) for h, o in sorted(objects.items())}
    return err, values, ex.stats()["ops_run"]


@pytest.mark.parametrize("what", list(RECORDS))
def test_inline_loop_matches_the_general_path(what):
    assert outcome(Executor, RECORDS[what]) == outcome(GeneralOnly, RECORDS[what])


def test_ops_run_counts_the_records_before_a_failure():
    for cls in (Executor, GeneralOnly):
        ex = cls(torch.device("cpu"))
        sid = ex.handle({"kind": "hello", "id": 1}, [])[0]["sid"]
        ops = [{"op": "ones", "out": [H(1)], "args": [[2]]}, {"op": "neg", "out": [H(2)], "args": [H(1)]},
               {"op": "matmul", "out": [H(3)], "args": [H(1), H(9)]}]
        with pytest.raises(RuntimeFault) as e:
            ex.handle({"kind": "batch", "id": 2, "sid": sid, "ops": ops}, [])
        assert e.value.extra["index"] == 2 and e.value.code == "E_HANDLE"
        assert ex.stats()["ops_run"] == 2
