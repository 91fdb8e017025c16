"""set_requires_grad, grad_of, clear_grads: parameters a plugin owns and frozen model parameters
(sdk/trainer-params.ts)."""

from __future__ import annotations

import pytest
import torch
from runner import Runner, fault

from liaison_runtime.ops import OPS


@pytest.fixture
def r():
    return Runner()


def test_a_leaf_made_to_require_grad_gets_its_gradient_and_clear_grads_drops_it(r):
    a = torch.ones(3)
    assert r("set_requires_grad", a, True) == ()
    assert a.requires_grad
    (a * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert r("grad_of", a).tolist() == [1.0, 2.0, 3.0]
    assert r("clear_grads", [a]) == ()
    assert a.grad is None
    assert r("grad_of", a).tolist() == [0.0, 0.0, 0.0]


def test_a_frozen_parameter_gets_no_gradient_and_loses_the_one_it_had(r):
    lin = torch.nn.Linear(2, 1)
    lin(torch.ones(1, 2)).sum().backward()
    assert lin.weight.grad is not None
    r("set_requires_grad", lin.weight, False)
    assert lin.weight.grad is None and not lin.weight.requires_grad
    lin(torch.ones(1, 2)).sum().backward()
    assert lin.weight.grad is None and lin.bias.grad is not None


def test_only_a_floating_leaf_can_require_a_gradient(r):
    x = torch.ones(2, requires_grad=True)
    f = fault("E_ARG", r, "set_requires_grad", x * 2, False)
    assert "leaf" in f.message and f.extra["param"] == "input"
    assert "int64" in fault("E_DTYPE", r, "set_requires_grad", torch.ones(2, dtype=torch.int64), True).message
    # turning it off is harmless on any leaf
    assert r("set_requires_grad", torch.ones(2, dtype=torch.int64), False) == ()


def test_every_params_op_is_exercised_here():
    text = open(__file__).read()
    ours = [n for n, d in OPS.items() if d.fn.__module__.rsplit(".", 1)[-1] == "params"]
    assert sorted(ours) == ["clear_grads", "grad_of", "set_requires_grad"]
    assert [n for n in ours if f'"{n}"' not in text] == []
