"""Model ops through the op binding: build from specs, forward, parameters and gradients by
name, activations, state and checkpoints, factories and the runtime policy, describe()."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from runner import Runner, fault

from liaison_runtime import policy
from liaison_runtime.errors import RuntimeFault
from liaison_runtime.executor import Executor
from liaison_runtime.ops import OPS
from liaison_runtime.protocol import Handle as H

MLP = {"kind": "mlp", "sizes": [64, 32, 10], "seed": 0}
CNN = {"kind": "cnn", "in_channels": 1, "image": [8, 8], "channels": [4, 8], "kernel": 3, "hidden": 16,
       "classes": 10, "seed": 0}
GPT = {"kind": "gpt", "vocab": 64, "context": 16, "dim": 16, "layers": 2, "heads": 2, "seed": 0}


@pytest.fixture()
def r():
    return Runner()


def _policy(on: bool, root):
    saved = policy.ALLOW_FACTORIES, policy.ALLOW_FILES, policy.FILE_ROOT
    policy.set_policy(factories=on, files=on, root=root)  # the test's own folder: files stay inside the root
    yield
    policy.set_policy(factories=saved[0], files=saved[1], root=saved[2])


@pytest.fixture()
def allow(tmp_path):
    yield from _policy(True, tmp_path)


@pytest.fixture()
def deny(tmp_path):
    yield from _policy(False, tmp_path)


def test_each_kind_builds_and_runs_forward(r):
    x = torch.rand(5, 64)
    assert r("model_forward", r("model_build", MLP), [x]).shape == (5, 10)
    cnn = r("model_build", CNN)
    assert r("model_forward", cnn, [x]).shape == (5, 10)  # flat digits features
    assert r("model_forward", cnn, [x.reshape(5, 1, 8, 8)]).shape == (5, 10)
    tokens = torch.randint(0, 64, (3, 16))
    assert r("model_forward", r("model_build", GPT), [tokens]).shape == (3, 16, 64)


def test_seed_makes_init_reproducible_and_leaves_the_global_stream(r):
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a, b = r("model_build", MLP), r("model_build", MLP)
    assert torch.rand(1) == before
    assert torch.equal(a.layers[0].weight, b.layers[0].weight)
    c, d = r("model_build", {**MLP, "seed": None}), r("model_build", {**MLP, "seed": None})
    assert not torch.equal(c.layers[0].weight, d.layers[0].weight)


def test_mlp_parameters_have_readable_names(r):
    m = r("model_build", {"kind": "mlp", "sizes": [4, 8, 3], "bias": False})
    assert [n for n, _ in m.named_parameters()] == ["layers.0.weight", "layers.1.weight"]
    w = r("model_param", m, "layers.0.weight")
    assert w is m.layers[0].weight and w.requires_grad
    f = fault("E_ARG", r, "model_param", m, "layers.0.bias")
    assert "layers.0.weight" in f.message and f.extra["param"] == "name"


def test_param_is_the_model_memory_and_in_place_updates_reach_it(r):
    m = r("model_build", MLP)
    w = r("model_param", m, "layers.1.bias")
    with torch.no_grad():  # as an optimizer step runs
        r("add_", w, 1.0)
    assert torch.equal(m.layers[1].bias, w) and float(w.detach().mean()) > 0.5
    assert r("mul", w, 2.0).shape == (10,)  # other ops take a Parameter too


def test_backward_fills_gradients_and_zero_grad_drops_them(r):
    m = r("model_build", MLP)
    x, y = torch.rand(8, 64), torch.randint(0, 10, (8,))
    assert not r("model_grad", m, "layers.0.weight").any()
    loss = r("cross_entropy", r("model_forward", m, [x]), y)
    r("backward", loss)
    g = r("model_grad", m, "layers.0.weight")
    assert g.shape == (32, 64) and g.abs().sum() > 0
    r("zero_grad", m)
    assert m.layers[0].weight.grad is None and not r("model_grad", m, "layers.0.weight").any()


def test_backward_refusals(r):
    m = r("model_build", MLP)
    out = r("model_forward", m, [torch.rand(2, 64)], train=False)
    assert not out.requires_grad
    assert "train=false" in fault("E_ARG", r, "backward", r("mean", out)).message
    assert fault("E_SHAPE", r, "backward", r("model_forward", m, [torch.rand(2, 64)])).extra["param"] == "loss"
    fault("E_DTYPE", r, "backward", torch.ones((), dtype=torch.int64))


def test_mlp_learns_digits(r):
    x, y = r("dataset", "digits")
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1400], perm[1400:]
    m = r("model_build", {"kind": "mlp", "sizes": [64, 64, 10], "seed": 0})
    names = [n for n, _ in m.named_parameters()]
    for i in range(300):
        b = tr[(i * 128) % 1400:][:128]
        r("backward", r("cross_entropy", r("model_forward", m, [x[b]]), y[b]))
        with torch.no_grad():
            for n in names:
                r("sub_", r("model_param", m, n), r("model_grad", m, n), alpha=0.5)
        r("zero_grad", m)
    acc = r("accuracy", r("model_forward", m, [x[te]], train=False), y[te])
    assert acc.dtype == torch.float32 and acc.dim() == 0
    assert float(acc) > 0.9, float(acc)


def test_accuracy_checks():
    r = Runner()
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0]]])  # (1, 2, 2): leading dims flatten
    assert float(r("accuracy", logits, torch.tensor([[1, 1]]))) == 0.5
    fault("E_SHAPE", r, "accuracy", logits, torch.tensor([1, 1]))
    fault("E_DTYPE", r, "accuracy", logits, torch.tensor([[1.0, 1.0]]))


def test_capture_and_activation(r):
    m = r("model_build", MLP)
    fault("E_ARG", r, "model_activation", m, "acts.0")
    r("model_capture", m, ["acts.0", "layers.1"])
    fault("E_ARG", r, "model_activation", m, "acts.0")  # captured but no forward yet
    out = r("model_forward", m, [torch.rand(3, 64)])
    h = r("model_activation", m, "acts.0")
    assert h.shape == (3, 32) and (h >= 0).all() and not h.requires_grad
    assert torch.equal(r("model_activation", m, "layers.1"), out.detach())
    f = fault("E_ARG", r, "model_capture", m, ["nope"])
    assert "layers.0" in f.message
    r("model_capture", m, [])
    fault("E_ARG", r, "model_activation", m, "acts.0")
    assert not m.acts[0]._forward_hooks


def test_state_round_trip_and_errors(r):
    a, b = r("model_build", MLP), r("model_build", {**MLP, "seed": 1})
    names = [e["name"] for e in a.describe()["state"]]
    tensors = r("model_state", a)
    assert len(tensors) == len(names) == 4
    assert tensors[0].data_ptr() == a.layers[0].weight.data_ptr()  # same memory, detached
    r("model_load_state", b, names, tensors)
    assert torch.equal(a.layers[0].weight, b.layers[0].weight)
    f = fault("E_ARG", r, "model_load_state", b, names[:3], tensors[:3])
    assert "missing layers.1.bias" in f.message
    f = fault("E_ARG", r, "model_load_state", b, [*names[:3], "extra"], tensors)
    assert "unexpected extra" in f.message
    r("model_load_state", b, names[:1], tensors[:1], strict=False)  # partial load is allowed when asked
    f = fault("E_SHAPE", r, "model_load_state", b, names, [tensors[0].T, *tensors[1:]])
    assert "layers.0.weight: expected [32, 64], got [64, 32]" in f.message
    fault("E_ARG", r, "model_load_state", b, names, tensors[:3])


def test_safetensors_file_and_hf_folder(r, tmp_path, allow):
    a, b = r("model_build", GPT), r("model_build", {**GPT, "seed": 3})
    r("model_save_file", a, str(tmp_path / "ckpt.safetensors"))
    r("model_load_file", b, str(tmp_path / "ckpt.safetensors"))
    tokens = torch.randint(0, 64, (2, 8))
    assert torch.equal(r("model_forward", a, [tokens], train=False), r("model_forward", b, [tokens], train=False))
    r("model_save_file", a, str(tmp_path / "hf"))
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    c = r("model_build", {**GPT, "seed": 4})
    r("model_load_file", c, str(tmp_path / "hf"))
    assert torch.equal(c.head.weight, a.head.weight)
    fault("E_ARG", r, "model_load_file", r("model_build", MLP), str(tmp_path / "hf"))  # other model: names differ
    fault("E_ARG", r, "model_load_file", c, str(tmp_path / "missing"))


def test_files_refused_without_the_policy(r, tmp_path, deny):
    m = r("model_build", MLP)
    f = fault("E_ARG", r, "model_save_file", m, str(tmp_path / "x.safetensors"))
    assert "--allow-files" in f.message and not (tmp_path / "x.safetensors").exists()
    fault("E_ARG", r, "model_load_file", m, str(tmp_path / "x.safetensors"))


def test_factory(r, allow):
    m = r("model_build", {"kind": "factory", "ref": "torch.nn:Linear", "kwargs": {"in_features": 4,
                                                                                   "out_features": 2}, "seed": 0})
    assert isinstance(m, torch.nn.Linear)
    assert r("model_forward", m, [torch.rand(3, 4)]).shape == (3, 2)
    assert fault("E_ARG", r, "model_build", {"kind": "factory", "ref": "torch.nn"}).extra["field"] == "ref"
    assert fault("E_ARG", r, "model_build", {"kind": "factory", "ref": "no_such_pkg:f"}).extra["field"] == "ref"
    assert fault("E_ARG", r, "model_build", {"kind": "factory", "ref": "torch:zeros", "kwargs": {"size": [2]}}
                 ).extra["field"] == "ref"  # not a module
    assert fault("E_ARG", r, "model_build", {"kind": "factory", "ref": "torch.nn:Linear", "kwargs": {"x": 1}}
                 ).extra["field"] == "kwargs"


def test_factory_refused_without_the_policy(r, deny):
    f = fault("E_ARG", r, "model_build", {"kind": "factory", "ref": "torch.nn:Linear", "kwargs": {}})
    assert "--allow-factories" in f.message


def test_policy_follows_the_endpoint(tmp_path):
    saved = policy.ALLOW_FACTORIES, policy.ALLOW_FILES
    try:
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        policy.for_endpoint(f"ipc://{private}/rt.sock")  # the launcher's kind of folder
        assert policy.ALLOW_FACTORIES and policy.ALLOW_FILES
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o775)  # others may connect to a socket here: not private
        policy.for_endpoint(f"ipc://{shared}/rt.sock")
        assert not policy.ALLOW_FACTORIES and not policy.ALLOW_FILES
        policy.for_endpoint("tcp://127.0.0.1:5555")
        assert not policy.ALLOW_FACTORIES and not policy.ALLOW_FILES
        policy.for_endpoint("tcp://127.0.0.1:5555", files=True)
        assert not policy.ALLOW_FACTORIES and policy.ALLOW_FILES
    finally:
        policy.set_policy(factories=saved[0], files=saved[1])


@pytest.mark.parametrize("spec,field", [
    ({"kind": "mlp"}, "sizes"),
    ({"kind": "mlp", "sizes": [4]}, "sizes"),
    ({"kind": "mlp", "sizes": [4, 2], "activation": "swish"}, "activation"),
    ({"kind": "mlp", "sizes": [4, 2], "dropout": 1.0}, "dropout"),
    ({"kind": "mlp", "sizes": [4, 2], "size": 3}, "size"),
    ({"kind": "mlp", "sizes": [4, 2], "seed": "x"}, "seed"),
    ({"kind": "transformer"}, "kind"),
    ({"kind": "cnn", "image": [8, 8], "channels": [4, 4, 4, 4], "classes": 10}, "channels"),
    ({"kind": "cnn", "image": [8], "channels": [4], "classes": 10}, "image"),
    ({**GPT, "heads": 3}, "heads"),
    ({**GPT, "vocab": 0}, "vocab"),
    ({**GPT, "moe": {"experts": 2}}, "moe.hidden"),
    ({**GPT, "moe": {"experts": 2, "hidden": 8, "top_k": 1}}, "moe.top_k"),
    ({**GPT, "moe": {"experts": 2, "hidden": 8, "params": {"gate": {"shape": [16, 2], "init": "xavier"}}}},
     "moe.params.gate.init"),
    ({**GPT, "moe": {"experts": 2, "hidden": 8, "params": {"gate": {"shape": "16x2"}}}}, "moe.params.gate.shape"),
    ({**GPT, "moe": {"experts": 2, "hidden": 8, "params": {"gate": {"shape": [2], "init": "zeros", "std": 1}}}},
     "moe.params.gate.std"),
    ({**GPT, "moe": {"experts": 2, "hidden": 8, "params": {"a.b": {"shape": [2]}}}}, "moe.params.a.b"),
])
def test_bad_specs_name_the_field(r, spec, field):
    f = fault("E_ARG", r, "model_build", spec)
    assert f.extra["field"] == field and f"'{field}'" in f.message, f.message


def test_unknown_field_lists_the_allowed_ones(r):
    assert "allowed: kind, sizes, activation" in fault("E_ARG", r, "model_build", {**MLP, "sizez": 1}).message
    fault("E_ARG", r, "model_build", "mlp")


def test_forward_checks_inputs(r):
    fault("E_SHAPE", r, "model_forward", r("model_build", MLP), [torch.rand(2, 5)])
    fault("E_SHAPE", r, "model_forward", r("model_build", CNN), [torch.rand(2, 65)])
    gpt = r("model_build", GPT)
    fault("E_DTYPE", r, "model_forward", gpt, [torch.rand(2, 4)])
    fault("E_SHAPE", r, "model_forward", gpt, [torch.zeros(2, 17, dtype=torch.int64)])  # past the context
    fault("E_SHAPE", r, "model_forward", gpt, [torch.full((2, 4), 64)])  # past the vocabulary
    fault("E_ARG", r, "model_forward", torch.ones(2), [torch.rand(2)])


def test_describe_through_the_meta_path(allow):
    ex = Executor(torch.device("cpu"))
    sid = ex.handle({"kind": "hello", "id": 1}, [])[0]["sid"]
    ops = [{"op": "model_build", "out": [H(1)], "args": [GPT]},
           {"op": "model_build", "out": [H(2)], "args": [{"kind": "factory", "ref": "torch.nn:Linear",
                                                          "kwargs": {"in_features": 3, "out_features": 2}}]},
           {"op": "model_state", "out": [H(10 + i) for i in range(29)], "args": [H(1)]}]
    reply, _, _ = ex.handle({"kind": "batch", "id": 2, "sid": sid, "ops": ops, "meta": [H(1), H(2)]}, [])
    gpt, lin = reply["meta"]
    assert gpt["type"] == "Module" and gpt["kind"] == "gpt" and gpt["hooks"] == {"kv": 2, "router": 0}
    assert gpt["params"][0] == {"name": "wte.weight", "shape": [64, 16], "dtype": "f32", "numel": 1024}
    assert len(gpt["state"]) == 29 and gpt["buffers"] == []
    assert lin["kind"] == "factory" and lin["hooks"] == {"kv": 0, "router": 0}
    assert [p["name"] for p in lin["params"]] == ["weight", "bias"]
    # model_state with the wrong count: the executor refuses it
    bad = [{"op": "model_state", "out": [H(50)], "args": [H(1)]}]
    with pytest.raises(RuntimeFault) as info:
        ex.handle({"kind": "batch", "id": 3, "sid": sid, "ops": bad}, [])
    assert "29 outputs" in info.value.message


def test_gpt_learns_pydoc_text(r):
    data = r("text_corpus", "pydoc")[:60_000].long()
    m = r("model_build", {"kind": "gpt", "vocab": 128, "context": 32, "dim": 32, "layers": 2, "heads": 2,
                          "seed": 0})
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam([r("model_param", m, n) for n, _ in m.named_parameters()], lr=3e-3)
    losses = []
    for _ in range(150):
        starts = torch.randint(0, len(data) - 33, (16,), generator=g)
        batch = torch.stack([data[s:s + 33] for s in starts.tolist()])
        logits = r("model_forward", m, [batch[:, :-1]])
        loss = r("cross_entropy", logits.reshape(-1, 128), batch[:, 1:].reshape(-1))
        r("backward", loss)
        opt.step()
        r("zero_grad", m)
        losses.append(float(loss.detach()))
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert first > 4.0 and last < first - 1.5, (first, last)


def test_every_model_data_and_train_op_is_exercised_here():
    """These ops need models, hooks or files, so test_ops.py's table has no case for them;
    this keeps each one called by name in one of the test files that cover them."""
    here = Path(__file__).parent
    text = "".join((here / f).read_text() for f in ("test_models.py", "test_data.py", "test_generate.py",
                                                            "test_nonfinite.py", "test_units.py", "test_kvcache.py",
                                                            "test_moe_forms.py"))
    ours = [n for n, d in OPS.items() if d.fn.__module__.rsplit(".", 1)[-1] in ("model", "train", "data")]
    assert len(ours) == 25
    assert [n for n in ours if f'"{n}"' not in text] == []


def test_a_malformed_shard_index_is_refused_naming_the_path(r, allow, tmp_path):
    m = r("model_build", MLP)
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": ["not", "a", "map"]}')
    assert fault("E_ARG", r, "model_load_file", m, str(tmp_path)).extra["param"] == "path"
    (tmp_path / "model.safetensors.index.json").write_text('{"weight_map": {"w": "../elsewhere.safetensors"}}')
    assert "outside its folder" in fault("E_ARG", r, "model_load_file", m, str(tmp_path)).message
