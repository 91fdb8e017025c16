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


def test_the_input_by_keyword_is_x_and_a_call_without_it_is_refused_naming_the_module():
    class Scaled(torch.nn.Linear):
        def forward(self, inp=None, by=1.0):  # its input under another name
            return super().forward(inp) * by

    class Net(torch.nn.Module):
        def __init__(self, kw):
            super().__init__()
            self.kw, self.lin, self.odd = kw, torch.nn.Linear(3, 2), Scaled(3, 2)

        def forward(self, x):
            return self.lin(input=x) if self.kw == "input" else self.odd(by=2.0, inp=x)

    r = Runner()
    x = torch.randn(4, 3)
    seen = []
    net = Net("input")
    r("model_hook", net, "output", r.obj(lambda ins: seen.append(ins[0]) or [ins[1]]), {"modules": "lin"})
    r("model_forward", net, [x])
    assert seen and seen[0] is x
    net = Net("odd")  # before: x was the first keyword's value, 2.0
    r("model_hook", net, "output", r.obj(lambda ins: [ins[1]]), {"modules": "odd"})
    f = fault("E_ARG", r, "model_forward", net, [x])
    assert "odd" in f.message and "no input tensor" in f.message


def test_multihead_attention_out_proj_is_no_site():
    # MHA uses out_proj.weight inside F.multi_head_attention_forward, never out_proj's forward
    from liaison_runtime.models.base import describe_module

    net = torch.nn.ModuleDict({"attn": torch.nn.MultiheadAttention(4, 2), "head": torch.nn.Linear(4, 2)})
    d = describe_module(net)
    assert d["hook_modules"]["output"] == ["head"] and d["hook_modules"]["weight"] == ["head"]
    assert list(d["module_geometry"]) == ["head"]


def test_conv_lets_torch_errors_through_and_names_the_short_dim(monkeypatch):
    from liaison_runtime.ops import nn as nn_ops

    r = Runner()
    x, w = torch.randn(1, 2, 5, 4), torch.randn(3, 2, 3, 3)
    f = fault("E_SHAPE", r, "conv", x, w, None, 1, 0, [1, 2])  # dim 1: 4 < 2·(3 − 1) + 1
    assert "spatial dim 1" in f.message and f.extra.get("param") == "input"

    def oom(*a):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setitem(nn_ops._CONVS, 4, oom)
    try:
        r("conv", x, w)
    except Exception as e:  # noqa: BLE001 - whatever the binding makes of it, not a shape fault
        assert "out of memory" in str(e) and getattr(e, "code", None) != "E_SHAPE", e
    else:
        raise AssertionError("the OOM was swallowed")
