"""The MoE layer's three route forms (weights, indices, slots), its batched experts against the
per-expert loop, hooks on experts, and the router statistics (models/moe.py, moe_dispatch.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from runner import Runner, fault, one_thread  # noqa: F401 (autouse: this module runs torch on one thread)

from liaison_runtime.models.moe_dispatch import batched_ok

D, E, H, S = 6, 4, 5, 2


@pytest.fixture()
def r():
    return Runner()



def zero():
    return torch.zeros(())


def soft(inputs):
    """'weights', dense: every expert, with a z-loss and probs."""
    x, g = inputs
    logits = x @ g[:, :E]
    probs = logits.softmax(-1)
    return [probs, probs.mean(0).pow(2).sum() * E, logits.logsumexp(-1).pow(2).mean(), probs]


def top2(inputs):
    """'weights', sparse: two experts per token."""
    x, g = inputs
    probs = (x @ g[:, :E]).softmax(-1)
    top, idx = probs.topk(2, -1)
    return [torch.zeros_like(probs).scatter(1, idx, top), zero(), zero(), probs]


def top1_capped(inputs):
    """'weights', sparse with drops: expert 0 is never used, so its tokens go unserved."""
    x, g = inputs
    probs = (x @ g[:, :E]).softmax(-1)
    top, idx = probs.topk(1, -1)
    w = torch.zeros_like(probs).scatter(1, idx, top)
    return [w * (idx != 0).float(), zero(), zero(), torch.empty(0)]


def expert_choice(inputs):
    """'indices': each expert takes its C = ⌈N/E⌉ most probable tokens."""
    x, g = inputs
    probs = (x @ g[:, :E]).softmax(-1)  # (N, E)
    c = math.ceil(x.shape[0] / E)
    gates, idx = probs.T.topk(c, -1)  # (E, C)
    return [idx, gates, zero(), zero(), probs]


def soft_moe(inputs):
    """'slots': Soft MoE, S slots per expert."""
    x, g = inputs
    logits = (x @ g).reshape(x.shape[0], E, S)  # (N, E, S)
    dispatch = logits.softmax(0)
    combine = logits.reshape(x.shape[0], E * S).softmax(-1).reshape(x.shape[0], E, S)
    return [dispatch, combine, zero(), zero(), torch.empty(0)]


ROUTERS = {"soft": ("weights", soft), "top2": ("weights", top2), "capped": ("weights", top1_capped),
           "expert_choice": ("indices", expert_choice), "soft_moe": ("slots", soft_moe)}


def model(r, bias=True, **extra):
    spec = {"kind": "moe", "inputs": D, "outputs": 3, "experts": E, "hidden": H, "bias": bias, "seed": 0,
            "activation": "gelu", "params": {"gate": {"shape": [D, E * S], "init": "normal", "std": 0.7}}, **extra}
    return r("model_build", spec)


def run(r, m, x):
    """Output and the gradients of every parameter and of x, for sum(y * fixed weights)."""
    m.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = r("model_forward", m, [x])
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    # an expert that served no token: no gradient in the loop, zeros through the stacked weights
    return y.detach(), x.grad, {n: torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                for n, p in m.named_parameters()}


@pytest.fixture(params=["grouped", "bmm"])
def strategy(request, monkeypatch):
    """Both batched strategies on this CPU: grouped by expert (a CPU's), one bmm (an accelerator's)."""
    from liaison_runtime.models import moe_dispatch

    monkeypatch.setattr(moe_dispatch, "_bmm_wins", lambda flat: request.param == "bmm")
    return request.param


@pytest.mark.parametrize("name", list(ROUTERS))
@pytest.mark.parametrize("bias", [True, False])
def test_batched_experts_equal_the_per_expert_loop(r, name, bias, strategy):
    form, router = ROUTERS[name]
    m = model(r, bias)
    r("model_hook", m, "router", r.obj(router), {"form": form})
    x = torch.randn(11, D, generator=torch.Generator().manual_seed(1))
    y1, gx1, g1 = run(r, m, x)
    m.moe.batched = False
    y2, gx2, g2 = run(r, m, x)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx1, gx2, atol=1e-5, rtol=1e-5)
    assert g1["moe.router.gate"].abs().sum() > 0
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], atol=1e-5, rtol=1e-5, msg=k)


def balanced(inputs):
    """Token n to experts n % E and (n + 1) % E: equal groups, the padded bmm."""
    x, g = inputs
    n = x.shape[0]
    probs = (x @ g[:, :E]).softmax(-1)
    hit = F.one_hot(torch.arange(n) % E, E) + F.one_hot((torch.arange(n) + 1) % E, E)
    return [probs * hit, zero(), zero(), probs]


def lopsided(inputs):
    """Every token to expert 0, one in four to expert 1 as well: unequal groups, the per-expert slices."""
    x, g = inputs
    n = x.shape[0]
    probs = (x @ g[:, :E]).softmax(-1)
    hit = torch.zeros(n, E)
    hit[:, 0] = 1
    hit[::4, 1] = 1
    return [probs * hit, zero(), zero(), probs]


@pytest.mark.parametrize(("router", "grouped"),
                         [(balanced, {"grouped": 1, "bmm": 0}), (lopsided, {"grouped": 1, "bmm": 1})])
def test_sparse_weights_pad_equal_groups_and_slice_unequal_ones(r, monkeypatch, router, grouped, strategy):
    """One bmm pads equal groups (an accelerator's way) and slices unequal ones; grouped always slices."""
    from liaison_runtime.models import moe_dispatch

    calls = []
    real = moe_dispatch._grouped
    monkeypatch.setattr(moe_dispatch, "_grouped", lambda *a: calls.append(1) or real(*a))
    m = model(r)
    r("model_hook", m, "router", r.obj(router))
    x = torch.randn(12, D, generator=torch.Generator().manual_seed(2))
    y1, gx1, g1 = run(r, m, x)
    assert len(calls) == grouped[strategy]
    m.moe.batched = False
    y2, gx2, g2 = run(r, m, x)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gx1, gx2, atol=1e-5, rtol=1e-5)
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], atol=1e-5, rtol=1e-5, msg=k)


def test_the_forms_compute_what_they_promise(r):
    m = model(r, False)
    x = torch.randn(7, D)
    ex = [lambda v, e=e: m.moe.experts[e](v) for e in range(E)]
    r("model_hook", m, "router", r.obj(expert_choice), {"form": "indices"})
    idx, gates = expert_choice([x, m.moe.router.gate])[:2]
    want = torch.zeros(7, 3)
    for e in range(E):
        for c in range(idx.shape[1]):
            want[idx[e, c]] += gates[e, c] * ex[e](x[idx[e, c]])
    torch.testing.assert_close(r("model_forward", m, [x]), want)
    r("model_hook", m, "router", r.obj(soft_moe), {"form": "slots"})
    dispatch, combine = soft_moe([x, m.moe.router.gate])[:2]
    outs = torch.stack([ex[e](torch.einsum("ns,nd->sd", dispatch[:, e], x)) for e in range(E)])  # (E, S, 3)
    torch.testing.assert_close(r("model_forward", m, [x]), torch.einsum("nes,eso->no", combine, outs))


def test_the_spec_option_batched_false_runs_the_loop(r):
    m = model(r, batched=False)
    assert m.moe.batched is False
    g = r("model_build", {"kind": "gpt", "vocab": 16, "context": 8, "dim": 8, "layers": 1, "heads": 2,
                          "moe": {"experts": 2, "hidden": 4, "batched": False}})
    assert g.blocks[0].moe.batched is False


def test_a_hook_on_an_experts_linear_is_honoured(r):
    m = model(r)
    r("model_hook", m, "router", r.obj(soft))
    x = torch.randn(5, D)
    before = r("model_forward", m, [x])
    ex1 = m.moe.experts[1]
    plain1, plain0 = ex1(x), m.moe.experts[0](x)
    assert batched_ok(m.moe)
    r("model_hook", m, "weight", r.obj(lambda i: [i[0] * 0]), {"modules": r"moe\.experts\.1\.fc"})
    assert not batched_ok(m.moe)  # the batched path would read the stored weight: the loop runs
    w = soft([x, m.moe.router.gate])[0]
    # expert 1's fc weight is 0 under the hook: its output is proj(gelu(fc.bias))
    without1 = before + w[:, 1:2] * (ex1.proj(F.gelu(ex1.fc.bias.expand(5, H))) - plain1)
    torch.testing.assert_close(r("model_forward", m, [x]), without1, atol=1e-6, rtol=1e-5)
    r("model_hook", m, "weight", None, {"modules": r"moe\.experts\.1\.fc"})
    assert batched_ok(m.moe)
    r("model_hook", m, "output", r.obj(lambda i: [i[1] * 2]), {"modules": r"moe\.experts\.0\.proj"})
    assert not batched_ok(m.moe)
    torch.testing.assert_close(r("model_forward", m, [x]), before + w[:, 0:1] * plain0, atol=1e-6, rtol=1e-5)


def test_the_old_two_output_router_is_still_taken(r):
    m = model(r)
    r("model_hook", m, "router", r.obj(lambda i: soft(i)[:2]))
    x = torch.randn(4, D)
    y = r("model_forward", m, [x])
    r("model_hook", m, "router", r.obj(soft))
    torch.testing.assert_close(y, r("model_forward", m, [x]))


def test_stats_and_losses(r):
    m = model(r)
    x = torch.randn(12, D)
    r("model_hook", m, "router", r.obj(soft))
    r("model_forward", m, [x])
    load, dropped, entropy, aux, zloss = r("model_router_stats", m)
    probs = soft([x, m.moe.router.gate])[0]
    assert load.shape == (1, E) and torch.allclose(load, torch.full((1, E), 1 / E))  # dense: every pair counts
    assert float(dropped) == 0.0
    torch.testing.assert_close(entropy[0], -(probs * probs.log()).sum(1).mean().detach())
    z = r("model_aux_loss", m, "zloss")
    assert z.requires_grad and float(z.detach()) == pytest.approx(float(zloss[0]))
    assert float(r("model_aux_loss", m).detach()) == pytest.approx(float(aux[0]))
    r("model_hook", m, "router", r.obj(top1_capped))
    r("model_forward", m, [x])
    load, dropped, entropy, _, zloss = r("model_router_stats", m)
    first = (x @ m.moe.router.gate[:, :E]).argmax(-1)
    assert float(dropped) == pytest.approx(float((first == 0).float().mean()))
    assert float(load[0, 0]) == 0 and float(load.sum()) == pytest.approx(1.0)
    assert float(entropy) == 0.0 and float(zloss) == 0.0  # one expert per served token: the mass has no spread
    r("model_hook", m, "router", r.obj(expert_choice), {"form": "indices"})
    r("model_forward", m, [x])
    load = r("model_router_stats", m)[0]
    torch.testing.assert_close(load, torch.full((1, E), 1 / E))  # C slots each


def test_errors_name_the_fix(r):
    m = model(r)
    assert "forward" in fault("E_ARG", r, "model_router_stats", m).message
    f = fault("E_ARG", r, "model_router_stats", r("model_build", {"kind": "mlp", "sizes": [2, 2]}))
    assert "no MoE layer" in f.message
    assert fault("E_ARG", r, "model_hook", m, "router", r.obj(soft), {"form": "tokens"}).extra["field"] == "form"
    x = torch.randn(4, D)
    r("model_hook", m, "router", r.obj(soft), {"form": "slots"})  # a weights router in slots form
    assert "dispatch" in fault("E_ARG", r, "model_forward", m, [x]).message
    r("model_hook", m, "router", r.obj(lambda i: [torch.full((E, 1), 9), torch.ones(E, 1), zero(), zero(),
                                                  torch.empty(0)]), {"form": "indices"})
    assert "tokens are 0..3" in fault("E_ARG", r, "model_forward", m, [x]).message
    r("model_hook", m, "router", r.obj(lambda i: [*soft(i)[:3], torch.ones(4, E + 1)]))
    assert "probs" in fault("E_SHAPE", r, "model_forward", m, [x]).message
