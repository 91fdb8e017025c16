"""The slot-buffer KV cache (models/kvcache.py, kvstore.py): what it keeps, what it equals,
what it holds in memory. Hooks are plain Python functions with the programs' calling convention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from runner import Runner, fault, one_thread  # noqa: F401 (autouse: this module runs torch on one thread)

from liaison_runtime.models import kvcache, kvstore

GPT = {"kind": "gpt", "vocab": 32, "context": 24, "dim": 16, "layers": 2, "heads": 2, "seed": 0}
ROT = {**GPT, "positions": "rotary"}


@pytest.fixture()
def r():
    return Runner()


def tokens(b=2, t=20, seed=0, vocab=32):
    return torch.randint(0, vocab, (b, t), generator=torch.Generator().manual_seed(seed))


def full_nll(m, toks, prefill):
    with torch.no_grad():
        logits = m.eval()(toks)
    return F.cross_entropy(logits[:, prefill - 1:-1].transpose(1, 2), toks[:, prefill:], reduction="none")


def known(pos: torch.Tensor) -> torch.Tensor:
    """Scores fixed in advance per (head, position): a scrambled order, different per head."""
    h = torch.arange(pos.shape[1])[None, :, None]
    return ((pos * 7 + h * 5) % 13).float() + pos.float() * 1e-3


def recorder(seen: list, score=known):
    def hook(inputs):
        keys, values, attn, pos = inputs[:4]
        seen.append({"pos": pos.clone(), "attn": attn.clone(), "kptr": keys.data_ptr(), "pptr": pos.data_ptr(),
                     "keys": keys.clone()})
        return [score(pos)]
    return hook


def simulate(t0: int, fed: int, budget: int, m: int, h: int) -> list[list[set]]:
    """The contract's eviction with `known` scores: per call, per head, the positions held."""
    out = []
    held = [set(range(t0)) for _ in range(h)]
    for hh in range(h):
        if len(held[hh]) > budget:
            p = torch.tensor(sorted(held[hh]))
            s = known(p[None, None].expand(1, h, -1))[0, hh]
            held[hh] = set(p[s.topk(budget).indices].tolist())
    out.append([set(x) for x in held])
    for step in range(fed):
        for hh in range(h):
            if len(held[hh]) == budget:
                p = torch.tensor(sorted(held[hh]))
                s = known(p[None, None].expand(1, h, -1))[0, hh]
                held[hh] -= set(p[s.topk(m, largest=False).indices].tolist())
            held[hh].add(t0 + step)
        out.append([set(x) for x in held])
    return out


def fire_steps(t0: int, fed: int, budget: int | None, m: int, rows: int) -> list[int]:
    """The firing rule, written out: the decoding steps at which the hook fires (not the prefill's)."""
    held, buffered, out = min(t0, budget or t0), 0, []
    if budget and held >= budget and fed:
        held -= m
    for step in range(fed):
        held, buffered = held + 1, buffered + 1
        evicting = budget is not None and step + 1 < fed and held >= budget
        if evicting or buffered == rows:
            out.append(step)
            buffered = 0
        if evicting:
            held -= m
    return out


def check_rows(call: dict) -> None:
    """Each buffered row i is the query at p_max - R + 1 + i: it paid attention to the slots at
    positions <= its own (all of them > 0: a softmax), 0 to the rest and to empty slots."""
    attn, pos = call["attn"][0], call["pos"][0]  # (H, R, w), (H, w)
    r = attn.shape[1]
    query = pos.amax(-1, keepdim=True)[:, None] - r + 1 + torch.arange(r)[None, :, None]  # (H, R, 1)
    saw = (pos[:, None] >= 0) & (pos[:, None] <= query)
    assert (attn[saw] > 0).all() and (attn[~saw] == 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:2]))


@pytest.mark.parametrize("evict", [1, 3])
def test_eviction_keeps_exactly_the_top_scoring(r, evict):
    m = r("model_build", GPT)
    seen = []
    r("model_hook", m, "kv", r.obj(recorder(seen)), {"budget": 6, "evict": evict, "layers": [1]})
    r("kv_eval", m, tokens(1, 20), 9)
    want = simulate(9, 10, 6, evict, 2)
    steps = fire_steps(9, 10, 6, evict, evict)
    assert steps == (list(range(10)) if evict == 1 else [2, 5, 8])  # 3 left after the prefill: full every 3 steps
    assert [int(c["pos"].max()) - 9 for c in seen[1:]] == steps and len(seen) == 1 + len(steps)
    for call, step in zip(seen[1:], steps, strict=True):
        pos = call["pos"][0]
        for hh in range(2):
            got = set(pos[hh][pos[hh] >= 0].tolist())
            assert got == want[step + 1][hh], (step, hh, got, want[step + 1][hh])
            assert len(got) <= 6  # never past the budget, attention included
        check_rows(call)
    assert r("kv_cache_size", m)[:, 0].tolist() == [19, len(want[-1][0])]


def test_bulk_eviction_frees_m_slots_at_once(r):
    m = r("model_build", GPT)
    seen = []
    r("model_hook", m, "kv", r.obj(recorder(seen, lambda p: p.float())), {"budget": 8, "evict": 4, "layers": [0]})
    r("kv_eval", m, tokens(1, 24), 8)
    # full at 8 (prefill, then every 4th step: 4 freed, refilled one a step); each fire sees the rows since the last
    assert fire_steps(8, 15, 8, 4, 4) == [3, 7, 11] and [int(c["pos"].max()) - 8 for c in seen[1:]] == [3, 7, 11]
    assert [int((c["pos"][0, 0] >= 0).sum()) for c in seen] == [8] * 4
    assert [c["attn"].shape[2] for c in seen] == [8, 4, 4, 4]
    for call in seen[1:]:
        check_rows(call)


def decayed_count(seen: list, decay=0.5, recent=2):
    """Scissorhands in plain torch: count <- decay^R * count + sum_i decay^age_i [row i paid slot j
    less than 1/T, T the tokens it saw], exact over any R rows; scores -count, the `recent`
    newest protected. (decay 0.5: the counts are exact binary fractions either way.)"""
    def hook(inputs):
        attn, pos, count = inputs[2], inputs[3], inputs[4]
        r = attn.shape[2]
        top = pos.amax(-1, keepdim=True)  # (B, H, 1)
        ages = torch.arange(r - 1, -1, -1)[:, None]  # (R, 1): row i is the query at top - age_i
        saw = ((top - pos)[:, :, None] >= ages) & (pos >= 0)[:, :, None]  # (B, H, R, C)
        low = (attn * saw.sum(-1, keepdim=True) < 1) & saw
        new = count * decay ** r + (low * decay ** ages).sum(2)
        seen.append({"pos": pos.clone(), "r": r, "count": new.clone()})
        return [torch.where(pos > top - recent, float("inf"), -new), new]
    return hook


@pytest.mark.parametrize(("opts", "fires"), [
    ({"budget": 6, "evict": 3}, list(range(0, 22, 3))),  # full after 1 step, then every 3 (not at the last)
    ({"budget": 5, "evict": 1}, list(range(24))),  # evict 1: the scores are needed at every step
    ({"budget": None}, list(range(3, 24, 4))),  # never evicts: every ROWS steps
])
def test_lazy_firing_equals_firing_every_step(r, monkeypatch, opts, fires):
    """The hook given the rows of every step since its last fire keeps what per-step firing keeps:
    the same tokens at every fire, the same counts, the same losses; it fires as the rule says."""
    monkeypatch.setattr(kvcache, "ROWS", 4)  # budget null: a fire every 4 steps
    t0, t = 5, 30
    runs = {}
    for every in (True, False):
        monkeypatch.setattr(kvcache.Decoder, "_fire_every_step", every)
        m = r("model_build", ROT)  # rotary: decodes past its context of 24
        seen = [[], []]
        for layer in (0, 1):
            r("model_hook", m, "kv", r.obj(decayed_count(seen[layer])), {**opts, "state": [0.0], "layers": [layer]})
        runs[every] = (r("kv_eval", m, tokens(2, t, seed=3), t0), seen)
    (nll_every, every), (nll_lazy, lazy) = runs[True], runs[False]
    assert torch.equal(nll_lazy, nll_every)
    steps = fire_steps(t0, t - t0 - 1, opts["budget"], opts.get("evict", 1), min(opts.get("evict", 4), 4))
    assert steps == fires
    for layer in (0, 1):
        assert len(every[layer]) == 1 + t - t0 - 1
        assert [int(c["pos"].max()) - t0 for c in lazy[layer][1:]] == steps
        for call in lazy[layer]:
            ref = every[layer][int(call["pos"].max()) - t0 + 1]  # the per-step fire of the same step
            assert torch.equal(call["pos"], ref["pos"])
            held = call["pos"] >= 0
            torch.testing.assert_close(call["count"][held], ref["count"][held], atol=0, rtol=0)
        assert sum(c["r"] for c in lazy[layer][1:]) == 1 + steps[-1]  # every row once, none twice


def test_a_hook_returning_the_wrong_shape_is_refused_naming_its_layer(r):
    m = r("model_build", GPT)
    # sums over the slots (-1) instead of the rows (2): (B, H, R), the right shape only at the prefill, where R = C
    r("model_hook", m, "kv", r.obj(lambda i: [i[2].sum(-1)]), {"budget": 6, "evict": 2, "layers": [1]})
    f = fault("E_SHAPE", r, "kv_eval", m, tokens(1, 16), 6)
    assert "the kv hook of layer 1 returned scores of shape [1, 2, 2], expected [1, 2, 6]" in f.message, f.message


def test_budget_at_least_the_length_is_the_full_forward(r):
    for spec in (GPT, ROT):
        m = r("model_build", spec)
        toks = tokens(2, 20)
        want = full_nll(m, toks, 5)
        torch.testing.assert_close(r("kv_eval", m, toks, 5), want, atol=1e-5, rtol=1e-5)
        r("model_hook", m, "kv", r.obj(lambda i: [i[3].float()]), {"budget": 32})
        torch.testing.assert_close(r("kv_eval", m, toks, 5), want, atol=1e-5, rtol=1e-5)
        r("model_hook", m, "kv", r.obj(lambda i: [i[3].float()]), {"budget": None})
        torch.testing.assert_close(r("kv_eval", m, toks, 5), want, atol=1e-5, rtol=1e-5)


def test_storage_is_allocated_once(r):
    m = r("model_build", GPT)
    seen = []
    r("model_hook", m, "kv", r.obj(recorder(seen, lambda p: p.float())), {"budget": 5, "layers": [0]})
    r("generate", m, tokens(2, 4), 12)
    steps = seen[1:]
    assert len({c["kptr"] for c in steps}) == 1 and len({c["pptr"] for c in steps}) == 1
    assert max(c["pos"].shape[2] for c in steps) == 5
    # empty slots hold zeros
    first = seen[1]
    assert (first["keys"][first["pos"] < 0] == 0).all()


def bytes_of(b, h, cap, d, bits, group, state=0, ranked=False):
    kv = b * h * cap * d * 4 if bits == 32 else b * h * cap * (d * bits // 8 + 2 * 2 * (d // group))
    return 2 * kv + b * h * cap * 8 * (2 if ranked else 1) + state * b * h * cap * 4


def test_bytes_held(r):
    m = r("model_build", ROT)  # head dim 8
    r("generate", m, tokens(3, 5), 7)
    assert r("kv_cache_size", m).tolist() == [[11, bytes_of(3, 2, 12, 8, 32, 8), 0]] * 2  # T0 + steps slots, no rows
    for bits, group in ((8, 4), (4, 8), (4, 2)):
        r("model_hook", m, "kv", r.obj(lambda i: [i[3].float(), i[4]]),
          {"budget": 6, "bits": bits, "group": group, "state": [0.0], "layers": [1]})
        r("generate", m, tokens(3, 5), 7)
        got = r("kv_cache_size", m).tolist()
        # layer 1's hook also keeps min(evict, 64) = 1 attention row of its 6 slots, f16 beside
        # quantized entries, for its next fire
        want = [[11, bytes_of(3, 2, 12, 8, 32, 8), 0], [6, bytes_of(3, 2, 6, 8, bits, group, 1), 3 * 2 * 1 * 6 * 2]]
        assert got == want, (bits, got)
    # evict 32 would buffer 32 rows; at 4 bits a slot costs 28 bytes (entries 2 * 8, position 8,
    # state 4), so 1/8 of it is under one f16 row: the floor of 4 rows holds
    r("model_hook", m, "kv", r.obj(lambda i: [i[3].float(), i[4]]),
      {"budget": 64, "evict": 32, "bits": 4, "group": 8, "state": [0.0], "layers": [1]})
    r("generate", m, tokens(3, 5), 7)
    assert r("kv_cache_size", m)[1, 2].item() == 3 * 2 * 4 * 12 * 2  # 4 rows of 12 slots (5 + 7: the most it will hold)
    r("model_hook", m, "kv", r.obj(lambda i: [i[3].float()]), {"budget": 6, "positions": "cache", "layers": [1]})
    r("generate", m, tokens(3, 5), 7)
    assert r("kv_cache_size", m)[1, :2].tolist() == [6, bytes_of(3, 2, 6, 8, 32, 8, ranked=True)]


def test_quantization_round_trip():
    x = torch.randn(2, 3, 5, 16) * 3
    for bits in (8, 4):
        for group in (4, 16):
            parts = kvstore.encode(x, bits, group)
            assert parts[0].dtype == torch.uint8 and parts[0].shape[-1] == (16 if bits == 8 else 8)
            assert parts[1].dtype == parts[2].dtype == torch.float16 and parts[1].shape[-1] == 16 // group
            back = kvstore.decode(parts, bits, group, torch.float32)
            g = x.reshape(2, 3, 5, 16 // group, group)
            step = (g.amax(-1) - g.amin(-1)) / (2 ** bits - 1)  # (…, G)
            err = (back - x).abs().reshape(g.shape)
            assert (err <= step[..., None] * 0.51 + 2e-3 * g.abs().amax(-1, keepdim=True)).all(), (bits, group)
            assert kvstore.nbytes(parts) == 2 * 3 * 5 * (16 * bits // 8 + 4 * (16 // group))
    assert torch.equal(kvstore.decode(kvstore.encode(x, 32, 16), 32, 16, torch.float32), x)


def trained(r, spec, steps=60):
    """A small model fit to a repeating-phrase corpus, so that its predictions mean something."""
    m = r("model_build", spec)
    g = torch.Generator().manual_seed(1)
    phrases = torch.randint(0, spec["vocab"], (6, 8), generator=g)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(steps):
        seq = phrases[torch.randint(0, 6, (8, 3), generator=g)].reshape(8, -1)[:, :spec["context"]]
        loss = F.cross_entropy(m(seq[:, :-1]).reshape(-1, spec["vocab"]), seq[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m, phrases[torch.randint(0, 6, (4, 3), generator=g)].reshape(4, -1)[:, :spec["context"]]


def test_quantized_decoding_is_close_to_f32(r):
    m, held = trained(r, GPT)
    ppl = {}
    for bits in (32, 8, 4):
        r("model_hook", m, "kv", r.obj(lambda i: [i[3].float()]), {"budget": None, "bits": bits, "group": 4})
        ppl[bits] = float(r("kv_eval", m, held, 4).mean().exp())
    assert ppl[32] < 8  # it learned something (uniform would be 32)
    assert abs(ppl[8] / ppl[32] - 1) < 0.02 and abs(ppl[4] / ppl[32] - 1) < 0.1, ppl


def test_ragged_batch_is_each_row_alone(r):
    smear = {**ROT, "smear_keys": True}  # a padded row's first token has no predecessor to smear in
    for spec, opts in ((GPT, None), (ROT, {"budget": 5, "evict": 2}), (GPT, {"budget": 4, "bits": 8}),
                       (ROT, {"budget": 4, "evict": 2, "positions": "cache"}), (smear, None),
                       (smear, {"budget": 4, "evict": 2, "positions": "cache"})):
        m, _ = trained(r, spec, 30)  # a model whose attention matters: a wrong mask changes its tokens
        if opts:
            r("model_hook", m, "kv", r.obj(lambda i: [i[3].float()]), opts)
        rows = [tokens(1, n, seed=n)[0] for n in (6, 2, 4)]
        t0 = 6
        prompt = torch.stack([torch.cat([torch.full((t0 - len(x),), 31), x]) for x in rows])
        out = r("generate", m, prompt, 7, lengths=torch.tensor([6, 2, 4]))
        assert out.shape == (3, 13) and torch.equal(out[:, :t0], prompt)
        for b, x in enumerate(rows):
            alone = r("generate", m, x[None], 7)
            assert torch.equal(out[b, t0:], alone[0, len(x):]), (spec, opts, b)


def test_smeared_keys_decode_as_the_forward(r):
    """With smeared keys a key depends on the token before it too: cached decoding keeps each
    layer's last raw key, and gives the forward's losses (learned and rotary positions)."""
    for spec in (GPT, ROT):
        m, _ = trained(r, {**spec, "smear_keys": True}, 30)
        smear = dict(m.named_parameters())["blocks.1.attn.smear"]
        assert smear.shape == (2,) and smear.abs().sum() > 0  # trained away from its even start
        toks = tokens(2, 20)
        torch.testing.assert_close(r("kv_eval", m, toks, 6), full_nll(m, toks, 6), atol=1e-5, rtol=1e-5)
        plain = r("model_build", spec)
        plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.endswith(".smear")})
        assert not torch.allclose(r("kv_eval", plain, toks, 6), full_nll(m, toks, 6), atol=1e-3)


def test_rotary_decodes_past_the_context(r):
    m = r("model_build", {**ROT, "context": 8})
    big = r("model_build", {**ROT, "context": 64})
    big.load_state_dict(m.state_dict())  # rotary weights do not depend on the context
    toks = tokens(2, 30)
    torch.testing.assert_close(r("kv_eval", m, toks, 4), full_nll(big, toks, 4), atol=1e-5, rtol=1e-5)
    assert r("generate", m, toks[:, :6], 20).shape == (2, 26)
    learned = r("model_build", {**GPT, "context": 8})
    f = fault("E_SHAPE", r, "generate", learned, toks[:, :6], 20)
    assert "positions: 'rotary'" in f.message and f.extra["param"] == "steps"
    assert "positions: 'rotary'" in fault("E_SHAPE", r, "kv_eval", learned, toks, 4).message


def sinks_window(sinks, window):
    def hook(inputs):
        pos = inputs[3]
        newest = pos.amax(-1, keepdim=True)
        keep = (pos < sinks) | (pos > newest - window)
        return [torch.where(keep, float("inf"), pos.float())]
    return hook


@pytest.mark.parametrize("evict", [1, 3])
def test_cache_positions_renumber_the_kept_tokens(r, evict):
    """One layer: a key depends only on its token and the position it is rotated to, so decoding with
    'cache' positions equals a plain forward over the kept tokens, numbered 0..n-1."""
    m = r("model_build", {**ROT, "layers": 1, "context": 64})
    r("model_hook", m, "kv", r.obj(sinks_window(2, 3)), {"budget": 9, "evict": evict, "positions": "cache"})
    toks = tokens(1, 30)
    nll = r("kv_eval", m, toks, 12)[0]

    def lowest(held, n):  # the hook's scores: sinks and the 3 newest protected, the rest by position
        newest = max(held)
        return sorted(held, key=lambda p: (p < 2 or p > newest - 3, p))[:n]

    held = set(range(12))
    held -= set(lowest(held, 3))  # the prompt: 12 tokens, budget 9
    for p in range(12, 29):
        if len(held) == 9:
            held -= set(lowest(held, evict))
        held.add(p)
        with torch.no_grad():
            want = F.cross_entropy(m.eval()(toks[:, sorted(held)])[:, -1], toks[:, p + 1])
        torch.testing.assert_close(nll[p + 1 - 12], want, atol=1e-5, rtol=1e-5)


def test_cache_positions_continue_far_past_the_context(r):
    m = r("model_build", {**ROT, "context": 8})
    r("model_hook", m, "kv", r.obj(sinks_window(2, 4)), {"budget": 6, "positions": "cache", "bits": 4})
    nll = r("kv_eval", m, tokens(2, 60), 4)
    assert nll.shape == (2, 56) and torch.isfinite(nll).all()
    assert r("kv_cache_size", m)[:, 0].tolist() == [6, 6]


def test_attention_weights(r):
    m = r("model_build", ROT)
    toks = tokens(2, 7)
    a = r("attention_weights", m, toks)
    assert a.shape == (2, 2, 2, 7, 7) and a.dtype == torch.float32
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 2, 2, 7))
    assert (a.triu(1) == 0).all()
    seen = []
    r("model_hook", m, "kv", r.obj(recorder(seen, lambda p: p.float())), {"budget": None, "layers": [1]})
    r("kv_eval", m, toks, 6)
    torch.testing.assert_close(seen[0]["attn"], a[1, :, :, :6, :6], atol=1e-6, rtol=1e-5)  # the prefill's rows


def test_history_limits_the_prefill_rows(r):
    m = r("model_build", GPT)
    seen = []
    r("model_hook", m, "kv", r.obj(recorder(seen, lambda p: p.float())), {"budget": 3, "history": 2})
    r("kv_eval", m, tokens(2, 9), 6)
    assert seen[0]["attn"].shape == (2, 2, 2, 6)
    assert (seen[0]["attn"][..., 0, 5] == 0).all() and (seen[0]["attn"][..., 1, 5] > 0).all()


def test_ragged_prefill_inputs(r):
    m = r("model_build", GPT)
    seen = []
    r("model_hook", m, "kv", r.obj(recorder(seen, lambda p: p.float())), {"budget": 8, "layers": [0]})
    r("generate", m, tokens(2, 5), 3, lengths=torch.tensor([5, 2]))
    pos, attn, keys = seen[0]["pos"], seen[0]["attn"], seen[0]["keys"]
    assert pos[1, 0].tolist() == [-1, -1, -1, 0, 1] and pos[0, 0].tolist() == [0, 1, 2, 3, 4]
    assert (attn[1, :, :3] == 0).all() and (attn[1, :, 3:, :3] == 0).all()  # pad rows and pad slots
    assert (keys[1, :, :3] == 0).all()
    fault("E_ARG", r, "generate", m, tokens(2, 5), 3, lengths=torch.tensor([5, 0]))
    fault("E_SHAPE", r, "generate", m, tokens(2, 5), 3, lengths=torch.tensor([5]))
    fault("E_DTYPE", r, "generate", m, tokens(2, 5), 3, lengths=torch.tensor([5.0, 2.0]))


def test_a_rotary_decoding_is_bounded(r):
    """Past the context nothing bounds a rotary decode but this limit: the full cache allocates a
    slot per token, so a client's `steps` must not size the runtime's memory. A prefill is one
    forward, at most the context."""
    from liaison_runtime.ops.train import MAX_DECODE_TOKENS

    m = r("model_build", ROT)
    f = fault("E_LIMIT", r, "generate", m, tokens(1, 4), MAX_DECODE_TOKENS)
    assert f.extra["param"] == "steps" and str(MAX_DECODE_TOKENS) in f.message
    fault("E_ARG", r, "kv_eval", m, tokens(1, ROT["context"] + 4), ROT["context"] + 1)


def test_malformed_options_name_the_field(r):
    m = r("model_build", GPT)  # head dim 8
    hook = r.obj(lambda i: [i[3].float()])
    for bad, field in (({"bits": 16}, "bits"), ({"group": 3}, "group"), ({"group": 0}, "group"),
                       ({"evict": 0}, "evict"), ({"evict": 5}, "evict"), ({"positions": "rank"}, "positions"),
                       ({"positions": "cache"}, "positions"), ({"history": 0}, "history"),
                       ({"budget": "4"}, "budget"), ({"evict": 1.5}, "evict"), ({"bits": 8.0}, "bits")):
        f = fault("E_ARG", r, "model_hook", m, "kv", hook, {"budget": 4, **bad})
        assert f.extra["field"] == field, (bad, f.extra)
