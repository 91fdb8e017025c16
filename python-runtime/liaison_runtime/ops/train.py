"""Training steps and decoding: backward, zero_grad, accuracy; generation and held-out
evaluation through the GPT's KV cache and its policy hook."""

from __future__ import annotations

import math

import torch

from ..errors import RuntimeFault
from ..models import GPT
from ..models.kvcache import generate as _generate
from ..models.kvcache import teacher_forced_nll
from .checks import need_float
from .model import model_of, params_of
from .registry import FLOATS, P, op


@op("backward", P("loss", "tensor"), outputs=0)
def backward(ctx, loss):
    """backward(loss): accumulate d loss / d parameter into the parameters' grads (loss 0-d)."""
    need_float("backward", "loss", loss)
    if loss.dim() != 0:
        raise RuntimeFault("E_SHAPE", f"backward: 'loss' must be 0-d (reduce it with mean or sum), got shape "
                           f"{list(loss.shape)}", param="loss")
    if not loss.requires_grad:
        raise RuntimeFault("E_ARG", "backward: 'loss' does not depend on any parameter through autograd: was it "
                           "computed with model_forward(..., train=false), or from detached tensors?", param="loss")
    loss.backward()
    return ()


@op("zero_grad", P("model", "object"), outputs=0)
def zero_grad(ctx, model):
    """zero_grad(model): drop every parameter's gradient (set to None; model_grad then reads zeros)."""
    for p in params_of(model_of("zero_grad", model)).values():  # Module.zero_grad walks the tree each step
        p.grad = None
    return ()


@op("check_finite", P("x", "tensor"), P("step", "tensor"), P("halt", "tensor"), P("what", "str", "loss"),
    outputs=0)
def check_finite(ctx, x, step, halt, what):
    """check_finite(x, step, halt, what='loss'): E_NONFINITE naming the step when x holds a NaN or an inf.

    `step` is a 0-d tensor (the step number). `halt` (0-d, 0 at first) records the first failing step, and
    every later call fails too, naming it: steps already sent behind a failed one change nothing. Placed in a
    training step before the optimizer update, the update of a failed step never runs. One
    isfinite().all() read per call."""
    if halt.dim() != 0:
        raise RuntimeFault("E_SHAPE", f"check_finite: 'halt' must be 0-d, got shape {list(halt.shape)}", param="halt")
    if x.device.type == "cpu" and halt.device.type == "cpu":
        # on the CPU a read is no sync: a loss is one number, read as such (about a quarter of
        # the cost of the isfinite/all/eq/logical_and chain below, which runs on every step)
        one = x.numel() == 1 and not x.is_complex()
        ok = (math.isfinite(x.item()) if one else bool(torch.isfinite(x).all())) and not halt.item()
    else:
        # one read of one flag per call (a device sync on a GPU): the bad case and the halted one together
        ok = bool(torch.isfinite(x).all().logical_and(halt.eq(0)))
    if not ok:
        at = int(step.item())
        first = int(halt.item())
        if first:
            raise RuntimeFault("E_NONFINITE", f"check_finite: step {at} was not run: the {what} of step {first} was "
                               "not finite, and the steps after it are stopped", param="x")
        halt.fill_(at)
        kind = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise RuntimeFault("E_NONFINITE", f"check_finite: the {what} is {kind} at step {at}", param="x")
    return ()


@op("accuracy", P("logits", "tensor"), P("target", "tensor"))
def accuracy(ctx, logits, target):
    """accuracy(logits, target): the fraction (0-d f32) of rows whose argmax over the last dim equals target."""
    need_float("accuracy", "logits", logits)
    if logits.dim() < 1 or list(target.shape) != list(logits.shape[:-1]):
        raise RuntimeFault("E_SHAPE", f"accuracy: 'target' has shape {list(target.shape)}, expected "
                           f"{list(logits.shape[:-1])} for 'logits' {list(logits.shape)}", param="target")
    if target.dtype in FLOATS or target.dtype == torch.bool:
        raise RuntimeFault("E_DTYPE", f"accuracy: 'target' must hold class indices (an integer tensor), got "
                           f"{target.dtype}", param="target")
    if target.numel() == 0:
        raise RuntimeFault("E_SHAPE", "accuracy: 'target' is empty", param="target")
    return (logits.argmax(-1) == target.long()).float().mean()


def _gpt(name: str, model) -> GPT:
    m = model_of(name, model)
    if isinstance(m, GPT):
        return m
    raise RuntimeFault("E_ARG", f"{name}: needs a model built from a 'gpt' spec (it decodes through a KV cache), "
                       f"got a {type(m).__name__}", param="model")


def _decoding(m: GPT, fn):
    """Run fn under no_grad in eval mode, then put the model back in the mode it was in."""
    was = m.training
    m.eval()
    try:
        with torch.no_grad():
            return fn()
    finally:
        m.train(was)


# The most tokens a row may reach while decoding past the context (rotary models): the full
# cache preallocates every one of them, so a client's `steps` must not size memory unbounded.
MAX_DECODE_TOKENS = 1 << 20


def _past_context(m: GPT, op: str, n: int, what: str, param: str) -> None:
    """Learned positions end at the context; rotary ones decode on, up to MAX_DECODE_TOKENS."""
    if n > m.context and m.positions == "learned":
        raise RuntimeFault("E_SHAPE", f"{op}: {what} is {n} tokens, past the model's context of {m.context}; a "
                           "model with learned positions has no position beyond it (build it with positions: "
                           "'rotary' to decode past the context)", param=param)
    if n > MAX_DECODE_TOKENS:
        raise RuntimeFault("E_LIMIT", f"{op}: {what} is {n} tokens, more than the {MAX_DECODE_TOKENS} a decoding "
                           "may reach (the full cache allocates a slot for each)", param=param)


def _lengths(lengths, prompt: torch.Tensor) -> list[int] | None:
    """The ragged prompt lengths (B,) -> a host list (one read, before decoding starts)."""
    if lengths is None:
        return None
    b, t0 = prompt.shape
    if lengths.dtype not in (torch.int64, torch.int32) or list(lengths.shape) != [b]:
        raise RuntimeFault("E_DTYPE" if list(lengths.shape) == [b] else "E_SHAPE",
                           f"generate: 'lengths' must be ({b},) integers, one per prompt row, got "
                           f"{lengths.dtype} of shape {list(lengths.shape)}", param="lengths")
    out = lengths.tolist()
    if not all(1 <= n <= t0 for n in out):
        raise RuntimeFault("E_ARG", f"generate: 'lengths' must be in [1, {t0}] (the prompt is left-padded to "
                           f"{t0}), got {out}", param="lengths")
    return out


@op("generate", P("model", "object"), P("prompt", "tensor"), P("steps", "int"), P("temperature", "float", 0.0),
    P("seed", "seed?", None), P("lengths", "tensor?", None))
def generate(ctx, model, prompt, steps, temperature, seed, lengths):
    """generate(model, prompt, steps, temperature=0, seed=None, lengths=None): (B, T0) -> (B, T0 + steps).

    Decoded one at a time through the KV cache and its hook; temperature 0 is greedy. `lengths` (B,)
    makes the prompts ragged: row b is left-padded, its tokens are prompt[b, T0 - lengths[b]:] and its
    first one is at position 0; the padding is returned as given. A rotary model decodes past its context."""
    m = _gpt("generate", model)
    m.check_tokens("generate", "prompt", prompt)
    if steps < 0:
        raise RuntimeFault("E_ARG", f"generate: 'steps' must be >= 0, got {steps}", param="steps")
    if temperature < 0:
        raise RuntimeFault("E_ARG", f"generate: 'temperature' must be >= 0, got {temperature}", param="temperature")
    _past_context(m, "generate", prompt.shape[1] + steps, f"prompt length {prompt.shape[1]} + steps {steps}",
                  "steps")
    rows = _lengths(lengths, prompt)
    g = ctx.generator(seed) if temperature > 0 else None
    return _decoding(m, lambda: _generate(m, prompt.long(), steps, temperature, g, rows))


@op("kv_eval", P("model", "object"), P("tokens", "tensor"), P("prefill", "int"))
def kv_eval(ctx, model, tokens, prefill):
    """kv_eval(model, tokens, prefill): nll (B, T - prefill) of tokens[:, prefill:] through the KV cache.

    Teacher forcing, one token at a time through the cache and its hook; perplexity is exp(mean)."""
    m = _gpt("kv_eval", model)
    m.check_tokens("kv_eval", "tokens", tokens, context=False)
    t = tokens.shape[1]
    _past_context(m, "kv_eval", t, "'tokens'", "tokens")
    if not 1 <= prefill < t or prefill > m.context:
        raise RuntimeFault("E_ARG", f"kv_eval: 'prefill' must be in [1, {min(t - 1, m.context)}] for {t} tokens (a "
                           f"prefill is one forward: at most the context of {m.context}), got {prefill}",
                           param="prefill")
    return _decoding(m, lambda: teacher_forced_nll(m, tokens.long(), prefill))


@op("kv_cache_size", P("model", "object"))
def kv_cache_size(ctx, model):
    """kv_cache_size(model): i64 (layers, 3) per attention layer, after the last generate/kv_eval: the tokens
    its cache held (the most any batch row held), the bytes it held (every buffer at its allocated size:
    keys and values incl. quantization scales and minima, positions, ranks, policy state), and the bytes of
    the attention rows it kept for its policy's next run (working memory beside the cache; 0 with no policy)."""
    m = _gpt("kv_cache_size", model)
    if m.cache_sizes is None:
        raise RuntimeFault("E_ARG", "kv_cache_size: no generate or kv_eval has run on this model yet", param="model")
    return torch.tensor(m.cache_sizes, dtype=torch.int64, device=ctx.device).reshape(-1, 3)


@op("attention_weights", P("model", "object"), P("tokens", "tensor"))
def attention_weights(ctx, model, tokens):
    """attention_weights(model, tokens): f32 (layers, B, H, T, T) every attention layer's causal softmax
    weights in a plain forward (eval mode, no grad) of (B, T) tokens, T <= context."""
    m = _gpt("attention_weights", model)
    m.check_tokens("attention_weights", "tokens", tokens)
    return _decoding(m, lambda: m.attention_weights(tokens.long()))
