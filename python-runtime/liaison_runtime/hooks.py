"""Hook points: where a model calls a client's program, declared once each.

A hook point is a place inside a model's forward (or its cached decoding) where the model
calls a program the client installed with `model_hook(model, point, program, opts)`. Each
`HookPoint` here says what the point passes the program and what it expects back (the
calling convention, also in docs/protocol.md "Hook points"), where it fires, which sites
a model has, and how a program is installed there. `model_hook` takes its choices from
`POINTS` and `describe()` counts sites through it, so adding a point is one `register()`
here (and its twin in sdk/hook-points.ts).

Sites are either *layers* (indexed 0..n-1: the attention layers of a GPT, its MoE layers),
counted in a model description's `hooks` map, or *modules* (named: every nn.Linear and
nn.Conv*d), listed in its `hook_modules` map.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .errors import RuntimeFault
from .models import GPT, MoE
from .models.kvcache import KVHook
from .models.moe import FORMS, OUTPUTS
from .models.outputs import install_output_hook, remove_output_hook
from .models.weights import WEIGHT_MODULES, install_weight_hook, remove_weight_hook


@dataclass(frozen=True)
class HookPoint:
    name: str
    inputs: tuple[str, ...]  # what the program is passed, in order, with shapes
    outputs: tuple[str, ...]  # what it must return, in order, with shapes
    fires: str  # where in the model it is called
    sites: str  # 'layers' (indexed) or 'modules' (named)
    options: tuple[str, ...]  # the keys model_hook's opts may hold here
    find: Callable[[nn.Module], list]  # the model's sites: layer objects, or (name, module) pairs
    install: Callable[..., None]  # (model, hook, opts) -> None; hook None removes


POINTS: dict[str, HookPoint] = {}


def register(point: HookPoint) -> HookPoint:
    if point.name in POINTS:
        raise ValueError(f"hook point {point.name!r} is declared twice")
    POINTS[point.name] = point
    return point


def counts(m: nn.Module) -> dict:
    """The layer-indexed points' site counts: a description's `hooks` map."""
    return {p.name: len(p.find(m)) for p in POINTS.values() if p.sites == "layers"}


def module_sites(m: nn.Module) -> dict:
    """The module-named points' sites by name: a description's `hook_modules` map."""
    return {p.name: [n for n, _ in p.find(m)] for p in POINTS.values() if p.sites == "modules"}


# ---- opts, checked against the point's declared options ----

def opts_fault(msg: str, field: str) -> RuntimeFault:
    return RuntimeFault("E_ARG", f"model_hook: opts field '{field}' {msg}", param="opts", field=field)


def checked_opts(point: HookPoint, opts) -> dict:
    if opts is None:
        return {}
    if not isinstance(opts, dict):
        raise RuntimeFault("E_ARG", f"model_hook: 'opts' must be a map ({', '.join(point.options)}), got "
                           f"{type(opts).__name__}", param="opts")
    for k in opts:
        if k not in point.options:
            raise opts_fault(f"is not known at the {point.name!r} hook point; allowed: {', '.join(point.options)}",
                             str(k))
    return opts


def _layers(opts: dict, n: int, what: str) -> list[int]:
    v = opts.get("layers")
    if v is None:
        return list(range(n))
    if not isinstance(v, list) or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in v):
        raise opts_fault(f"must be a list of {what} indices in [0, {n}), got {v!r}", "layers")
    return v


def fits(hook, point: str, n_in: int, n_out: int) -> None:
    """A program installed at a point must take and make what the point passes and expects
    (a plain callable is the caller's business; its mistakes surface at the first call)."""
    from .program import Program

    p = POINTS[point]
    if isinstance(hook, Program) and (hook.n_inputs != n_in or len(hook.out_slots) != n_out):
        raise RuntimeFault("E_ARG", f"model_hook: program {hook.name!r} takes {hook.n_inputs} inputs and makes "
                           f"{len(hook.out_slots)} outputs; the {point} hook point passes {n_in} "
                           f"({', '.join(p.inputs)}) and expects {n_out} ({', '.join(p.outputs)})", param="hook")


# ---- kv: which cached tokens an attention layer keeps ----

def _int_opt(opts: dict, name: str, default, lo: int, what: str, nullable: bool = False):
    v = opts.get(name, default)
    if v is None and nullable:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise opts_fault(f"must be {what}, got {v!r}", name)
    return v


def _kv_install(m: nn.Module, hook, opts: dict) -> None:
    if not isinstance(m, GPT):
        raise RuntimeFault("E_ARG", f"model_hook: a {type(m).__name__} has no 'kv' hook point (a model built from "
                           "a 'gpt' spec has one per attention layer)", param="point")
    layers = _layers(opts, len(m.blocks), "attention layer")
    if hook is None:
        for i in layers:
            m.kv_hooks.pop(i, None)
        return
    if "budget" not in opts:
        raise opts_fault("is required: the tokens the cache keeps (an integer >= 1), or null to never evict", "budget")
    budget = _int_opt(opts, "budget", None, 1, "the number of tokens the cache keeps (an integer >= 1) or null",
                      nullable=True)
    state = opts.get("state", [])
    if not isinstance(state, list) or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in state):
        raise opts_fault(f"must be a list of numbers (one init value per state tensor), got {state!r}", "state")
    evict = _int_opt(opts, "evict", 1, 1, "the tokens a full cache drops at once (an integer >= 1)")
    if budget is not None and evict > budget:
        raise opts_fault(f"must be in [1, budget = {budget}], got {evict}", "evict")
    history = _int_opt(opts, "history", None, 1, "the prefill attention rows passed (an integer >= 1) or null",
                       nullable=True)
    positions = opts.get("positions", "original")
    if positions not in ("original", "cache"):
        raise opts_fault(f"must be 'original' or 'cache', got {positions!r}", "positions")
    if positions == "cache" and m.positions != "rotary":
        raise opts_fault("'cache' renumbers the kept tokens, which needs a model with rotary positions (this one "
                         "has learned positions)", "positions")
    bits = opts.get("bits", 32)
    if type(bits) is not int or bits not in (32, 8, 4):
        raise opts_fault(f"must be 32, 8 or 4, got {bits!r}", "bits")
    d = m.wte.embedding_dim // m.blocks[0].attn.heads
    group = _int_opt(opts, "group", min(32, d), 1, f"an integer >= 1 dividing the head dim {d}", nullable=True)
    group = min(32, d) if group is None else group
    if d % group:
        raise opts_fault(f"must divide the head dim {d}, got {group}", "group")
    if bits == 4 and d % 2:
        raise opts_fault(f"4 packs two codes a byte along the head dim, which must then be even (it is {d})", "bits")
    fits(hook, "kv", 4 + len(state), 1 + len(state))
    for i in layers:
        m.kv_hooks[i] = KVHook(hook, budget, [float(s) for s in state], evict, history, positions, bits, group)


register(HookPoint(
    name="kv",
    inputs=("keys (B, H, C, D)", "values (B, H, C, D)", "attn (B, H, R, C)", "pos (B, H, C) i64",
            "*state (B, H, C)"),
    outputs=("scores (B, H, C)", "*state (B, H, C)"),
    fires="per attention layer: once after the prompt (prefill: C = T0, R = min(T0, history)), then while a "
          "cached decoding (generate, kv_eval) runs only when its scores are needed, with the attention rows of "
          "every step since its last fire (R >= 1, oldest first; C = the slots in use): when a row holds "
          "`budget` tokens and must drop its `evict` lowest-scoring before the next is written (each (batch, "
          "head) its own), or when its row buffer is full: min(evict, 64) rows (64 with budget null), fewer (at "
          "least 4) where more would pass 1/8 of the bytes of the cache; a state updated exactly "
          "over R rows equals firing at every step",
    sites="layers", options=("budget", "state", "layers", "evict", "history", "positions", "bits", "group"),
    find=lambda m: list(m.blocks) if isinstance(m, GPT) else [],
    install=_kv_install,
))


# ---- router: how an MoE layer weighs its experts per token ----

def _moes(m: nn.Module) -> list[MoE]:
    """The MoE layers of a model, in module order: the router point's sites."""
    return [x for x in m.modules() if isinstance(x, MoE)]


def _router_install(m: nn.Module, hook, opts: dict) -> None:
    moes = _moes(m)
    if not moes:
        raise RuntimeFault("E_ARG", "model_hook: the model has no MoE layer, so no 'router' hook point "
                           "(a gpt spec with 'moe' and a 'moe' spec have them)", param="point")
    form = opts.get("form", "weights")
    if form not in FORMS:
        raise opts_fault(f"must be one of {', '.join(FORMS)} (how the route dispatches tokens), got {form!r}", "form")
    from .program import Program

    outs = OUTPUTS[form]
    for i in _layers(opts, len(moes), "MoE layer"):
        n_in = 1 + len(list(moes[i].router.parameters()))
        # form 'weights' still takes the 2-output [weights, aux] of routers written before forms
        n_out_ok = isinstance(hook, Program) and (len(hook.out_slots) == len(outs) or
                                                  (form == "weights" and len(hook.out_slots) == 2))
        if isinstance(hook, Program) and (hook.n_inputs != n_in or not n_out_ok):
            raise RuntimeFault("E_ARG", f"model_hook: program {hook.name!r} takes {hook.n_inputs} inputs and makes "
                               f"{len(hook.out_slots)} outputs; the router hook point passes {n_in} (x (N, D), "
                               f"*params) and expects, for form '{form}', {len(outs)} ({', '.join(outs)})",
                               param="hook")
        moes[i].__dict__["hook"] = hook
        moes[i].__dict__["form"] = form


register(HookPoint(
    name="router",
    inputs=("x (N, D)", "*params (the layer's router parameters, in the spec's order)"),
    outputs=tuple(f"form '{f}': [{', '.join(o)}]" for f, o in OUTPUTS.items()),
    fires="every forward of an MoE layer, on its N = B*T tokens, with the experts then run batched: 'weights' "
          "(token choice; the older [weights, aux] also taken): expert e serves the tokens with a nonzero "
          "weights[n, e] and y_n = sum_e weights[n, e] expert_e(x_n); 'indices' (expert choice): expert e takes "
          "tokens indices[e, :] and adds gates[e, c] expert_e(x) to each; 'slots' (Soft MoE): expert e runs on "
          "its S slots sum_n dispatch[n, e, s] x_n and y_n = sum_{e,s} combine[n, e, s] out[e, s]; aux and "
          "zloss are read by model_aux_loss, probs (N, E) (rows sum to 1; empty: the dispatch mass) by "
          "model_router_stats",
    sites="layers", options=("layers", "form"),
    find=_moes,
    install=_router_install,
))


# ---- module-named points: weight and output, on every nn.Linear / nn.Conv*d ----

def _weight_sites(m: nn.Module) -> list:
    # nn.MultiheadAttention reads its out_proj's weight directly and never runs out_proj's
    # forward: a hook there would never fire (and a merged adapter would change what it left alone)
    inside_mha = {id(x.out_proj) for x in m.modules() if isinstance(x, nn.MultiheadAttention)}
    return [(n, x) for n, x in m.named_modules() if isinstance(x, WEIGHT_MODULES) and id(x) not in inside_mha]


def _chosen_modules(m: nn.Module, point: str, opts: dict) -> list:
    """The (name, module) sites `opts.modules` (a regular expression, whole names) picks."""
    sites = _weight_sites(m)
    pattern = opts.get("modules")
    if not isinstance(pattern, str):
        raise opts_fault(f"must be a regular expression matched against whole module names (e.g. "
                         f"'layers\\\\.\\\\d+'), got {pattern!r}", "modules")
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise opts_fault(f"is not a regular expression ({e}): {pattern!r}", "modules") from None
    chosen = [(n, x) for n, x in sites if rx.fullmatch(n)]
    if not chosen:
        raise opts_fault(f"{pattern!r} matches no module with a {point} hook point; the model's are "
                         f"{', '.join(n for n, _ in sites[:20]) or 'none (no nn.Linear or nn.Conv*d)'}", "modules")
    return chosen


def _module_installer(point: str, n_in: int, install, remove):
    def run(m: nn.Module, hook, opts: dict) -> None:
        chosen = _chosen_modules(m, point, opts)
        if hook is not None:
            fits(hook, point, n_in, 1)
        for n, x in chosen:
            if hook is None:
                remove(x)
            else:
                install(x, n, hook)

    return run


def geometry(m: nn.Module) -> dict:
    """Each module site's layer geometry, by name (a description's `module_geometry`): what an
    adapter's factors must fit. padding is a list of ints; torch's 'valid' is zeros and its
    'same' the ints it amounts to, or 'same' itself where that pads one side more (even kernels)."""
    out = {}
    for n, x in _weight_sites(m):
        if isinstance(x, nn.Linear):
            out[n] = {"kind": "linear", "in": x.in_features, "out": x.out_features, "kernel": [], "stride": [],
                      "padding": [], "dilation": [], "groups": 1, "padding_mode": "zeros"}
        else:
            span = [d * (k - 1) for d, k in zip(x.dilation, x.kernel_size, strict=True)]  # what 'same' pads
            pad = list(x.padding) if not isinstance(x.padding, str) else [0] * len(span) if x.padding == "valid" \
                else [s // 2 for s in span] if all(s % 2 == 0 for s in span) else "same"
            out[n] = {"kind": f"conv{len(x.kernel_size)}d", "in": x.in_channels, "out": x.out_channels,
                      "kernel": list(x.kernel_size), "stride": list(x.stride), "padding": pad,
                      "dilation": list(x.dilation), "groups": x.groups, "padding_mode": x.padding_mode}
    return out


register(HookPoint(
    name="weight",
    inputs=("weight (the stored weight, its own shape)",),
    outputs=("weight (the weight the forward uses, the same shape and dtype)",),
    fires="every forward of each chosen nn.Linear / nn.Conv1d/2d/3d, before it runs; the plugin's own tensors "
          "(scores, low-rank factors) are captured by the program, so autograd reaches them",
    sites="modules", options=("modules",),
    find=_weight_sites,
    install=_module_installer("weight", 1, install_weight_hook, remove_weight_hook),
))

register(HookPoint(
    name="output",
    inputs=("x (the module's input, as its forward got it)", "y (the module's output)"),
    outputs=("y' (what the model gets instead of y: y's shape and dtype)",),
    fires="after every forward of each chosen nn.Linear / nn.Conv1d/2d/3d (a torch forward hook: autograd runs "
          "through the program, so the tensors it captured get gradients); y is computed with the weight a "
          "weight hook on the same module gives",
    sites="modules", options=("modules",),
    find=_weight_sites,
    install=_module_installer("output", 2, install_output_hook, remove_output_hook),
))
