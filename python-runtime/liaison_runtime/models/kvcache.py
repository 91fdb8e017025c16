"""Cached decoding for the GPT model, with the KV hook that decides which tokens stay.

Per layer the cache holds keys and values (B, H, T, D), the absolute position of every
cached token (B, H, T) and the policy's per-token state tensors (B, H, T). After a step
appends its token, the layer's hook (if any) is called as

    scores, *new_state = hook([keys, values, attn, pos, *state])

with attn (B, H, T) the newest query's softmax weights over the cached tokens; when T
exceeds the budget, each (batch, head) keeps its `budget` highest-scoring tokens in their
original order. Positions are absolute (the position embedding is added at the input), so
evicting a token never moves the others. With no hook the cache keeps everything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import RuntimeFault
from .gpt import GPT


@dataclass
class KVHook:
    hook: object  # callable(list[Tensor]) -> list[Tensor]
    budget: int
    state: list[float]  # init value of each per-token state tensor


@dataclass
class LayerCache:
    k: torch.Tensor  # (B, H, T, D)
    v: torch.Tensor  # (B, H, T, D)
    pos: torch.Tensor  # (B, H, T) int64 absolute positions
    state: list[torch.Tensor]  # each (B, H, T) float32
    inits: list[float]

    def append(self, k: torch.Tensor, v: torch.Tensor, position: int) -> None:
        """One new token: k, v (B, H, 1, D) at absolute `position`; state padded with its init."""
        self.k = torch.cat([self.k, k], 2)
        self.v = torch.cat([self.v, v], 2)
        b, h = k.shape[:2]
        self.pos = torch.cat([self.pos, self.pos.new_full((b, h, 1), position)], 2)
        self.state = [torch.cat([s, s.new_full((b, h, 1), init)], 2) for s, init in zip(self.state, self.inits,
                                                                                         strict=True)]


def keep_top(cache: LayerCache, scores: torch.Tensor, budget: int) -> None:
    """Keep per (batch, head) the `budget` highest-scoring tokens, in their original order."""
    idx = scores.topk(budget, dim=-1).indices.sort(dim=-1).values  # (B, H, budget)
    d = cache.k.shape[-1]
    wide = idx.unsqueeze(-1).expand(-1, -1, -1, d)  # (B, H, budget, D)
    cache.k = cache.k.gather(2, wide)
    cache.v = cache.v.gather(2, wide)
    cache.pos = cache.pos.gather(2, idx)
    cache.state = [s.gather(2, idx) for s in cache.state]


def _apply_policy(model: GPT, layer: int, cache: LayerCache, attn: torch.Tensor, op: str) -> None:
    spec: KVHook | None = model.kv_hooks.get(layer)
    if spec is None:
        return
    shape = list(cache.pos.shape)  # [B, H, T]
    got = spec.hook([cache.k, cache.v, attn, cache.pos, *cache.state])
    who = f"{op}: the kv hook of layer {layer}"
    want = 1 + len(spec.state)
    if not isinstance(got, (list, tuple)) or len(got) != want or not all(isinstance(t, torch.Tensor) for t in got):
        n = len(got) if isinstance(got, (list, tuple)) else type(got).__name__
        raise RuntimeFault("E_ARG", f"{who} must return [scores, *state] ({want} tensors: 1 + its "
                           f"{len(spec.state)} declared state), got {n}", param="hook")
    for i, t in enumerate(got):
        if list(t.shape) != shape:
            what = "scores" if i == 0 else f"state {i - 1}"
            raise RuntimeFault("E_SHAPE", f"{who} returned {what} of shape {list(t.shape)}, expected {shape} "
                               "(batch, heads, cached tokens)", param="hook")
    scores, *state = got
    cache.state = [s.to(torch.float32) for s in state]
    if shape[2] > spec.budget:
        keep_top(cache, scores, spec.budget)


def _last_row(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Softmax attention of the last query over all keys: q (B, H, Tq, D), k (B, H, T, D) -> (B, H, T)."""
    return torch.softmax((q[:, :, -1:] @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]), dim=-1)[:, :, 0]


def prefill(model: GPT, tokens: torch.Tensor, op: str):
    """Full causal attention over the prompt (B, T0); each layer's cache then goes through
    its hook once, with the last prompt token's attention row. -> (last logits (B, V), caches)."""
    b, t = tokens.shape
    x = model.embed(tokens)  # (B, T0, C)
    caches = []
    for i, block in enumerate(model.blocks):
        q, k, v = block.attn.split(block.ln1(x))  # (B, H, T0, D)
        at = torch.arange(t, device=tokens.device)[None, None]  # (1, 1, T0)
        q, k = block.attn.rotate(q, at), block.attn.rotate(k, at)
        x = block.ff(x + block.attn.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True)))
        spec = model.kv_hooks.get(i)
        inits = list(spec.state) if spec else []
        pos = torch.arange(t, device=tokens.device).expand(b, k.shape[1], t)  # (B, H, T0)
        cache = LayerCache(k, v, pos.contiguous(), [torch.full(pos.shape, s, device=k.device) for s in inits], inits)
        _apply_policy(model, i, cache, _last_row(q, k), op)
        caches.append(cache)
    return model.logits(x[:, -1]), caches


def step(model: GPT, caches: list[LayerCache], token: torch.Tensor, position: int, op: str) -> torch.Tensor:
    """Feed one token (B,) at absolute `position` through every layer's cache -> logits (B, V)."""
    at = torch.full((1, 1), position, dtype=torch.int64, device=token.device)
    x = model.embed(token[:, None], at)  # (B, 1, C)
    for i, block in enumerate(model.blocks):
        q, k, v = block.attn.split(block.ln1(x))  # (B, H, 1, D)
        q, k = block.attn.rotate(q, at[None]), block.attn.rotate(k, at[None])
        cache = caches[i]
        cache.append(k, v, position)
        attn = _last_row(q, cache.k)  # (B, H, T)
        y = (attn[:, :, None] @ cache.v)  # (B, H, 1, D)
        x = block.ff(x + block.attn.merge(y))
        _apply_policy(model, i, cache, attn, op)
    return model.logits(x[:, 0])


def _pick(logits: torch.Tensor, temperature: float, generator) -> torch.Tensor:
    if temperature == 0.0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def generate(model: GPT, prompt: torch.Tensor, steps: int, temperature: float, generator) -> torch.Tensor:
    """(B, T0) prompt -> (B, T0 + steps) tokens."""
    logits, caches = prefill(model, prompt, "generate")
    out = [prompt]
    t0 = prompt.shape[1]
    for s in range(steps):
        nxt = _pick(logits, temperature, generator)  # (B,)
        out.append(nxt[:, None].to(prompt.dtype))
        if s + 1 < steps:  # the last token is returned, never fed
            logits = step(model, caches, nxt, t0 + s, "generate")
    model.cache_sizes = [c.k.shape[2] for c in caches]
    return torch.cat(out, 1)


def teacher_forced_nll(model: GPT, tokens: torch.Tensor, n_prefill: int) -> torch.Tensor:
    """(B, T) held-out tokens -> (B, T - n_prefill) negative log-likelihoods of tokens
    n_prefill.. given everything before, as the cache (and its policy) sees it."""
    logits, caches = prefill(model, tokens[:, :n_prefill], "kv_eval")
    nll = []
    t = tokens.shape[1]
    for p in range(n_prefill, t):
        target = tokens[:, p:p + 1]  # (B, 1)
        nll.append(-torch.log_softmax(logits.float(), -1).gather(1, target)[:, 0])
        if p + 1 < t:
            logits = step(model, caches, tokens[:, p], p, "kv_eval")
    model.cache_sizes = [c.k.shape[2] for c in caches]
    return torch.stack(nll, 1)
