"""The standalone `moe` model kind: one MoE layer as the whole model (models/moe_model.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from runner import Runner, fault, one_thread  # noqa: F401 (autouse: this module runs torch on one thread)

D, E, H = 6, 3, 5
SPEC = {"kind": "moe", "inputs": D, "experts": E, "hidden": H, "seed": 0,
        "params": {"gate": {"shape": [D, E], "init": "normal", "std": 0.5}}}


@pytest.fixture()
def r():
    return Runner()



def soft(inputs):
    """Soft routing: every expert weighted by softmax(x · W)."""
    x, gate = inputs
    return [torch.softmax(x @ gate, -1), torch.zeros(())]


def top1(inputs):
    x, gate = inputs
    probs = torch.softmax(x @ gate, -1)
    top = probs.argmax(-1, keepdim=True)
    return [torch.zeros_like(probs).scatter(1, top, probs.gather(1, top)), torch.zeros(())]


def test_builds_with_the_documented_parameters(r):
    m = r("model_build", {**SPEC, "bias": True, "output_bias": True, "outputs": 2})
    shapes = {n: list(p.shape) for n, p in m.named_parameters()}
    assert shapes["moe.experts.0.fc.weight"] == [H, D] and shapes["moe.experts.2.proj.weight"] == [2, H]
    assert shapes["moe.experts.1.fc.bias"] == [H] and shapes["moe.router.gate"] == [D, E]
    assert shapes["output_bias"] == [2]
    d = m.describe()
    assert d["kind"] == "moe" and d["hooks"]["router"] == 1
    plain = r("model_build", SPEC)  # defaults: relu, no biases, one output
    assert not any(n.endswith("bias") for n, _ in plain.named_parameters())


def test_forward_is_the_routed_sum_of_relu_experts(r):
    m = r("model_build", SPEC)
    r("model_hook", m, "router", r.obj(soft))
    x = torch.randn(7, D)
    y = r("model_forward", m, [x])
    assert y.shape == (7, 1)
    w = soft([x, m.moe.router.gate])[0]
    want = sum(w[:, e:e + 1] * (F.relu(x @ ex.fc.weight.T) @ ex.proj.weight.T) for e, ex in enumerate(m.moe.experts))
    torch.testing.assert_close(y, want)
    fault("E_SHAPE", r, "model_forward", m, [torch.randn(7, D + 1)])


@pytest.mark.parametrize("router", [soft, top1])
def test_a_student_trains_towards_a_teacher(r, router):
    teacher = r("model_build", {**SPEC, "seed": 1, "activation": "tanh"})
    r("model_hook", teacher, "router", r.obj(soft))
    student = r("model_build", {**SPEC, "experts": 4, "hidden": 8, "activation": "tanh",
                                "params": {"gate": {"shape": [D, 4], "init": "normal", "std": 0.5}}})
    r("model_hook", student, "router", r.obj(router))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, D, generator=g)
    with torch.no_grad():
        target = teacher(x)
    opt = torch.optim.Adam(student.parameters(), lr=0.02)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(r("model_forward", student, [x]), target)
        opt.zero_grad()
        r("backward", loss)
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses
    assert student.moe.router.gate.grad.abs().sum() > 0  # the router trains jointly with the experts


def test_state_round_trip(r):
    a = r("model_build", {**SPEC, "output_bias": True})
    b = r("model_build", {**SPEC, "output_bias": True, "seed": 3})
    state = dict(a.state_dict())
    r("model_load_state", b, list(state), list(state.values()))
    for m in (a, b):
        r("model_hook", m, "router", r.obj(soft))
    x = torch.randn(4, D)
    torch.testing.assert_close(r("model_forward", a, [x]), r("model_forward", b, [x]))


@pytest.mark.parametrize(("spec", "field"), [
    ({**SPEC, "activation": "swish"}, "activation"),
    ({**SPEC, "experts": 0}, "experts"),
    ({k: v for k, v in SPEC.items() if k != "hidden"}, "hidden"),
    ({**SPEC, "params": {"gate": {"shape": [D, E], "init": "zeros", "std": 1}}}, "params.gate.std"),
])
def test_bad_specs_name_the_field(r, spec, field):
    assert fault("E_ARG", r, "model_build", spec).extra["field"] == field
