"""Real data that ships with the packages the runtime installs (no downloads): scikit-learn's
bundled datasets, English text (CPython's pydoc topics, Debian's fortune files) and Python
source code (the standard library of the interpreter running the runtime)."""

from __future__ import annotations

import functools
import os
import sysconfig
import zlib

import numpy as np
import torch

from ..errors import RuntimeFault
from .registry import P, op

DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
CORPORA = ("pydoc", "fortunes")
FORTUNES = "/usr/share/games/fortunes"
CODE_SPLITS = ("train", "heldout")
# between two files of the code corpus; the BPE tokenizer (ops/tokenizer.py) keeps it as one token
FILE_SEPARATOR = "<|endoftext|>"
HELDOUT_BUCKETS = 20  # one file in 20 (by a hash of its path) is held out: ~5%


def _standardize(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per column (a constant column stays 0)."""
    sd = a.std(axis=0)
    return (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


@functools.cache
def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets as skd

    x, y = getattr(skd, f"load_{name}")(return_X_y=True)
    if name == "digits":
        return (x / 16.0).astype(np.float32), y.astype(np.int64)  # pixel counts 0..16 -> [0, 1]
    if name == "diabetes":
        return x.astype(np.float32), _standardize(y).astype(np.float32)  # sklearn already scales X
    return _standardize(x).astype(np.float32), y.astype(np.int64)


@op("dataset", P("name", "str"), outputs=2)
def dataset(ctx, name):
    """dataset(name): (X f32, y) from scikit-learn's bundled datasets (no download).

    digits: X (1797, 64) pixels scaled to [0, 1]; iris, wine, breast_cancer: X standardized per
    feature; y i64 classes. diabetes: X as sklearn gives it, y f32 standardized."""
    if name not in DATASETS:
        raise RuntimeFault("E_ARG", f"dataset: no dataset {name!r}; there are {', '.join(DATASETS)}", param="name")
    x, y = _load(name)
    # fresh tensors each call: an in-place op on one must not change the cached arrays
    return torch.tensor(x, device=ctx.device), torch.tensor(y, device=ctx.device)


def _ascii(data: bytes) -> bytes:
    """Drop non-ASCII bytes, so every byte is a token of a 128 (or 256) symbol vocabulary."""
    arr = np.frombuffer(data, dtype=np.uint8)
    return arr[arr < 128].tobytes()


@functools.cache
def _corpus(name: str) -> bytes:
    if name == "pydoc":
        from pydoc_data.topics import topics

        return _ascii("\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8"))
    files = []
    if os.path.isdir(FORTUNES):
        # the text files only: not the strfile indexes (.dat), the .u8 links or subfolders (off/ is rot13)
        files = sorted(f for f in os.listdir(FORTUNES) if not f.endswith((".dat", ".u8"))
                       and os.path.isfile(os.path.join(FORTUNES, f)) and not os.path.islink(os.path.join(FORTUNES, f)))
    if not files:
        raise RuntimeFault("E_ARG", f"text_corpus: 'fortunes' is not installed on the runtime's machine (no files in "
                           f"{FORTUNES}; the Debian package 'fortunes' provides them)", param="name")
    parts = []
    for f in files:
        with open(os.path.join(FORTUNES, f), "rb") as fh:
            parts.append(fh.read())
    return _ascii(b"\n".join(parts))


@op("text_corpus", P("name", "str"))
def text_corpus(ctx, name):
    """text_corpus(name): u8 (N,) ASCII bytes of English text, 'pydoc' or 'fortunes'.

    pydoc: CPython's pydoc_data topics in sorted key order; fortunes: Debian's fortune files
    (/usr/share/games/fortunes), where installed. Non-ASCII bytes are dropped."""
    if name not in CORPORA:
        raise RuntimeFault("E_ARG", f"text_corpus: no corpus {name!r}; there are {', '.join(CORPORA)}", param="name")
    data = _corpus(name)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(ctx.device)


def _stdlib_files(root: str) -> list[str]:
    """Relative paths of every .py file under the stdlib root, sorted; installed packages
    (site-packages, dist-packages) and byte-code caches left out; the test suites kept."""
    out = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in ("site-packages", "dist-packages", "__pycache__"))
        out.extend(os.path.relpath(os.path.join(d, f), root) for f in files if f.endswith(".py"))
    return sorted(out)


def heldout_file(rel: str) -> bool:
    """Whether a file goes to 'heldout': a CRC-32 of its relative path, so the split is the
    same on every machine and a file's side never depends on which other files exist."""
    return zlib.crc32(rel.replace(os.sep, "/").encode("utf-8")) % HELDOUT_BUCKETS == 0


@functools.cache
def _code(root: str) -> dict[str, tuple[bytes, int, int]]:
    """split -> (the split's files as UTF-8 joined by FILE_SEPARATOR, files, files skipped)."""
    parts: dict[str, list[str]] = {s: [] for s in CODE_SPLITS}
    skipped = dict.fromkeys(CODE_SPLITS, 0)
    for rel in _stdlib_files(root):
        side = "heldout" if heldout_file(rel) else "train"
        try:
            with open(os.path.join(root, rel), "rb") as fh:
                text = fh.read().decode("utf-8")
        except (OSError, UnicodeDecodeError):  # a few test files are deliberately in other encodings
            skipped[side] += 1
            continue
        if FILE_SEPARATOR in text:  # the separator must mean "a file ends here" and nothing else
            text = text.replace(FILE_SEPARATOR, "<|end of text|>")
        parts[side].append(text)
    return {s: (FILE_SEPARATOR.join(parts[s]).encode("utf-8"), len(parts[s]), skipped[s]) for s in CODE_SPLITS}


@op("code_corpus", P("split", "str", choices=CODE_SPLITS), outputs=2)
def code_corpus(ctx, split):
    """code_corpus(split): (u8 (N,) UTF-8 Python source, i64 (3,) files, bytes, files skipped).

    The .py files of the standard library of the interpreter running the runtime
    (sysconfig's 'stdlib' path; site-packages left out, the test suites kept), in sorted path
    order, joined by '<|endoftext|>'. Split by file: one in 20 (a CRC-32 of its relative path)
    is 'heldout', the rest 'train'. Files that are not UTF-8 are skipped and counted."""
    root = sysconfig.get_paths()["stdlib"]
    if not os.path.isdir(root):
        raise RuntimeFault("E_OP_FAILED", f"code_corpus: the standard library folder {root!r} is missing",
                           param="split")
    data, files, skipped = _code(root)[split]
    counts = torch.tensor([files, len(data), skipped], dtype=torch.int64, device=ctx.device)
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(ctx.device), counts
