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
