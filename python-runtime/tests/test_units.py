"""The unit groups and forward FLOPs in a model's description (models/units.py): each member's
slice must be the size the group says, and the FLOPs are counted by hand."""

from __future__ import annotations

import pytest
import torch
from runner import Runner, fault

MLP = {"kind": "mlp", "sizes": [64, 30, 20, 10], "seed": 0}
CNN = {"kind": "cnn", "in_channels": 1, "image": [8, 8], "channels": [4, 6], "kernel": 3, "hidden": 12,
       "classes": 10, "seed": 0}


@pytest.fixture()
def r():
    return Runner()


def _check_shapes(m: torch.nn.Module, groups: list[dict]) -> None:
    params = dict(m.named_parameters())
    for g in groups:
        for mem in g["members"]:
            assert params[mem["param"]].shape[mem["dim"]] == g["size"] * mem["block"], (g["name"], mem)


def test_mlp_groups_match_the_layers(r):
    m = r("model_build", MLP)
    d = m.describe()
    assert [(g["name"], g["kind"], g["size"], g["field"]) for g in d["units"]] == [
        ("layers.0", "neuron", 30, "sizes.1"), ("layers.1", "neuron", 20, "sizes.2")]
    assert d["units"][1]["members"] == [{"param": "layers.1.weight", "dim": 0, "block": 1},
                                        {"param": "layers.1.bias", "dim": 0, "block": 1},
                                        {"param": "layers.2.weight", "dim": 1, "block": 1}]
    _check_shapes(m, d["units"])
    assert d["flops"] == 64 * 30 + 30 * 20 + 20 * 10


def test_mlp_without_bias_has_no_bias_members(r):
    d = r("model_build", {**MLP, "bias": False}).describe()
    assert all(not mem["param"].endswith("bias") for g in d["units"] for mem in g["members"])


def test_cnn_groups_match_the_convs_and_the_flattened_features(r):
    m = r("model_build", CNN)
    d = m.describe()
    assert [(g["name"], g["kind"], g["size"], g["field"]) for g in d["units"]] == [
        ("convs.0", "filter", 4, "channels.0"), ("convs.1", "filter", 6, "channels.1"), ("fc", "neuron", 12, "hidden")]
    # 8x8 pooled twice -> 2x2: each of the 6 last filters owns 4 consecutive columns of fc
    assert d["units"][1]["members"][-1] == {"param": "fc.weight", "dim": 1, "block": 4}
    assert d["units"][0]["members"][-1] == {"param": "convs.1.weight", "dim": 1, "block": 1}
    _check_shapes(m, d["units"])
    # channel-major flatten: zeroing filter j of the last conv changes only columns 4j..4j+3 of what fc reads
    x = torch.rand(3, 1, 8, 8) + 1

    def features():
        with torch.no_grad():
            h = torch.nn.functional.max_pool2d(torch.relu(m.convs[0](x)), 2)
            return torch.nn.functional.max_pool2d(torch.relu(m.convs[1](h)), 2).flatten(1)

    before = features()
    with torch.no_grad():
        m.convs[1].weight[2].zero_()
        m.convs[1].bias[2].zero_()
    after = features()
    changed = (before != after).any(0).nonzero().flatten().tolist()
    assert changed and set(changed) <= {8, 9, 10, 11} and torch.all(after[:, 8:12] == 0)


def test_cnn_flops_by_hand(r):
    d = r("model_build", CNN).describe()
    conv0 = 4 * 1 * 9 * 8 * 8  # 'same' padding: outputs at the 8x8 input, then pooled to 4x4
    conv1 = 6 * 4 * 9 * 4 * 4
    assert d["flops"] == conv0 + conv1 + (6 * 2 * 2) * 12 + 12 * 10 == 2304 + 3456 + 288 + 120


def test_other_kinds_have_no_groups_and_unknown_flops(r):
    d = r("model_build", {"kind": "gpt", "vocab": 32, "context": 8, "dim": 8, "layers": 1, "heads": 2}).describe()
    assert d["units"] == [] and d["flops"] is None
    d = r("model_build", {"kind": "additive", "linear": 3, "relu": 2}).describe()
    assert d["units"] == [] and d["flops"] is None


def test_unit_index_expands_blocks(r):
    m = r("model_build", CNN)
    got = r("model_unit_index", m, "convs.1", torch.tensor([1, 4]), 4)
    assert got.dtype == torch.int64 and got.tolist() == [4, 5, 6, 7, 16, 17, 18, 19]
    assert r("model_unit_index", m, "fc", torch.tensor([0, 11], dtype=torch.int32)).tolist() == [0, 11]
    assert r("model_unit_index", m, "fc", torch.zeros(0, dtype=torch.int64)).tolist() == []


def test_unit_index_refusals_name_the_group_and_its_size(r):
    m = r("model_build", MLP)
    f = fault("E_ARG", r, "model_unit_index", m, "layers.0", torch.tensor([3, 30]))
    assert "'layers.0' has 30 units" in f.message and f.extra["size"] == 30 and f.extra["group"] == "layers.0"
    assert fault("E_ARG", r, "model_unit_index", m, "layers.0", torch.tensor([-1])).extra["param"] == "index"
    assert "ascending" in fault("E_ARG", r, "model_unit_index", m, "layers.0", torch.tensor([2, 1])).message
    assert "ascending" in fault("E_ARG", r, "model_unit_index", m, "layers.0", torch.tensor([2, 2])).message
    assert fault("E_ARG", r, "model_unit_index", m, "layers.0", torch.tensor([0.5])).extra["param"] == "index"
    assert fault("E_ARG", r, "model_unit_index", m, "layers.0", torch.tensor([[0]])).extra["param"] == "index"
    assert fault("E_ARG", r, "model_unit_index", m, "layers.0", torch.tensor([0]), 0).extra["param"] == "block"
    assert "(1)" in fault("E_ARG", r, "model_unit_index", m, "layers.0", torch.tensor([0]), 2**40).message
    f = fault("E_ARG", r, "model_unit_index", m, "layers.2", torch.tensor([0]))
    assert f.extra["param"] == "group" and "layers.0, layers.1" in f.message
    gpt = r("model_build", {"kind": "gpt", "vocab": 32, "context": 8, "dim": 8, "layers": 1, "heads": 2})
    f = fault("E_ARG", r, "model_unit_index", gpt, "x", torch.tensor([0]))
    assert "the gpt model has no unit groups" in f.message
