"""The byte-level BPE tokenizer ops (ops/tokenizer.py): training, exact round trips, the
document separator, tokenizer.json in and out, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
from runner import Runner, fault

from liaison_runtime.ops.data import FILE_SEPARATOR

CODE = "\n".join(f"def f{i}(x):\n    return x * {i} + len('caf\u00e9')\n" for i in range(200))


def u8(s: str) -> torch.Tensor:
    return torch.tensor(list(s.encode("utf-8")), dtype=torch.uint8)


@pytest.fixture(scope="module")
def tok():
    r = Runner()
    return r, r.obj(r("bpe_train", u8(CODE + FILE_SEPARATOR + CODE.upper()), 300))


def test_round_trip_is_exact_and_merges_shorten_text(tok):
    r, t = tok
    text = "def f7(x):\n    return x * 7  # \u00e9\u00e8 \u2603 unseen \U0001f600\n"
    ids = r("bpe_encode", t, u8(text))
    assert ids.dtype == torch.int64 and ids.dim() == 1 and int(ids.max()) < 300
    assert ids.numel() < len(text.encode()) * 0.8  # merges learnt on similar code
    assert bytes(r("bpe_decode", t, ids).tolist()).decode("utf-8") == text


def test_vocab_and_separator(tok):
    r, t = tok
    assert r("bpe_info", t).tolist() == [300, 0]
    ids = r("bpe_encode", t, u8("x = 1" + FILE_SEPARATOR + "y = 2"))
    assert (ids == 0).sum() == 1  # the separator is one token, never split into bytes
    assert bytes(r("bpe_decode", t, ids).tolist()).decode() == "x = 1" + FILE_SEPARATOR + "y = 2"
    assert r("bpe_decode", t, torch.zeros(0, dtype=torch.int64)).numel() == 0


def test_training_is_deterministic_and_json_round_trips(tok):
    r, t = tok
    again = r.obj(r("bpe_train", u8(CODE + FILE_SEPARATOR + CODE.upper()), 300))
    js = r("bpe_to_json", t)
    assert torch.equal(js, r("bpe_to_json", again))
    assert json.loads(bytes(js.tolist()))["model"]["type"] == "BPE"
    back = r.obj(r("bpe_from_json", js))
    sample = u8(CODE[:500])
    assert torch.equal(r("bpe_encode", back, sample), r("bpe_encode", t, sample))


def test_refusals(tok):
    r, t = tok
    assert fault("E_ARG", r, "bpe_train", u8(CODE), 100).extra["param"] == "vocab"
    assert fault("E_ARG", r, "bpe_train", u8(FILE_SEPARATOR), 300).extra["param"] == "text"
    assert fault("E_ARG", r, "bpe_train", u8(CODE), 300, 0).extra["param"] == "min_frequency"
    assert fault("E_DTYPE", r, "bpe_encode", t, torch.ones(3)).extra["param"] == "text"
    assert fault("E_SHAPE", r, "bpe_encode", t, torch.zeros(2, 2, dtype=torch.uint8)).extra["param"] == "text"
    assert fault("E_ARG", r, "bpe_encode", t, torch.tensor([0xFF], dtype=torch.uint8)).extra["param"] == "text"
    assert fault("E_ARG", r, "bpe_decode", t, torch.tensor([300])).extra["param"] == "ids"
    assert fault("E_DTYPE", r, "bpe_decode", t, torch.ones(2)).extra["param"] == "ids"
    assert fault("E_ARG", r, "bpe_info", r.obj(torch.ones(3))).extra["param"] == "tokenizer"
    assert fault("E_ARG", r, "bpe_from_json", u8("{}")).extra["param"] == "json"
