"""Hook points as a registry (liaison_runtime/hooks.py) and the weight hook point, through the
op binding: a forward uses `hook([weight])[0]`, autograd reaches what the hook captured, and
the stored weight stays what it was. The hooks are plain Python callables with the calling
convention of the runtime's traced programs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from runner import Runner, fault

from liaison_runtime.hooks import POINTS
from liaison_runtime.ops import OPS

MLP = {"kind": "mlp", "sizes": [8, 16, 16, 4], "seed": 0}


@pytest.fixture()
def r():
    return Runner()


def data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, :4].argmax(1))  # a rule the net can learn


def st_topk(scores: torch.Tensor, keep: float) -> torch.Tensor:
    """A 0/1 mask of the top `keep` fraction of scores, whose gradient passes to the scores."""
    k = max(1, round(keep * scores.numel()))
    hard = (scores >= scores.flatten().topk(k).values.min()).float()
    return hard + scores - scores.detach()


def test_every_point_is_declared_once_and_model_hook_offers_exactly_those(r):
    assert set(POINTS) == {"kv", "router", "weight", "output"}
    (point,) = [p for p in OPS["model_hook"].params if p.name == "point"]
    assert tuple(point.choices) == tuple(POINTS)
    for p in POINTS.values():
        assert p.inputs and p.outputs and p.fires and p.sites in ("layers", "modules")
    d = r("model_build", {**MLP}).describe()
    assert d["hooks"] == {"kv": 0, "router": 0}
    assert d["hook_modules"] == {p: ["layers.0", "layers.1", "layers.2"] for p in ("weight", "output")}


def test_a_straight_through_topk_mask_trains_the_scores_of_frozen_random_weights(r):
    m = r("model_build", {**MLP, "sizes": [8, 32, 32, 4]})
    with torch.no_grad():
        for layer in m.layers:
            layer.weight.mul_(3)  # random weights wide enough that a subnetwork of them fits the data
    frozen = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.requires_grad_(False)
    scores = {}
    for name in ("layers.0", "layers.1", "layers.2"):
        w = m.get_submodule(name).weight
        s = scores[name] = (torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) * 0.01).requires_grad_()
        r("model_hook", m, "weight", r.obj(lambda ins, s=s: [ins[0] * st_topk(s, 0.5)]), {"modules": name})
    x, y = data()
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(r("model_forward", m, [x]), y)
        r("backward", loss)
        with torch.no_grad():
            for s in scores.values():
                s.sub_(s.grad * 0.5)
                s.grad = None
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    for n, p in m.named_parameters():
        assert torch.equal(p, frozen[n]) and p.grad is None, n  # the stored weights are untouched
    # the forward used the masked weight: half of each layer's weights are zeroed
    w0 = m.layers[0]
    expect = F.linear(x, w0.weight * st_topk(scores["layers.0"], 0.5).detach(), w0.bias)
    r("model_capture", m, ["layers.0"])
    r("model_forward", m, [x], train=False)
    assert torch.allclose(r("model_activation", m, "layers.0"), expect)
    assert "weight" not in w0.__dict__  # the shadow lives for one forward only


def test_a_low_rank_delta_over_a_frozen_base_trains_only_its_factors(r):
    m = r("model_build", {**MLP})
    base = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.requires_grad_(False)
    x, y = data()
    with torch.no_grad():
        first = F.cross_entropy(m(x), y)  # B = 0 below: W + B·A starts at W
    g = torch.Generator().manual_seed(2)
    factors = {}
    for name in ("layers.0", "layers.1"):
        out, inp = m.get_submodule(name).weight.shape
        a = (torch.randn(2, inp, generator=g) * 0.1).requires_grad_()
        b = torch.zeros(out, 2, requires_grad=True)  # W + B·A starts at W
        factors[name] = (a, b)
        r("model_hook", m, "weight", r.obj(lambda ins, a=a, b=b: [ins[0] + b @ a]), {"modules": name})
    losses = []
    for _ in range(60):
        loss = F.cross_entropy(r("model_forward", m, [x]), y)
        r("backward", loss)
        with torch.no_grad():
            for a, b in factors.values():
                assert a.grad is not None and b.grad is not None
                a.sub_(a.grad * 0.5)
                b.sub_(b.grad * 0.5)
                a.grad = b.grad = None
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(float(first), rel=1e-6) and losses[-1] < 0.9 * losses[0]
    for n, p in m.named_parameters():
        assert torch.equal(p, base[n]) and p.grad is None, n
    assert m.layers[2].__dict__.get("_liaison_weight_hook") is None  # not chosen: no hook


def test_adopted_modules_are_chosen_by_a_name_pattern(r):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 6 * 6, 3))
    d = r("model_build", {**MLP}).describe()  # a built model lists its own sites
    assert d["hook_modules"]["weight"][0] == "layers.0"
    calls = []

    def halve(ins):
        calls.append(tuple(ins[0].shape))
        return [ins[0] * 0.5]

    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        want = F.linear(F.conv2d(x, net[0].weight * 0.5, net[0].bias).relu().flatten(1), net[3].weight * 0.5,
                        net[3].bias)
    r("model_hook", net, "weight", r.obj(halve), {"modules": r"\d"})  # '0' and '3', not the whole net
    got = r("model_forward", net, [x], train=False)
    assert calls == [(4, 1, 3, 3), (3, 144)]
    assert torch.allclose(got, want)
    r("model_hook", net, "weight", None, {"modules": "3"})
    r("model_forward", net, [x], train=False)
    assert calls[2:] == [(4, 1, 3, 3)]  # only the conv keeps its hook
    assert list(net.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]  # names unchanged


def test_weight_hook_errors_name_what_was_wrong(r):
    m = r("model_build", {**MLP})
    same = r.obj(lambda ins: [ins[0]])
    assert fault("E_ARG", r, "model_hook", m, "weight", same, {}).extra["field"] == "modules"
    f = fault("E_ARG", r, "model_hook", m, "weight", same, {"modules": "blocks.*"})
    assert "layers.0" in f.message and f.extra["field"] == "modules"
    assert fault("E_ARG", r, "model_hook", m, "weight", same, {"modules": "("}).extra["field"] == "modules"
    assert fault("E_ARG", r, "model_hook", m, "weight", same, {"modules": "x", "layers": [0]}).extra["field"] == \
        "layers"
    r("model_hook", m, "weight", r.obj(lambda ins: [ins[0].t()]), {"modules": "layers.0"})
    x = torch.randn(2, 8)
    f = fault("E_SHAPE", r, "model_forward", m, [x])
    assert "layers.0" in f.message and "[16, 8]" in f.message
    assert "weight" not in m.layers[0].__dict__  # a failed forward leaves no shadow behind
    r("model_hook", m, "weight", r.obj(lambda ins: ins[0]), {"modules": "layers.0"})
    assert "must return [weight]" in fault("E_ARG", r, "model_forward", m, [x]).message


def test_the_golden_hook_messages_name_declared_points_and_options():
    import json
    from pathlib import Path

    vectors = json.loads((Path(__file__).parents[2] / "test" / "protocol" / "vectors.json").read_text())["vectors"]
    records = [op for v in vectors if v["name"].startswith("hook_") for op in v["header"]["ops"]]
    assert {r["args"][1] for r in records} == set(POINTS)  # one golden message per declared point
    for r in records:
        assert r["op"] == "model_hook"
        assert set(r["args"][3]) <= set(POINTS[r["args"][1]].options), r
