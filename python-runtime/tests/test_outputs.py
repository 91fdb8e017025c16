"""The output hook point (liaison_runtime/models/outputs.py), through the op binding: a
module's forward returns `hook([x, y])[0]`, autograd reaches what the hook captured, it
composes with a weight hook on the same module, and its mistakes name the module. The
hooks are plain Python callables with the calling convention of the runtime's programs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from runner import Runner, fault

MLP = {"kind": "mlp", "sizes": [8, 16, 4], "seed": 0}
CNN = {"kind": "cnn", "image": [8, 8], "channels": [4], "hidden": 8, "classes": 3, "seed": 0}


def low_rank(r, a, b, scale=1.0):
    """An adapter's side path on a Linear: [x, y] -> [y + scale·(x Aᵀ) Bᵀ]."""
    return r.obj(lambda ins: [ins[1] + scale * (ins[0] @ a.T) @ b.T])


def test_a_low_rank_side_path_adds_to_the_output_and_trains_its_factors_only():
    r = Runner()
    m = r("model_build", {**MLP})
    base = {n: p.detach().clone() for n, p in m.named_parameters()}
    for p in m.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 8, generator=g).requires_grad_()
    b = torch.randn(16, 2, generator=g).requires_grad_()
    r("model_hook", m, "output", low_rank(r, a, b, 0.5), {"modules": "layers.0"})
    x = torch.randn(5, 8, generator=g)
    out = r("model_forward", m, [x])
    l0, l1 = m.layers
    with torch.no_grad():
        want = F.linear(torch.relu(F.linear(x, l0.weight + 0.5 * b @ a, l0.bias)), l1.weight, l1.bias)
    torch.testing.assert_close(out.detach(), want, rtol=1e-5, atol=1e-5)  # exactly W + scale·B·A
    r("backward", out.square().sum())
    assert a.grad is not None and b.grad is not None and a.grad.abs().sum() > 0
    for n, p in m.named_parameters():
        assert torch.equal(p, base[n]) and p.grad is None, n
    r("model_hook", m, "output", None, {"modules": "layers.0"})  # removed: the base again
    with torch.no_grad():
        torch.testing.assert_close(r("model_forward", m, [x], train=False), m.layers[1](torch.relu(l0(x))))
    assert list(m.state_dict()) == list(base)  # names unchanged throughout


def test_output_composes_with_a_weight_hook_and_sees_the_conv_input():
    r = Runner()
    m = r("model_build", {**CNN})
    conv = m.convs[0]
    seen = []

    def add_one(ins):
        seen.append((tuple(ins[0].shape), tuple(ins[1].shape)))
        return [ins[1] + 1]

    r("model_hook", m, "weight", r.obj(lambda ins: [ins[0] * 2]), {"modules": "convs.0"})
    r("model_hook", m, "output", r.obj(add_one), {"modules": "convs.0"})
    r("model_capture", m, ["convs.0"])
    x = torch.randn(2, 1, 8, 8)
    r("model_forward", m, [x], train=False)
    want = F.conv2d(x, conv.weight * 2, conv.bias, padding="same") + 1
    torch.testing.assert_close(r("model_activation", m, "convs.0"), want)
    assert seen == [((2, 1, 8, 8), tuple(want.shape))]
    # the cnn's 'same' padding is described as the ints it amounts to
    assert m.describe()["module_geometry"]["convs.0"]["padding"] == [1, 1]


def test_an_adopted_module_has_the_point_and_its_geometry_is_described():
    r = Runner()
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, stride=2, padding=1, dilation=1), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 4 * 4, 3))
    d = r("model_build", {**MLP}).describe()
    assert d["module_geometry"]["layers.1"] == {"kind": "linear", "in": 16, "out": 4, "kernel": [], "stride": [],
                                                "padding": [], "dilation": [], "groups": 1, "padding_mode": "zeros"}
    r("model_hook", net, "output", r.obj(lambda ins: [ins[1] * 0]), {"modules": "2"})
    x = torch.randn(3, 2, 8, 8)
    assert torch.equal(r("model_forward", net, [x], train=False), torch.zeros(3, 3))
    from liaison_runtime.models.base import describe_module

    dd = describe_module(net)
    assert dd["hook_modules"]["output"] == ["0", "2"]
    assert dd["module_geometry"]["0"] == {"kind": "conv2d", "in": 2, "out": 4, "kernel": [3, 3], "stride": [2, 2],
                                          "padding": [1, 1], "dilation": [1, 1], "groups": 1,
                                          "padding_mode": "zeros"}


def test_output_hook_errors_name_the_module():
    r = Runner()
    m = r("model_build", {**MLP})
    same = r.obj(lambda ins: [ins[1]])
    assert fault("E_ARG", r, "model_hook", m, "output", same, {}).extra["field"] == "modules"
    f = fault("E_ARG", r, "model_hook", m, "output", same, {"modules": "blocks.*"})
    assert "layers.0" in f.message and "output hook point" in f.message
    x = torch.randn(2, 8)
    r("model_hook", m, "output", r.obj(lambda ins: [ins[1][:, :3]]), {"modules": "layers.0"})
    f = fault("E_SHAPE", r, "model_forward", m, [x])
    assert "layers.0" in f.message and "[2, 3]" in f.message and "[2, 16]" in f.message
    r("model_hook", m, "output", r.obj(lambda ins: [ins[1], ins[1]]), {"modules": "layers.0"})
    assert "must return [output]" in fault("E_ARG", r, "model_forward", m, [x]).message
