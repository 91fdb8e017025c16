"""Cached decoding with KV hooks, and MoE layers with router hooks, through the op binding.

The hooks here are plain Python functions `hook(list[Tensor]) -> list[Tensor]`, the same
calling convention the runtime's traced programs have."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from runner import Runner, fault, greedy, one_thread  # noqa: F401 (autouse: this module runs torch on one thread)

GPT = {"kind": "gpt", "vocab": 32, "context": 24, "dim": 16, "layers": 2, "heads": 2, "seed": 0}
MOE = {**GPT, "moe": {"experts": 4, "hidden": 24, "params": {"gate": {"shape": [16, 4], "init": "normal",
                                                                      "std": 0.5}}}}


@pytest.fixture()
def r():
    return Runner()


@pytest.fixture()
def gpt(r):
    return r("model_build", GPT)


def tokens(b=2, t=20, seed=0):
    return torch.randint(0, 32, (b, t), generator=torch.Generator().manual_seed(seed))


def window(inputs):
    """Sliding window: the newest tokens score highest."""
    return [inputs[3].float()]


def full_nll(m, toks, prefill):
    with torch.no_grad():
        logits = m.eval()(toks)
    return F.cross_entropy(logits[:, prefill - 1:-1].transpose(1, 2), toks[:, prefill:], reduction="none")


def test_generate_is_greedy_and_matches_the_full_forward(r, gpt):
    prompt = tokens(2, 5)
    out = r("generate", gpt, prompt, 8)
    assert out.shape == (2, 13) and out.dtype == torch.int64 and torch.equal(out[:, :5], prompt)
    assert torch.equal(out, r("generate", gpt, prompt, 8))
    assert torch.equal(out, greedy(gpt, prompt, 8))  # greedy decoding without a cache
    assert gpt.training  # the mode the model was in is restored
    assert r("kv_cache_size", gpt)[:, 0].tolist() == [12, 12]


def test_sampling_is_seeded(r, gpt):
    prompt = tokens(3, 4)
    a = r("generate", gpt, prompt, 10, temperature=1.5, seed=7)
    assert torch.equal(a, r("generate", gpt, prompt, 10, temperature=1.5, seed=7))
    assert not torch.equal(a, r("generate", gpt, prompt, 10, temperature=1.5, seed=8))


def test_generate_and_kv_eval_checks(r, gpt):
    assert fault("E_SHAPE", r, "generate", gpt, tokens(1, 20), 5).extra["param"] == "steps"
    fault("E_ARG", r, "generate", gpt, tokens(1, 4), -1)
    fault("E_ARG", r, "generate", gpt, tokens(1, 4), 2, temperature=-1.0)
    fault("E_DTYPE", r, "generate", gpt, tokens(1, 4).float(), 2)
    fault("E_ARG", r, "generate", r("model_build", {"kind": "mlp", "sizes": [2, 2]}), tokens(1, 4), 2)
    assert fault("E_ARG", r, "kv_eval", gpt, tokens(1, 8), 8).extra["param"] == "prefill"
    fault("E_ARG", r, "kv_eval", gpt, tokens(1, 8), 0)
    fault("E_ARG", r, "kv_cache_size", gpt)  # nothing decoded yet


def test_kv_eval_without_a_hook_is_the_full_model(r, gpt):
    toks = tokens()
    nll = r("kv_eval", gpt, toks, 6)
    assert nll.shape == (2, 14) and nll.dtype == torch.float32
    torch.testing.assert_close(nll, full_nll(gpt, toks, 6), atol=1e-4, rtol=1e-4)
    assert r("kv_cache_size", gpt)[:, 0].tolist() == [19, 19]


def test_window_hook_keeps_the_budget(r, gpt):
    toks = tokens()
    full = r("kv_eval", gpt, toks, 6)
    r("model_hook", gpt, "kv", r.obj(window), {"budget": 64})
    torch.testing.assert_close(r("kv_eval", gpt, toks, 6), full)  # budget >= length: nothing evicted
    r("model_hook", gpt, "kv", r.obj(window), {"budget": 4})
    small = r("kv_eval", gpt, toks, 6)
    assert r("kv_cache_size", gpt)[:, 0].tolist() == [4, 4]
    assert not torch.allclose(small, full, atol=1e-4)
    torch.testing.assert_close(small[:, 0], full[:, 0])  # the first prediction is made before any eviction
    r("generate", gpt, tokens(1, 6), 10)
    assert r("kv_cache_size", gpt)[:, 0].tolist() == [4, 4]
    r("model_hook", gpt, "kv", None)
    torch.testing.assert_close(r("kv_eval", gpt, toks, 6), full)


def test_hook_on_some_layers(r, gpt):
    r("model_hook", gpt, "kv", r.obj(window), {"budget": 3, "layers": [1]})
    r("kv_eval", gpt, tokens(), 6)
    assert r("kv_cache_size", gpt)[:, 0].tolist() == [19, 3]
    r("model_hook", gpt, "kv", None, {"layers": [1]})
    r("kv_eval", gpt, tokens(), 6)
    assert r("kv_cache_size", gpt)[:, 0].tolist() == [19, 19]


def test_hook_inputs_and_per_token_state(r, gpt):
    seen = []

    def counter(inputs):
        keys, values, attn, pos, calls = inputs
        seen.append((keys.shape, values.shape, attn.clone(), pos.clone(), calls.clone()))
        return [pos.float(), calls + 1]  # sliding window; state: calls since the token arrived

    prompt = tokens(2, 5)
    r("model_hook", gpt, "kv", r.obj(counter), {"budget": 6, "state": [-5.0], "layers": [0]})
    r("generate", gpt, prompt, 6)
    assert len(seen) == 6  # prefill, then 5 fed tokens (the last generated one is never fed)
    for k, (kshape, vshape, attn, pos, calls) in enumerate(seen):
        c, rows = pos.shape[2], (5 if k == 0 else 1)
        assert kshape == vshape == (2, 2, c, 8) and pos.shape == calls.shape == (2, 2, c)
        assert attn.shape == (2, 2, rows, c)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 2, rows))
        newest = 4 + k  # absolute position of the token this call is for
        assert c == (5 if k == 0 else 6) and (pos >= 0).all()  # the budget: 6 slots, one freed before each write
        assert int(pos.max()) == newest and calls.dtype == torch.float32
        # a token that arrived at newest position p has been seen (newest - max(p, 4)) times before
        want = -5.0 + (newest - pos.clamp(min=4)).float()
        assert torch.equal(calls, want), (k, calls, want)
        # positions are absolute; the window keeps the latest (in whatever slots they landed)
        assert torch.equal(pos[0, 0].sort().values, torch.arange(newest - c + 1, newest + 1))
    # at prefill, query row i (position i) sees positions 0..i only
    assert torch.equal(seen[0][2][0, 0] > 0, torch.ones(5, 5, dtype=torch.bool).tril())


def test_bad_hooks_and_options(r, gpt):
    x = tokens(1, 6)
    r("model_hook", gpt, "kv", r.obj(lambda i: [i[3].float(), i[3].float()]), {"budget": 4})
    assert "1 + its 0 declared state" in fault("E_ARG", r, "kv_eval", gpt, x, 3).message
    r("model_hook", gpt, "kv", r.obj(lambda i: [i[3][:, :1].float()]), {"budget": 4})
    fault("E_SHAPE", r, "kv_eval", gpt, x, 3)
    hook = r.obj(window)
    assert fault("E_ARG", r, "model_hook", gpt, "kv", hook, {}).extra["field"] == "budget"
    assert fault("E_ARG", r, "model_hook", gpt, "kv", hook, {"budget": 0}).extra["field"] == "budget"
    assert fault("E_ARG", r, "model_hook", gpt, "kv", hook, {"budget": 2, "state": ["a"]}).extra["field"] == "state"
    assert fault("E_ARG", r, "model_hook", gpt, "kv", hook, {"budget": 2, "layers": [2]}).extra["field"] == "layers"
    assert fault("E_ARG", r, "model_hook", gpt, "kv", hook, {"budget": 2, "size": 1}).extra["field"] == "size"
    assert fault("E_ARG", r, "model_hook", gpt, "kv", torch.ones(2), {"budget": 2}).extra["param"] == "hook"
    fault("E_ARG", r, "model_hook", gpt, "attention", hook, {"budget": 2})
    fault("E_ARG", r, "model_hook", gpt, "router", hook)  # no MoE layer
    fault("E_ARG", r, "model_hook", r("model_build", {"kind": "mlp", "sizes": [2, 2]}), "kv", hook, {"budget": 2})


# ---- MoE ----

def top1(inputs):
    """Switch-style top-1 router with its load-balancing loss."""
    x, gate = inputs
    probs = torch.softmax(x @ gate, -1)  # (N, E)
    top = probs.argmax(-1, keepdim=True)  # (N, 1)
    weights = torch.zeros_like(probs).scatter(1, top, probs.gather(1, top))
    frac = F.one_hot(top[:, 0], probs.shape[1]).float().mean(0)  # tokens per expert
    return [weights, probs.shape[1] * (frac * probs.mean(0)).sum()]


def test_moe_needs_a_router(r):
    m = r("model_build", MOE)
    assert "blocks.0.moe.router.gate" in dict(m.named_parameters())
    assert m.describe()["hooks"] == {"kv": 2, "router": 2}
    f = fault("E_ARG", r, "model_forward", m, [tokens(1, 4)])
    assert "model_hook" in f.message and "blocks.0.moe" in f.message


def test_moe_routes_and_trains_router_and_experts(r):
    m = r("model_build", MOE)
    r("model_hook", m, "router", r.obj(top1))
    toks = tokens(4, 12)
    logits = r("model_forward", m, [toks])
    assert logits.shape == (4, 12, 32)
    aux = r("model_aux_loss", m)
    assert aux.dim() == 0 and aux.requires_grad and float(aux.detach()) > 0
    loss = r("add", r("cross_entropy", logits.reshape(-1, 32), toks.reshape(-1)), r("mul", aux, 0.01))
    r("backward", loss)
    assert r("model_grad", m, "blocks.0.moe.router.gate").abs().sum() > 0
    used = [e for e in range(4) if r("model_grad", m, f"blocks.1.moe.experts.{e}.fc.weight").abs().sum() > 0]
    assert used  # the experts that got tokens learn
    r("zero_grad", m)
    r("model_forward", m, [toks])
    r("backward", r("model_aux_loss", m))  # the aux loss alone reaches the router
    assert r("model_grad", m, "blocks.1.moe.router.gate").abs().sum() > 0


def test_moe_dispatch_equals_the_dense_sum(r):
    m = r("model_build", MOE)
    r("model_hook", m, "router", r.obj(top1), {"layers": [0]})
    moe = m.blocks[0].moe
    x = torch.randn(3, 5, 16)
    weights, _ = top1([x.reshape(-1, 16), moe.router.gate])
    dense = sum(weights[:, e:e + 1] * moe.experts[e](x.reshape(-1, 16)) for e in range(4))
    torch.testing.assert_close(moe(x), dense.reshape(3, 5, 16))
    assert m.blocks[1].moe.hook is None  # only layer 0 got it


def test_moe_every_and_decoding(r):
    m = r("model_build", {**MOE, "moe": {**MOE["moe"], "every": 2}})
    assert "moe" not in m.blocks[0]._modules and "moe" in m.blocks[1]._modules
    assert float(r("model_aux_loss", r("model_build", GPT))) == 0.0
    r("model_hook", m, "router", r.obj(top1))
    prompt = tokens(2, 4)
    out = r("generate", m, prompt, 5)
    assert torch.equal(out, greedy(m, prompt, 5))


def test_bad_router_output(r):
    m = r("model_build", MOE)
    r("model_hook", m, "router", r.obj(lambda i: [torch.ones(i[0].shape[0], 3), torch.zeros(())]))
    fault("E_SHAPE", r, "model_forward", m, [tokens(1, 4)])
    r("model_hook", m, "router", r.obj(lambda i: [torch.ones(i[0].shape[0], 4)]))
    fault("E_ARG", r, "model_forward", m, [tokens(1, 4)])
    assert fault("E_ARG", r, "model_hook", m, "router", r.obj(top1), {"layers": [5]}).extra["field"] == "layers"


def test_a_program_that_does_not_fit_the_hook_point_is_refused(r, gpt):
    from liaison_runtime.protocol import Handle

    one = r("program_define", "one-input", [{"op": "relu", "out": [Handle(9002)], "args": [Handle(9001)]}],
            [Handle(9001)], [Handle(9002)])
    f = fault("E_ARG", r, "model_hook", gpt, "kv", one, {"budget": 4})
    assert "kv hook point passes 4" in f.message and f.extra["param"] == "hook"
