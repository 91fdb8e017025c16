"""The small GPT-style decoder of a `{"kind": "gpt"}` spec (nanoGPT's layout, pre-LN).

Token embedding `wte`, learned absolute position embedding `wpe` (positions 'learned'; with
'rotary' there is no `wpe` and every attention layer rotates q and k by their absolute
position, rope.py), `blocks.i` (ln1, attn {qkv, proj}, ln2, mlp {fc, proj} or moe), `ln_f`,
and an untied `head` (its own weight, not `wte`'s: every state_dict entry is then a tensor of
its own, which keeps checkpoints and `model_state` one tensor per name).

`forward` is the training path: full causal attention. Cached decoding with the KV hook
is in kvcache.py and uses the same pieces (`Attention.split`/`merge`, `Block.ff`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RuntimeFault
from .base import Described
from .moe import FeedForward, MoE
from .rope import apply_rope


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float, rope_base: float | None = None, smear: bool = False):
        super().__init__()
        self.heads = heads
        self.rope_base = rope_base  # None: learned positions (added at the input), nothing to rotate
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        if smear:
            # smeared keys (Olsson et al. 2022, "In-context Learning and Induction Heads", §"smeared
            # key" models): each key mixes in its predecessor's, so one layer can match "the token
            # before j" and copy what followed: a copying head forms without two layers composing.
            # One logit per head; 0 starts at an even mix.
            self.smear = nn.Parameter(torch.zeros(heads))

    def split(self, x: torch.Tensor):
        """(B, T, C) -> q, k, v, each (B, H, T, D)."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        return [u.view(b, t, self.heads, c // self.heads).transpose(1, 2) for u in (q, k, v)]

    def smeared(self, k: torch.Tensor, prev: torch.Tensor | None = None,
                start: torch.Tensor | None = None) -> torch.Tensor:
        """Raw keys k (B, H, T, D) smeared: k'_t = σ(s)·k_t + (1 − σ(s))·k_{t−1}, s per head. `prev`
        (B, H, 1, D): the raw key before k's first (None: k's first starts the sequence); `start`
        (B, 1, T, 1) bool: tokens that start a sequence (a left-padded prompt), left as they are.
        Unchanged without smeared keys."""
        if "smear" not in self._parameters:
            return k
        before = torch.cat([k[:, :, :1] if prev is None else prev, k[:, :, :-1]], dim=2)  # (B, H, T, D): k_{t-1}
        a = torch.sigmoid(self.smear).to(k.dtype)[None, :, None, None]  # (1, H, 1, 1)
        out = a * k + (1 - a) * before
        return out if start is None else torch.where(start, k, out)

    def rotate(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """q or k (B, H, T, D) at positions pos (B|1, H|1, T) i64, rotated when rotary."""
        return x if self.rope_base is None else apply_rope(x, pos, self.rope_base)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, T, D) attention output -> (B, T, C), projected."""
        b, h, t, d = y.shape
        return F.dropout(self.proj(y.transpose(1, 2).reshape(b, t, h * d)), self.dropout, self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(x)
        k = self.smeared(k)
        if self.rope_base is not None:
            pos = torch.arange(x.shape[1], device=x.device)[None, None]  # (1, 1, T)
            q, k = self.rotate(q, pos), self.rotate(k, pos)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)  # (B, H, T, D)
        return self.merge(y)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, dropout: float, moe: MoE | None,
                 rope_base: float | None = None, smear: bool = False):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout, rope_base, smear)
        self.ln2 = nn.LayerNorm(dim)
        if moe is None:
            self.mlp = FeedForward(dim, hidden, dropout)
        else:
            self.moe = moe

    def ff(self, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward half, residual included."""
        h = self.ln2(x)
        return x + (self.moe(h) if "moe" in self._modules else self.mlp(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x + self.attn(self.ln1(x)))


class GPT(Described, nn.Module):
    """(B, T) int tokens -> (B, T, vocab) logits."""

    spec_kind = "gpt"

    def __init__(self, vocab: int, context: int, dim: int, layers: int, heads: int, mlp_ratio: int,
                 dropout: float, make_moe=None, positions: str = "learned", rope_base: float = 10000.0,
                 smear_keys: bool = False):
        """make_moe(i) -> an MoE layer for block i, or None for a dense MLP there.
        positions 'learned' (a `wpe` table of `context` rows) or 'rotary' (RoPE with `rope_base`);
        smear_keys: every attention layer's keys mix in their predecessor's (Attention.smeared)."""
        super().__init__()
        self.vocab, self.context = vocab, context
        self.positions, self.rope_base = positions, float(rope_base)
        self.wte = nn.Embedding(vocab, dim)
        if positions == "learned":
            self.wpe = nn.Embedding(context, dim)
        self.dropout = dropout
        blocks = []
        for i in range(layers):
            moe = make_moe(i) if make_moe else None
            if moe is not None:
                moe.label = f"blocks.{i}.moe"
            blocks.append(Block(dim, heads, mlp_ratio * dim, dropout, moe,
                                self.rope_base if positions == "rotary" else None, smear_keys))
        self.blocks = nn.ModuleList(blocks)
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self._init_weights(layers)
        # client objects and decoding results, kept out of the module tree
        self.__dict__["kv_hooks"] = {}  # layer index -> kvcache.KVHook
        self.__dict__["cache_sizes"] = None  # cache length per layer after the last generate/kv_eval

    def _init_weights(self, layers: int) -> None:
        # nanoGPT's init: N(0, 0.02), residual projections scaled down by depth so the
        # residual stream's variance does not grow with the number of blocks
        for name, p in self.named_parameters():
            if ".router." in name or name.startswith("ln") or ".ln" in name or name.endswith(".smear"):
                continue
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))
            else:
                nn.init.normal_(p, 0.0, 0.02)

    def check_tokens(self, op: str, param: str, tokens: torch.Tensor, context: bool = True) -> None:
        """Token ids (B, T) in the vocabulary; T <= context unless `context` is False (rotary decoding)."""
        if tokens.dtype not in (torch.int64, torch.int32):
            raise RuntimeFault("E_DTYPE", f"{op}: '{param}' must hold token ids (i64 or i32), got {tokens.dtype}",
                               param=param)
        if tokens.dim() != 2 or tokens.shape[1] < 1:
            raise RuntimeFault("E_SHAPE", f"{op}: '{param}' must be (B, T) tokens, got shape {list(tokens.shape)}",
                               param=param)
        if context and tokens.shape[1] > self.context:
            raise RuntimeFault("E_SHAPE", f"{op}: '{param}' has {tokens.shape[1]} tokens, more than the model's "
                               f"context of {self.context}", param=param)
        if tokens.numel():
            # an out-of-range id is a device-side assert on CUDA; refuse it here (one sync)
            lo, hi = torch.stack(torch.aminmax(tokens)).tolist()
            if lo < 0 or hi >= self.vocab:
                raise RuntimeFault("E_SHAPE", f"{op}: '{param}' holds ids from {lo} to {hi}, outside the "
                                   f"vocabulary [0, {self.vocab})", param=param)

    def embed(self, tokens: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) tokens at absolute positions pos ((B|1, T) i64; None: 0..T-1) -> (B, T, C).
        Rotary models add nothing here: their positions are applied in attention."""
        x = self.wte(tokens)
        if self.positions == "learned":
            if pos is None:
                pos = torch.arange(tokens.shape[1], device=tokens.device)[None]
            x = x + self.wpe(pos.clamp(min=0))  # a left-padding row's -1 positions are never attended to
        return F.dropout(x, self.dropout, self.training)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(x))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.check_tokens("model_forward", "inputs", tokens)
        x = self.embed(tokens.long())  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        return self.logits(x)  # (B, T, vocab)

    def attention_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) tokens -> (L, B, H, T, T) f32: each layer's causal softmax attention in a plain
        forward (computed explicitly; the forward itself is the same as `forward`'s)."""
        x = self.embed(tokens)
        t = tokens.shape[1]
        future = torch.ones(t, t, dtype=torch.bool, device=tokens.device).triu(1)
        maps = []
        for block in self.blocks:
            q, k, v = block.attn.split(block.ln1(x))  # (B, H, T, D)
            k = block.attn.smeared(k)
            if block.attn.rope_base is not None:
                pos = torch.arange(t, device=tokens.device)[None, None]
                q, k = block.attn.rotate(q, pos), block.attn.rotate(k, pos)
            s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
            a = torch.softmax(s.masked_fill(future, float("-inf")), -1)  # (B, H, T, T)
            maps.append(a.float())
            x = block.ff(x + block.attn.merge(a @ v))
        return torch.stack(maps)
