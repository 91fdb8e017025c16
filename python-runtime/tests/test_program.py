"""Programs: definition checks every record once; replay runs the ops on slot values."""

import pytest
import torch

from liaison_runtime.errors import RuntimeFault
from liaison_runtime.program import Program
from liaison_runtime.protocol import Handle
from tests.runner import Runner


def rec(op, out, *args, **kw):
    return {"op": op, "out": [Handle(h) for h in out], "args": list(args), "kw": kw}


H = Handle


def runner() -> Runner:
    r = Runner()
    r._next = 500  # session handles from 500; the traces below use small ids
    return r


def define(r: Runner, ops, inputs, outputs, **kw) -> Program:
    return r("program_define", "p", ops, [H(i) for i in inputs], [H(o) for o in outputs], **kw)


def test_replays_with_captured_tensors_updated_in_place():
    r = runner()
    p = torch.ones(3)
    hp = r.wire(p)
    prog = define(r, [rec("mul", [1003], H(1001), H(1002)), rec("sub_", [1004], hp, H(1003))], [1001, 1002], [1004])
    for _ in range(2):
        out, = prog([torch.full((3,), 2.0), torch.tensor(0.25)])
    assert torch.equal(p, torch.zeros(3))
    assert out is p  # an in-place op returns the tensor it wrote


def test_threads_state_from_call_to_call():
    r = runner()
    init = r.wire(torch.zeros(2))
    prog = define(r, [rec("add", [12], H(11), 1), rec("mul", [13], H(12), H(10))], [10], [13],
                  state_in=[H(11)], state_out=[H(12)], state_init=[init])
    outs = [prog([torch.tensor([1.0, 2.0])])[0] for _ in range(3)]
    assert outs[-1].tolist() == [3.0, 6.0]
    assert prog.state[0].tolist() == [3.0, 3.0]
    assert r("program_state", prog, 0).tolist() == [3.0, 3.0]


def test_list_arguments_and_multi_output_ops():
    r = runner()
    prog = define(r, [rec("cat", [3], [H(1), H(2), H(1)], dim=0), rec("topk", [4, 5], H(3), 2)], [1, 2], [4, 5])
    vals, idx = prog([torch.tensor([1.0, 5.0]), torch.tensor([3.0])])
    assert vals.tolist() == [5.0, 5.0] and sorted(idx.tolist()) == [1, 4]


def test_program_run_op_checks_inputs_against_specs():
    r = runner()
    spec = {"inputs": [{"name": "x", "dtype": "f32", "shape": ["N", 3]}]}
    prog = define(r, [rec("relu", [2], H(1))], [1], [2], specs=spec)
    out, = r("program_run", prog, [torch.tensor([[-1.0, 0.0, 2.0]])])
    assert out.tolist() == [[0.0, 0.0, 2.0]]
    with pytest.raises(RuntimeFault, match="input x must be f32"):
        r("program_run", prog, [torch.zeros(1, 3, dtype=torch.int64)])
    with pytest.raises(RuntimeFault, match=r"input x must have shape \(N, 3\)"):
        r("program_run", prog, [torch.zeros(1, 4)])
    with pytest.raises(RuntimeFault, match="takes 1 inputs, got 2"):
        r("program_run", prog, [torch.zeros(1, 3), torch.zeros(1, 3)])


def test_definition_refuses_bad_records_naming_the_op():
    r = runner()
    with pytest.raises(RuntimeFault, match=r"op 1: unknown op 'nope'") as e:
        define(r, [rec("relu", [2], H(1)), rec("nope", [3], H(2))], [1], [3])
    assert e.value.code == "E_UNKNOWN_OP"
    with pytest.raises(RuntimeFault, match=r"op 0: softmax: argument 'dim' must be an integer"):
        define(r, [rec("softmax", [2], H(1), "x")], [1], [2])
    with pytest.raises(RuntimeFault, match="upload cannot run inside a program"):
        define(r, [rec("upload", [2], frame=0, dtype="f32", shape=[1])], [1], [2])
    with pytest.raises(RuntimeFault, match="handle 77 does not exist"):
        define(r, [rec("add", [2], H(1), H(77))], [1], [2])
    with pytest.raises(RuntimeFault, match="made twice"):
        define(r, [rec("relu", [1], H(1))], [1], [1])


def test_replay_errors_name_the_program_and_op():
    r = runner()
    prog = define(r, [rec("relu", [2], H(1)), rec("matmul", [3], H(2), H(1))], [1], [3])
    with pytest.raises(RuntimeFault, match=r"program 'p', op 1 \(matmul\)") as e:
        prog([torch.zeros(2, 3)])
    assert e.value.code == "E_SHAPE"


def test_autograd_flows_through_a_replay_into_captured_parameters():
    r = runner()
    w = torch.nn.Parameter(torch.tensor([[1.0], [2.0]]))
    hw = r.wire(w)
    prog = define(r, [rec("matmul", [2], H(1), hw), rec("sum", [3], H(2))], [1], [3])
    loss, = prog([torch.tensor([[3.0, 4.0]])])
    loss.backward()
    assert w.grad.flatten().tolist() == [3.0, 4.0]


def test_random_ops_draw_fresh_values_each_replay():
    r = runner()
    prog = define(r, [rec("rand", [1], [4])], [], [1])
    a, = prog([])
    b, = prog([])
    assert not torch.equal(a, b)


def test_state_is_detached_and_captured_updates_build_no_graph():
    r = runner()
    w = torch.nn.Parameter(torch.tensor([2.0]))
    buf = torch.zeros(1)
    hw, hb = r.wire(w), r.wire(buf)
    # state += w (depends on a parameter); buf.add_(w) in place on a captured buffer
    prog = define(r, [rec("add", [3], H(2), hw), rec("add_", [4], hb, hw)], [1], [3],
                  state_in=[H(2)], state_out=[H(3)], state_init=[r.wire(torch.zeros(1))])
    for _ in range(3):
        prog([torch.zeros(1)])
    assert prog.state[0].grad_fn is None and prog.state[0].item() == 6.0  # no graph chained run to run
    assert buf.grad_fn is None and buf.item() == 6.0


def test_a_hook_point_call_with_the_wrong_inputs_is_refused():
    r = runner()
    prog = define(r, [rec("relu", [2], H(1))], [1], [2])
    with pytest.raises(RuntimeFault, match="takes 1 inputs, got 2"):
        prog([torch.zeros(1), torch.zeros(1)])


def test_programs_do_not_nest_and_specs_are_checked_at_definition():
    r = runner()
    inner = define(r, [rec("relu", [2], H(1))], [1], [2])
    with pytest.raises(RuntimeFault, match="program_run cannot run inside a program"):
        define(r, [rec("program_run", [3], r.wire(inner), [H(1)])], [1], [3])
    with pytest.raises(RuntimeFault, match=r"specs.inputs\[0\].dtype must be one of"):
        define(r, [rec("relu", [2], H(1))], [1], [2], specs={"inputs": [{"dtype": "float32"}]})
    with pytest.raises(RuntimeFault, match=r"specs.inputs\[0\].shape must be a list"):
        define(r, [rec("relu", [2], H(1))], [1], [2], specs={"inputs": [{"shape": 5}]})


def test_the_send_guard_sees_in_place_writes_into_inputs():
    r = runner()
    seen = []
    r.ctx.guard = seen.append
    prog = define(r, [rec("mul_", [2], H(1), 2.0)], [1], [2])
    x = torch.ones(2)
    r("program_run", prog, [x])
    assert seen and seen[0] is x and x.tolist() == [2.0, 2.0]


def test_in_place_updates_reach_a_slice_of_a_parameter():
    r = runner()
    w = torch.nn.Parameter(torch.ones(4))
    r("mul_", r("narrow", w, 0, 1, 2), 0.0)  # a pruner zeroing part of a weight
    assert w.tolist() == [1.0, 0.0, 0.0, 1.0]
