"""Fusion: a program's marked groups of like segments replayed side by side (fusion.py)."""

import pytest
import torch

from liaison_runtime.errors import RuntimeFault
from liaison_runtime.protocol import Handle as H
from tests.runner import Runner


def rec(op, out, *args, **kw):
    return {"op": op, "out": [H(h) for h in out], "args": list(args), "kw": kw}


def runner() -> Runner:
    r = Runner()
    r._next = 500
    return r


def nesterov_program(r, params, bufs, grouped: bool):
    """The Trainer's Nesterov step over each parameter, the gradients as inputs 10, 11, …"""
    ops, bounds, nxt = [], [0], 100
    for i, (p, b) in enumerate(zip(params, bufs, strict=True)):
        g = H(10 + i)
        ops += [rec("mul_", [nxt], b, 0.9), rec("add_", [nxt + 1], H(nxt), g), rec("mul", [nxt + 2], b, 0.9),
                rec("add", [nxt + 3], g, H(nxt + 2)), rec("addcmul_", [nxt + 4], p, H(nxt + 3), H(1), value=-1.0)]
        nxt += 5
        bounds.append(len(ops))
    inputs = [H(1)] + [H(10 + i) for i in range(len(params))]
    return r("program_define", "step", ops, inputs, [], **({"groups": [bounds]} if grouped else {}))


def run_nesterov(grouped: bool, shapes=((3, 2), (4,), (5, 5))):
    r = runner()
    torch.manual_seed(0)
    ps = [torch.randn(s) for s in shapes]
    bs = [torch.zeros(s) for s in shapes]
    prog = nesterov_program(r, [r.wire(p) for p in ps], [r.wire(b) for b in bs], grouped)
    for _ in range(5):
        prog([torch.tensor(0.1)] + [torch.randn(s) for s in shapes])
    return prog, ps, bs


def test_a_group_is_fused_after_the_first_run_and_computes_what_the_ops_as_written_do():
    torch.manual_seed(1)
    fused, ps, bs = run_nesterov(True)
    plain, ps0, bs0 = run_nesterov(False)
    names = ("mul_", "add_", "mul", "add", "addcmul_")
    assert [s.name for s in fused.steps] == [f"{n} (fused over 3 segments)" for n in names]
    assert len(plain.steps) == 15
    for a, b in zip(ps + bs, ps0 + bs0, strict=True):
        assert torch.equal(a, b)


def test_the_first_run_goes_as_written_so_each_op_checks_its_real_tensors():
    r = runner()
    p, q = r.wire(torch.zeros(3)), r.wire(torch.zeros(4))
    ops = [rec("add_", [100], p, H(10)), rec("add_", [101], q, H(11))]
    prog = r("program_define", "bad", ops, [H(10), H(11)], [], groups=[[0, 1, 2]])
    with pytest.raises(RuntimeFault, match=r"op 1 \(add_\)"):
        prog([torch.ones(3), torch.ones(5)])  # (4,) += (5,): add_'s own check names it
    assert [s.name for s in prog.steps] == ["add_", "add_"]  # a failed run fuses nothing


def test_segments_that_differ_stay_as_written():
    r = runner()
    ta, tb = torch.ones(2), torch.ones(2)
    a, b = r.wire(ta), r.wire(tb)
    ops = [rec("mul_", [100], a, 2.0), rec("add_", [101], b, 1.0)]
    prog = r("program_define", "p", ops, [], [], groups=[[0, 1, 2]])
    prog([])
    prog([])
    assert [s.name for s in prog.steps] == ["mul_", "add_"]
    assert ta.tolist() == [4.0, 4.0] and tb.tolist() == [3.0, 3.0]


def test_a_segment_writing_what_another_reads_stays_sequential():
    # segment i: acc += x_i, then y_i = acc * 1 — column by column, y_0 would see x_1 too
    r = runner()
    acc = r.wire(torch.zeros(2))
    ops = [rec("add_", [100], acc, H(10)), rec("mul", [101], acc, 1.0),
           rec("add_", [102], acc, H(11)), rec("mul", [103], acc, 1.0)]
    prog = r("program_define", "p", ops, [H(10), H(11)], [H(101), H(103)], groups=[[0, 2, 4]])
    for _ in range(2):
        y0, y1 = prog([torch.ones(2), torch.full((2,), 10.0)])
    assert [s.name for s in prog.steps] == ["add_", "mul", "add_", "mul"]
    assert y0.tolist() == [12.0, 12.0] and y1.tolist() == [22.0, 22.0]


def test_views_of_one_storage_are_not_fused():
    r = runner()
    flat = torch.zeros(6)
    a, b = r.wire(flat[:3]), r.wire(flat[3:])
    ops = [rec("add_", [100], a, H(10)), rec("add_", [101], b, H(11))]
    prog = r("program_define", "p", ops, [H(10), H(11)], [], groups=[[0, 1, 2]])
    for _ in range(2):
        prog([torch.ones(3), torch.ones(3)])
    assert [s.name for s in prog.steps] == ["add_", "add_"]
    assert flat.tolist() == [2.0] * 6


def test_parameters_that_require_grad_are_updated_without_autograd():
    r = runner()
    ws = [torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3))]
    hs = [r.wire(w) for w in ws]
    ops = [rec("addcmul_", [100 + i], h, H(10 + i), H(1), value=-1.0) for i, h in enumerate(hs)]
    prog = r("program_define", "p", ops, [H(1), H(10), H(11)], [], groups=[[0, 1, 2]])
    for _ in range(3):
        prog([torch.tensor(0.5), torch.ones(2), torch.ones(3)])
    assert prog.steps[0].name == "addcmul_ (fused over 2 segments)"
    assert ws[0].tolist() == [-0.5, -0.5] and ws[1].grad is None and ws[1].requires_grad


def test_ops_without_a_foreach_form_run_in_a_loop():
    r = runner()
    a, b = r.wire(torch.tensor([5.0, -5.0])), r.wire(torch.tensor([3.0]))
    ops = [rec("clamp_", [100], a, -1.0, 1.0), rec("neg", [101], H(100)),
           rec("clamp_", [102], b, -1.0, 1.0), rec("neg", [103], H(102))]
    prog = r("program_define", "p", ops, [], [H(101), H(103)], groups=[[0, 2, 4]])
    prog([])
    na, nb = prog([])
    assert [s.name for s in prog.steps] == ["clamp_ (fused over 2 segments)", "neg (fused over 2 segments)"]
    assert na.tolist() == [-1.0, 1.0] and nb.tolist() == [-1.0]


@pytest.mark.parametrize("groups", [[[0]], [[1, 0]], [[0, 1, 9]], [[0, 2], [1, 3]], "x", [[0, "1"]]])
def test_bad_groups_are_refused(groups):
    r = runner()
    ops = [rec("neg", [100 + i], H(10)) for i in range(3)]
    with pytest.raises(RuntimeFault, match="group|groups") as e:
        r("program_define", "p", ops, [H(10)], [], groups=groups)
    assert e.value.code == "E_ARG"


def test_no_grad_ranges_keep_state_off_the_graph():
    # buf += w * 0.1 through an alias of buf: with autograd on, buf would join w's graph, run after run
    def run(no_grad):
        r = runner()
        w, buf = torch.nn.Parameter(torch.ones(2)), torch.zeros(2)
        ops = [rec("mul", [100], r.wire(w), 0.1), rec("mul_", [101], r.wire(buf), 1.0),
               rec("add_", [102], H(101), H(100))]
        prog = r("program_define", "p", ops, [], [], **({"no_grad": [[0, 3]]} if no_grad else {}))
        for _ in range(3):
            prog([])
        return buf

    assert run(True).tolist() == pytest.approx([0.3, 0.3]) and not run(True).requires_grad
    assert run(False).grad_fn is not None  # what the range prevents


@pytest.mark.parametrize("ranges", [[[0, 9]], [[2, 1]], [[0]], "x"])
def test_bad_no_grad_ranges_are_refused(ranges):
    r = runner()
    with pytest.raises(RuntimeFault, match="no_grad") as e:
        r("program_define", "p", [rec("neg", [100], H(10))], [H(10)], [], no_grad=ranges)
    assert e.value.code == "E_ARG"


def test_an_op_may_bring_its_own_side_by_side_form():
    # model_grad's fused form fetches every named gradient in one call (ops/model.py)
    r = runner()
    model = r("model_build", {"kind": "mlp", "sizes": [3, 2], "seed": 0})
    m = r.obj(model)
    ops, bounds = [], [0]
    for i, name in enumerate(["layers.0.weight", "layers.0.bias"]):
        ops += [rec("model_grad", [100 + 2 * i], m, name), rec("mul", [101 + 2 * i], H(100 + 2 * i), 2.0)]
        bounds.append(len(ops))
    prog = r("program_define", "p", ops, [], [H(101), H(103)], groups=[bounds])
    model(torch.ones(1, 3)).sum().backward()
    prog([])
    gw, gb = prog([])
    assert [s.name for s in prog.steps] == ["model_grad (fused over 2 segments)", "mul (fused over 2 segments)"]
    assert torch.equal(gw, 2 * model.layers[0].weight.grad) and torch.equal(gb, 2 * model.layers[0].bias.grad)
