"""Byte-level BPE tokenizers (Hugging Face `tokenizers`) as runtime objects: trained on text the
runtime holds (a u8 tensor of UTF-8, e.g. code_corpus), then encode, decode, and to / from tokenizer.json.

Text crosses the wire as u8 UTF-8 tensors and token ids as i64 tensors, so a corpus of tens of
megabytes is tokenized where it lives. The tokenizer is GPT-2's scheme (Radford et al., 2019,
"Language Models are Unsupervised Multitask Learners"): every string is bytes first, so any
text encodes with no unknown token, and BPE merges (Sennrich et al., 2016,
https://arxiv.org/abs/1508.07909) learnt on the training text make frequent strings one token.
"""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from .data import FILE_SEPARATOR
from .registry import P, op

MIN_VOCAB = 257  # the 256 byte symbols and the separator


def _lib():
    try:
        import tokenizers
    except ImportError as e:
        raise RuntimeFault("E_OP_FAILED", f"the Hugging Face 'tokenizers' package is not installed in the runtime's "
                           f"Python ({e}); `pip install tokenizers` there (npm install does it)") from None
    return tokenizers


def _tok(name: str, obj):
    tokenizers = _lib()
    if isinstance(obj, tokenizers.Tokenizer):
        return obj
    raise RuntimeFault("E_ARG", f"{name}: argument 'tokenizer' must be a tokenizer from bpe_train or bpe_load; the "
                       f"handle holds a {type(obj).__name__}", param="tokenizer")


def _text(name: str, param: str, t: torch.Tensor) -> str:
    if t.dtype != torch.uint8 or t.dim() != 1:
        raise RuntimeFault("E_DTYPE" if t.dtype != torch.uint8 else "E_SHAPE", f"{name}: '{param}' must be u8 (N,) "
                           f"UTF-8 bytes, got {str(t.dtype).removeprefix('torch.')} {list(t.shape)}", param=param)
    try:
        return t.cpu().numpy().tobytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise RuntimeFault("E_ARG", f"{name}: '{param}' is not UTF-8 (byte {e.start}: {e.reason})",
                           param=param) from None


@op("bpe_train", P("text", "tensor"), P("vocab", "int"), P("min_frequency", "int", 2))
def bpe_train(ctx, text, vocab, min_frequency):
    """bpe_train(text, vocab, min_frequency=2): a byte-level BPE tokenizer of `vocab` tokens learnt on text.

    text: u8 (N,) UTF-8; '<|endoftext|>' in it separates documents (no merge crosses it) and is
    token 0 of the vocabulary, the 256 byte symbols follow, then the merges, most frequent
    first. Deterministic for the same text and settings."""
    if vocab < MIN_VOCAB or vocab > 1 << 20:
        raise RuntimeFault("E_ARG", f"bpe_train: 'vocab' must be in [{MIN_VOCAB}, {1 << 20}] (256 bytes, the "
                           f"separator, then merges), got {vocab}", param="vocab")
    if min_frequency < 1:
        raise RuntimeFault("E_ARG", f"bpe_train: 'min_frequency' must be >= 1, got {min_frequency}",
                           param="min_frequency")
    docs = [d for d in _text("bpe_train", "text", text).split(FILE_SEPARATOR) if d]
    if not docs:
        raise RuntimeFault("E_ARG", "bpe_train: 'text' holds no text to learn from", param="text")
    tk = _lib()
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=vocab, min_frequency=min_frequency, show_progress=False,
                                     special_tokens=[FILE_SEPARATOR],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def _ids(tok, text: str) -> list[int]:
    """Documents encoded side by side (encode_batch uses every core), joined by the separator's id."""
    docs = text.split(FILE_SEPARATOR)
    sep = tok.token_to_id(FILE_SEPARATOR)
    out: list[int] = []
    for i, enc in enumerate(tok.encode_batch(docs, add_special_tokens=False)):
        if i and sep is not None:
            out.append(sep)
        out.extend(enc.ids)
    return out


@op("bpe_encode", P("tokenizer", "object"), P("text", "tensor"))
def bpe_encode(ctx, tokenizer, text):
    """bpe_encode(tokenizer, text): i64 (M,) the token ids of text, u8 (N,) UTF-8."""
    tok = _tok("bpe_encode", tokenizer)
    return torch.tensor(_ids(tok, _text("bpe_encode", "text", text)), dtype=torch.int64, device=ctx.device)


@op("bpe_decode", P("tokenizer", "object"), P("ids", "tensor"))
def bpe_decode(ctx, tokenizer, ids):
    """bpe_decode(tokenizer, ids): u8 (N,) the UTF-8 text of token ids (any shape, read in order).

    A sequence that ends inside a character decodes it as U+FFFD; the separator is kept."""
    tok = _tok("bpe_decode", tokenizer)
    if ids.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise RuntimeFault("E_DTYPE", f"bpe_decode: 'ids' must be integer token ids, got "
                           f"{str(ids.dtype).removeprefix('torch.')}", param="ids")
    flat = ids.reshape(-1).tolist()
    n = tok.get_vocab_size()
    bad = next((i for i, v in enumerate(flat) if not 0 <= v < n), None)
    if bad is not None:
        raise RuntimeFault("E_ARG", f"bpe_decode: id {flat[bad]} at {bad} is outside the vocabulary [0, {n})",
                           param="ids")
    data = tok.decode(flat, skip_special_tokens=False).encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(ctx.device) if data else \
        torch.zeros(0, dtype=torch.uint8, device=ctx.device)


@op("bpe_info", P("tokenizer", "object"))
def bpe_info(ctx, tokenizer):
    """bpe_info(tokenizer): i64 (2,) the vocabulary size and the id of '<|endoftext|>' (-1: none)."""
    tok = _tok("bpe_info", tokenizer)
    sep = tok.token_to_id(FILE_SEPARATOR)
    return torch.tensor([tok.get_vocab_size(), -1 if sep is None else sep], dtype=torch.int64, device=ctx.device)


@op("bpe_to_json", P("tokenizer", "object"))
def bpe_to_json(ctx, tokenizer):
    """bpe_to_json(tokenizer): u8 (N,) the tokenizer as a Hugging Face tokenizer.json (UTF-8).

    The client writes the file, so saving works with a remote runtime and needs no file access."""
    data = _tok("bpe_to_json", tokenizer).to_str().encode("utf-8")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).to(ctx.device)


@op("bpe_from_json", P("json", "tensor"))
def bpe_from_json(ctx, json):
    """bpe_from_json(json): a tokenizer from the UTF-8 bytes (u8 (N,)) of a Hugging Face tokenizer.json."""
    text = _text("bpe_from_json", "json", json)
    try:
        return _lib().Tokenizer.from_str(text)
    except Exception as e:  # the library raises its own exception type for a malformed file
        raise RuntimeFault("E_ARG", f"bpe_from_json: not a tokenizer.json: {str(e)[:200]}", param="json") from None
