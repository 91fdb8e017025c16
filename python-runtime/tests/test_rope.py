"""Rotary positions (models/rope.py) and the GPT's `positions: 'rotary'` option."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from runner import Runner, fault, greedy, one_thread  # noqa: F401 (autouse: this module runs torch on one thread)

from liaison_runtime.models.rope import apply_rope

GPT = {"kind": "gpt", "vocab": 32, "context": 16, "dim": 16, "layers": 2, "heads": 2, "seed": 0}
ROT = {**GPT, "positions": "rotary"}


@pytest.fixture()
def r():
    return Runner()


def tokens(b=2, t=12, seed=0):
    return torch.randint(0, 32, (b, t), generator=torch.Generator().manual_seed(seed))


def rope_by_hand(x: torch.Tensor, base: float) -> torch.Tensor:
    """RoPE written out pair by pair: pair i = (x[..., i], x[..., i + D/2]) turned by t * base^(-2i/D)."""
    out = x.clone()
    d = x.shape[-1]
    for t in range(x.shape[2]):
        for i in range(d // 2):
            a = t * base ** (-2 * i / d)
            c, s = math.cos(a), math.sin(a)
            x1, x2 = x[:, :, t, i], x[:, :, t, i + d // 2]
            out[:, :, t, i] = x1 * c - x2 * s
            out[:, :, t, i + d // 2] = x1 * s + x2 * c
    return out


def test_apply_rope_is_the_pairwise_rotation():
    x = torch.randn(2, 3, 5, 8)
    pos = torch.arange(5)[None, None]
    torch.testing.assert_close(apply_rope(x, pos, 100.0), rope_by_hand(x, 100.0))
    torch.testing.assert_close(apply_rope(x, pos, 100.0).norm(dim=-1), x.norm(dim=-1))  # a rotation
    # rotations compose: rotated to p, then by d, is rotated to p + d
    torch.testing.assert_close(apply_rope(apply_rope(x, pos, 100.0), torch.full((1, 1, 5), 7), 100.0),
                               apply_rope(x, pos + 7, 100.0), atol=1e-5, rtol=1e-5)
    # q·k depends only on the distance
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    at = lambda v, p: apply_rope(v, torch.tensor([[[p]]]), 100.0)  # noqa: E731
    torch.testing.assert_close((at(q, 9) * at(k, 4)).sum(), (at(q, 105) * at(k, 100)).sum(), atol=1e-5, rtol=1e-5)


def reference_forward(m, toks: torch.Tensor, base: float) -> torch.Tensor:
    """The rotary GPT written out: no position table, q and k rotated by hand before causal attention."""
    x = m.wte(toks)
    for blk in m.blocks:
        h = blk.ln1(x)
        b, t, c = h.shape
        heads = blk.attn.heads
        q, k, v = (u.view(b, t, heads, c // heads).transpose(1, 2) for u in blk.attn.qkv(h).split(c, 2))
        q, k = rope_by_hand(q, base), rope_by_hand(k, base)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(c // heads)
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        x = x + blk.attn.proj((att @ v).transpose(1, 2).reshape(b, t, c))
        x = x + blk.mlp(blk.ln2(x))
    return m.head(m.ln_f(x))


def test_rotary_forward_matches_the_reference(r):
    m = r("model_build", {**ROT, "rope_base": 500.0})
    assert "wpe.weight" not in dict(m.named_parameters()) and m.positions == "rotary"
    toks = tokens(2, 10)
    with torch.no_grad():
        torch.testing.assert_close(r("model_forward", m, [toks]), reference_forward(m.eval(), toks, 500.0),
                                   atol=1e-5, rtol=1e-5)


def test_learned_positions_are_unchanged(r):
    m = r("model_build", GPT)
    assert m.positions == "learned" and dict(m.named_parameters())["wpe.weight"].shape == (16, 16)
    toks = tokens(1, 6)
    with torch.no_grad():
        x = m.eval().wte(toks) + m.wpe(torch.arange(6))
        for blk in m.blocks:
            x = blk(x)
        torch.testing.assert_close(m(toks), m.head(m.ln_f(x)))


def test_a_rotary_model_trains(r):
    m = r("model_build", ROT)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    seq = torch.arange(12).repeat(4, 1) % 6  # a periodic sequence: learnable only from positions/context
    first = None
    for _ in range(40):
        logits = m(seq[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 32), seq[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.2 * first


def test_rotary_cached_decoding_is_the_forward(r):
    m = r("model_build", ROT)
    prompt = tokens(2, 5)
    out = r("generate", m, prompt, 8)
    assert torch.equal(out, greedy(m, prompt, 8))


def test_rotary_spec_checks(r):
    f = fault("E_ARG", r, "model_build", {**ROT, "dim": 18, "heads": 2})  # head dim 9 is odd
    assert f.extra["field"] == "positions"
    assert fault("E_ARG", r, "model_build", {**GPT, "positions": "sinusoid"}).extra["field"] == "positions"
    assert fault("E_ARG", r, "model_build", {**ROT, "rope_base": 0.5}).extra["field"] == "rope_base"
    fault("E_SHAPE", r, "model_forward", r("model_build", ROT), [tokens(1, 17)])  # forward keeps the context


def test_a_rotary_gpt_learns_to_copy():
    """Rotary attention carries a token across the context: two blocks learn to predict the
    second half of [a, a] (a random tokens) from the first, which no statistics of the tokens
    can. The copy sits at one fixed distance here, so a head that attends by relative
    position alone does it; copying at any distance by content (an induction head) forms far
    more slowly: on random tokens with a span repeated at a random offset, the same two
    blocks learnt nothing in 3,000 steps of 16 sequences of 64 tokens (docs/kv-cache.md,
    "The decoder": what made the code GPT copy)."""
    from liaison_runtime.models.gpt import GPT as Decoder

    torch.manual_seed(0)
    m = Decoder(vocab=32, context=48, dim=32, layers=2, heads=2, mlp_ratio=2, dropout=0.0, positions="rotary")
    opt = torch.optim.Adam(m.parameters(), 1e-2)

    def halves(a):  # (B, 24) -> losses of the first and the second half's predictions
        x = torch.cat([a, a], 1)
        nll = F.cross_entropy(m(x[:, :-1]).transpose(1, 2), x[:, 1:], reduction="none")  # (B, 47)
        return nll[:, :23].mean(), nll[:, 24:].mean()  # 23 predicts 24 (the copy's first token): left out

    for _ in range(150):
        _, second = halves(torch.randint(0, 32, (32, 24)))
        opt.zero_grad()
        second.backward()
        opt.step()
    with torch.no_grad():
        first, second = halves(torch.randint(0, 32, (64, 24)))
    assert second < 0.1 < math.log(32) - 0.5 < first  # copied, while fresh random tokens stay unpredictable
