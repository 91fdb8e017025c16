"""The additive model of Liao & Kyrillidis's experiment ({"kind": "additive"}): h = A1 x + ReLU(A2 u)
row by row, its parameters and gradients by name, its seeded start, and the refusals of bad specs."""

from __future__ import annotations

import pytest
import torch
from runner import Runner, fault

SPEC = {"kind": "additive", "linear": 6, "relu": 4, "seed": 3}


@pytest.fixture()
def r():
    return Runner()


def test_forward_is_a1x_plus_relu_of_a2u(r):
    m = r("model_build", SPEC)
    assert [n for n, _ in m.named_parameters()] == ["x", "u"]
    a1, a2 = torch.randn(9, 6), torch.randn(9, 4)
    out = r("model_forward", m, [torch.cat([a1, a2], 1)])
    x, u = r("model_param", m, "x"), r("model_param", m, "u")
    assert out.shape == (9, 1)
    assert torch.allclose(out[:, 0], a1 @ x + torch.relu(a2 @ u), atol=1e-6)
    # the ReLU is really there: rows whose a2 . u is negative contribute a1 . x alone
    neg = (a2 @ u) < 0
    assert neg.any() and (~neg).any()
    assert torch.allclose(out[neg, 0], (a1 @ x)[neg], atol=1e-6)


def test_gradients_reach_both_parts(r):
    m = r("model_build", SPEC)
    a1, a2, y = torch.randn(12, 6), torch.randn(12, 4), torch.randn(12)
    r("backward", r("mse_loss", r("squeeze", r("model_forward", m, [torch.cat([a1, a2], 1)]), -1), y))
    x, u = m.x.detach(), m.u.detach()
    res = a1 @ x + torch.relu(a2 @ u) - y  # (12,)
    gx = 2 / 12 * a1.T @ res
    gu = 2 / 12 * a2.T @ (res * (a2 @ u > 0))
    assert torch.allclose(r("model_grad", m, "x"), gx, atol=1e-5)
    assert torch.allclose(r("model_grad", m, "u"), gu, atol=1e-5)


def test_seeded_start_is_reproducible_and_u_does_not_start_at_zero(r):
    a, b = r("model_build", SPEC), r("model_build", SPEC)
    assert torch.equal(a.x, b.x) and torch.equal(a.u, b.u)
    c = r("model_build", {**SPEC, "seed": 4})
    assert not torch.equal(a.u, c.u)
    big = r("model_build", {"kind": "additive", "linear": 400, "relu": 900, "seed": 0})
    # N(0, 1/width) per part: each has a norm of about 1 whatever its width
    assert 0.8 < float(big.x.detach().norm()) < 1.2 and 0.8 < float(big.u.detach().norm()) < 1.2


def test_describe_names_the_kind(r):
    d = r("model_build", SPEC).describe()
    assert d["kind"] == "additive"
    assert [(p["name"], p["shape"]) for p in d["params"]] == [("x", [6]), ("u", [4])]


def test_bad_specs_and_inputs_are_refused_by_name(r):
    assert fault("E_ARG", r, "model_build", {"kind": "additive", "relu": 4}).extra["field"] == "linear"
    assert fault("E_ARG", r, "model_build", {"kind": "additive", "linear": 0, "relu": 4}).extra["field"] == "linear"
    assert fault("E_ARG", r, "model_build", {"kind": "additive", "linear": 3, "relu": 2.5}).extra["field"] == "relu"
    assert fault("E_ARG", r, "model_build", {**SPEC, "hidden": 3}).extra["field"] == "hidden"
    m = r("model_build", SPEC)
    f = fault("E_SHAPE", r, "model_forward", m, [torch.randn(5, 9)])
    assert "(B, 10)" in f.message and "[5, 9]" in f.message
