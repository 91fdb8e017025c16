"""A caller's mistake is never E_INTERNAL (issue 9, item 11): the calls that were, through the
executor as a request runs them, and how the dispatcher classifies what an op raises."""

from __future__ import annotations

import pytest
from runner import CPU

from liaison_runtime.errors import RuntimeFault, classify
from liaison_runtime.executor import Executor
from liaison_runtime.protocol import Handle


def run(*ops) -> RuntimeFault:
    """Runs the op records as one batch; returns the fault its last op raised."""
    ex = Executor(CPU)
    sid = ex.handle({"kind": "hello"}, [])[0]["sid"]
    with pytest.raises(RuntimeFault) as info:
        ex.handle({"kind": "batch", "sid": sid, "ops": list(ops)}, [])
    return info.value


def test_reshape_with_a_minus_one_beside_a_zero_is_a_shape_error():
    f = run({"op": "arange", "out": [Handle(1)], "args": [6]},
            {"op": "reshape", "out": [Handle(2)], "args": [Handle(1), [-1, 0]]})
    assert f.code == "E_SHAPE" and f.extra["param"] == "shape", f.message
    assert "-1" in f.message and "multiply to 0" in f.message


def test_an_alpha_beyond_the_integer_dtype_is_an_argument_error_naming_alpha():
    for alpha in (1e30, -1e30, 2**63, -(2**63) - 1):
        f = run({"op": "zeros", "out": [Handle(1)], "args": [[3]], "kw": {"dtype": "i64"}},
                {"op": "add_", "out": [Handle(2)], "args": [Handle(1), 1], "kw": {"alpha": alpha}})
        assert f.code == "E_ARG" and f.extra["param"] == "alpha", f.message
        assert "'alpha'" in f.message and "i64" in f.message
    # int32 has its own, smaller range
    f = run({"op": "zeros", "out": [Handle(1)], "args": [[3]], "kw": {"dtype": "i32"}},
            {"op": "sub_", "out": [Handle(2)], "args": [Handle(1), 1], "kw": {"alpha": 2**40}})
    assert f.code == "E_ARG" and f.extra["param"] == "alpha", f.message


def test_alpha_inside_the_range_still_works():
    ex = Executor(CPU)
    sid = ex.handle({"kind": "hello"}, [])[0]["sid"]
    ops = [{"op": "zeros", "out": [Handle(1)], "args": [[2]], "kw": {"dtype": "i64"}},
           {"op": "add_", "out": [Handle(2)], "args": [Handle(1), 1], "kw": {"alpha": 2.0**62}}]
    ex.handle({"kind": "batch", "sid": sid, "ops": ops}, [])
    assert ex.sessions.get(sid).get(1).tolist() == [2**62, 2**62]


def test_a_cpu_allocation_failure_is_out_of_memory():
    # 4e18 bytes: more than any machine's address space, so the allocator refuses at once
    f = run({"op": "zeros", "out": [Handle(1)], "args": [[10**7, 10**7, 10**4]]})
    assert f.code == "E_OOM", f.message
    assert "can't allocate memory" in f.message


def test_the_dispatcher_classifies_overflow_and_memory_errors():
    def raised(e: Exception) -> RuntimeFault:
        try:
            raise e
        except Exception as caught:  # noqa: BLE001 — classify is called from inside a handler
            return classify(caught, "op")

    assert raised(OverflowError("int too big to convert")).code == "E_ARG"
    assert raised(MemoryError()).code == "E_OOM"
    assert raised(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 80 bytes")).code == "E_OOM"
    assert raised(RuntimeError("shape '[2]' is invalid for input of size 3")).code == "E_SHAPE"


def test_a_tensorboard_op_given_something_else_says_so_without_tensorboard_installed():
    # without the tensorboard package the writer check failed on its own import (E_INTERNAL)
    f = run({"op": "zeros", "out": [Handle(1)], "args": [[3]]},
            {"op": "tb_flush", "out": [], "args": [Handle(1)]})
    assert f.code == "E_ARG" and f.extra["param"] == "writer", f.message
