"""Bundled datasets and text corpora, as the ops return them."""

from __future__ import annotations

import pytest
import torch
from runner import Runner

from liaison_runtime.errors import RuntimeFault
from liaison_runtime.ops import data


@pytest.mark.parametrize("name,n,features,classes", [
    ("digits", 1797, 64, 10), ("iris", 150, 4, 3), ("wine", 178, 13, 3), ("breast_cancer", 569, 30, 2),
])
def test_classification_sets(name, n, features, classes):
    x, y = Runner()("dataset", name)
    assert x.shape == (n, features) and x.dtype == torch.float32
    assert y.shape == (n,) and y.dtype == torch.int64 and set(y.tolist()) == set(range(classes))
    if name == "digits":
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    else:  # standardized per feature
        assert x.mean(0).abs().max() < 1e-4 and (x.std(0, unbiased=False) - 1).abs().max() < 1e-3


def test_diabetes_is_regression():
    x, y = Runner()("dataset", "diabetes")
    assert x.shape == (442, 10) and x.dtype == torch.float32
    assert y.shape == (442,) and y.dtype == torch.float32 and abs(float(y.mean())) < 1e-4


def test_dataset_tensors_are_fresh():
    r = Runner()
    x, _ = r("dataset", "iris")
    x.zero_()
    assert r("dataset", "iris")[0].abs().sum() > 0


def test_unknown_dataset_lists_the_names():
    with pytest.raises(RuntimeFault) as info:
        Runner()("dataset", "mnist")
    assert info.value.code == "E_ARG" and "digits, iris" in info.value.message


def test_pydoc_corpus_is_ascii_english():
    t = Runner()("text_corpus", "pydoc")
    assert t.dtype == torch.uint8 and t.dim() == 1 and t.numel() > 300_000
    assert int(t.max()) < 128
    text = bytes(t[:200_000].tolist()).decode("ascii")
    assert " the " in text and "\n\n" in text


def test_fortunes_where_installed(monkeypatch, tmp_path):
    (tmp_path / "wisdom").write_bytes("Know thyself.\n%\nCaf\u00e9 society.\n".encode())
    (tmp_path / "wisdom.dat").write_bytes(b"\x00\x01\xff")
    monkeypatch.setattr(data, "FORTUNES", str(tmp_path))
    data._corpus.cache_clear()
    try:
        t = Runner()("text_corpus", "fortunes")
        assert bytes(t.tolist()) == b"Know thyself.\n%\nCaf society.\n"
        monkeypatch.setattr(data, "FORTUNES", str(tmp_path / "none"))
        data._corpus.cache_clear()
        with pytest.raises(RuntimeFault) as info:
            Runner()("text_corpus", "fortunes")
        assert info.value.code == "E_ARG" and "not installed" in info.value.message
    finally:
        data._corpus.cache_clear()
    with pytest.raises(RuntimeFault):
        Runner()("text_corpus", "shakespeare")


def test_code_corpus_is_the_stdlib_split_by_file():
    r = Runner()
    train, tc = r("code_corpus", "train")
    held, hc = r("code_corpus", "heldout")
    assert train.dtype == held.dtype == torch.uint8 and tc.dtype == torch.int64 and tc.shape == (3,)
    (nt, bt, _), (nh, bh, _) = tc.tolist(), hc.tolist()
    assert bt == train.numel() and bh == held.numel()
    assert nt > 500 and 0.02 < nh / (nt + nh) < 0.1  # ~1 file in 20 held out
    sep = data.FILE_SEPARATOR.encode()
    files = held.numpy().tobytes().decode("utf-8").split(data.FILE_SEPARATOR)
    assert len(files) == nh and sum(1 for f in files if "def " in f) > nh / 2  # empty __init__.py files too
    train_bytes = train.numpy().tobytes()
    assert train_bytes.count(sep) == nt - 1
    # the split is by path: a held-out file's text is nowhere in the training text
    probe = max(files, key=len)[:400].encode()
    assert probe not in train_bytes


def test_code_corpus_split_is_a_hash_of_the_path():
    assert data.heldout_file("json/decoder.py") == data.heldout_file("json/decoder.py")
    picks = [data.heldout_file(f"pkg/mod{i}.py") for i in range(2000)]
    assert 0.03 < sum(picks) / len(picks) < 0.07
    with pytest.raises(RuntimeFault) as info:
        Runner()("code_corpus", "test")
    assert info.value.code == "E_ARG" and info.value.extra["param"] == "split"
