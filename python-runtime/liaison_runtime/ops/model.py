"""Models as handles: build from a spec, call forward, reach parameters, gradients,
activations and state by name, load and save checkpoints, install programs at the hook
points declared in liaison_runtime/hooks.py (KV policy per attention layer, router per MoE
layer, weight per nn.Linear / nn.Conv*d). Works on any nn.Module handle (built, or adopted
through the hatch); the kv and router points need a built GPT model."""

from __future__ import annotations

import weakref

import torch
from torch import nn

from .. import policy
from ..errors import RuntimeFault
from ..hooks import POINTS, checked_opts
from ..models import MoE, build
from ..models.checkpoint import listed, load_state, read_file, write_file
from ..models.units import unit_index
from .registry import P, fused, op


def model_of(name: str, obj, param: str = "model") -> nn.Module:
    if isinstance(obj, nn.Module):
        return obj
    raise RuntimeFault("E_ARG", f"{name}: argument '{param}' must be a model (from model_build or adopt); the "
                       f"handle holds a {type(obj).__name__}", param=param)


# module -> {name: parameter}: a step program looks up every parameter and gradient by name
# each step, and walking named_parameters() each time cost more than the update itself
_PARAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def params_of(model: nn.Module) -> dict[str, nn.Parameter]:
    """The model's parameters by name, from the cache (built on first use)."""
    params = _PARAMS.get(model)
    if params is None:
        params = _PARAMS[model] = dict(model.named_parameters())
    return params


def _named(name: str, model: nn.Module, pname: str) -> nn.Parameter:
    params = _PARAMS.get(model)
    p = params.get(pname) if params is not None else None
    if p is None:  # first use, or the module gained parameters since: look again
        params = _PARAMS[model] = dict(model.named_parameters())
        p = params.get(pname)
    if p is None:
        raise RuntimeFault("E_ARG", f"{name}: the model has no parameter {pname!r}; it has {listed(params)}",
                           param="name")
    return p


def _strs(name: str, param: str, v) -> list[str]:
    if isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v):
        return list(v)
    raise RuntimeFault("E_ARG", f"{name}: argument '{param}' must be a list of strings, got "
                       f"{type(v).__name__}", param=param)


@op("model_build", P("spec", "any"))
def model_build(ctx, spec):
    """model_build(spec): a model from a spec map of kind 'mlp', 'cnn', 'gpt', 'moe', 'additive' or 'factory'.

    The fields of each kind are in liaison_runtime/models/build.py; an integer 'seed' makes the
    initial weights reproducible; a bad field is refused naming it."""
    return build(spec, ctx.device)


@op("model_param", P("model", "object"), P("name", "str"))
def model_param(ctx, model, name):
    """model_param(model, name): the named parameter itself (e.g. 'layers.0.weight'), not a copy.

    An in-place op on it under no_grad changes the model."""
    return _named("model_param", model_of("model_param", model), name)


@op("model_unit_index", P("model", "object"), P("group", "str"), P("index", "tensor"), P("block", "int", 1))
def model_unit_index(ctx, model, group, index, block):
    """model_unit_index(model, group, index, block=1): the entries of a member parameter's dim that
    the kept units `index` (k,) of a unit group own, (k*block,) int64 (models/units.py).

    The units must lie in the group and be ascending and distinct; else E_ARG naming the group
    and its size."""
    return unit_index("model_unit_index", model_of("model_unit_index", model), group, index, block)


@op("model_grad", P("model", "object"), P("name", "str"))
def model_grad(ctx, model, name):
    """model_grad(model, name): the named parameter's gradient (zeros when none has been computed)."""
    p = _named("model_grad", model_of("model_grad", model), name)
    return p.grad if p.grad is not None else torch.zeros_like(p, requires_grad=False)


@fused("model_grad")
def _model_grads(varying, n):
    """Every parameter's gradient of one model in one call (an optimizer step reads them all)."""
    if varying[0] or not varying[1]:
        return None

    def run(ctx, model, names):
        ps = [_named("model_grad", model, nm) for nm in names]  # the first run checked model is one
        return [p.grad if p.grad is not None else torch.zeros_like(p, requires_grad=False) for p in ps]

    return run


@op("model_forward", P("model", "object"), P("inputs", "tensors"), P("train", "bool", True))
def model_forward(ctx, model, inputs, train):
    """model_forward(model, inputs, train=True): model(*inputs), which must return one tensor.

    train: training mode with autograd; otherwise eval mode under no_grad."""
    m = model_of("model_forward", model)
    if m.training != train:  # train() walks every submodule; a step calls this each time
        m.train(train)
    with torch.enable_grad() if train else torch.no_grad():
        out = m(*inputs)
    if not isinstance(out, torch.Tensor):
        raise RuntimeFault("E_ARG", f"model_forward: {type(m).__name__} returned a {type(out).__name__}, not a "
                           "tensor; only models that return one tensor can be called", param="model")
    return out


@op("model_aux_loss", P("model", "object"), P("kind", "str", "aux", choices=("aux", "zloss")))
def model_aux_loss(ctx, model, kind):
    """model_aux_loss(model, kind='aux'): 0-d sum of the MoE layers' auxiliary losses of the last forward.

    kind 'aux': the routers' load-balancing losses; 'zloss': their router z-losses. 0 when the
    model has no MoE layer. Differentiable into the router's parameters."""
    m = model_of("model_aux_loss", model)
    key = "last_aux" if kind == "aux" else "last_zloss"
    aux = [layer.__dict__[key] for layer in m.modules() if isinstance(layer, MoE) and layer.__dict__[key] is not None]
    if not aux:
        return torch.zeros((), device=ctx.device)
    return torch.stack([a.to(torch.float32) for a in aux]).sum()


@op("model_router_stats", P("model", "object"), outputs=5)
def model_router_stats(ctx, model):
    """model_router_stats(model): the routing statistics of the last forward over the model's L MoE layers.

    [load (L, E): each expert's share of the routed (token, expert) mass; dropped (L,): the
    fraction of tokens no expert served; entropy (L,): the mean per-token entropy (nats) of the
    router's probs; aux (L,), zloss (L,)], detached f32. E_ARG when the model has no MoE layer
    or none has run a forward yet."""
    m = model_of("model_router_stats", model)
    layers = [layer for layer in m.modules() if isinstance(layer, MoE)]
    if not layers:
        raise RuntimeFault("E_ARG", "model_router_stats: the model has no MoE layer (a gpt spec with 'moe' and a "
                           "'moe' spec have them)", param="model")
    got = [layer.stats() for layer in layers]
    if any(s is None for s in got):
        names = [layer.label for layer, s in zip(layers, got, strict=True) if s is None]
        raise RuntimeFault("E_ARG", f"model_router_stats: MoE layer {names[0]} has not run a forward yet; call "
                           "model_forward first", param="model")
    return [torch.stack([s[k] for s in got]) for k in ("load", "dropped", "entropy", "aux", "zloss")]


# ---- activations ----

class _Capture:
    __slots__ = ("handles", "acts", "names")

    def __init__(self):
        self.handles, self.acts, self.names = [], {}, []


_CAPTURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # module -> _Capture


@op("model_capture", P("model", "object"), P("names", "any"), outputs=0)
def model_capture(ctx, model, names):
    """model_capture(model, names): record the outputs of these submodules at every forward.

    Replaces an earlier set; [] stops. Read them with model_activation."""
    m = model_of("model_capture", model)
    names = _strs("model_capture", "names", names)
    modules = dict(m.named_modules())
    unknown = [n for n in names if n not in modules or not n]
    if unknown:
        raise RuntimeFault("E_ARG", f"model_capture: no submodule named {unknown[0]!r}; the model has "
                           f"{listed(n for n in modules if n)}", param="names")
    old = _CAPTURES.pop(m, None)
    for h in old.handles if old else ():
        h.remove()
    if not names:
        return ()
    cap = _Capture()
    cap.names = names
    for n in names:
        def record(_mod, _inp, out, n=n):
            cap.acts[n] = out.detach() if isinstance(out, torch.Tensor) else type(out).__name__
        cap.handles.append(modules[n].register_forward_hook(record))
    _CAPTURES[m] = cap
    return ()


@op("model_activation", P("model", "object"), P("name", "str"))
def model_activation(ctx, model, name):
    """model_activation(model, name): the named submodule's output in the last forward (detached).

    The name must be in the model_capture set."""
    m = model_of("model_activation", model)
    cap = _CAPTURES.get(m)
    if cap is None or name not in cap.names:
        raise RuntimeFault("E_ARG", f"model_activation: {name!r} is not captured; call model_capture(model, "
                           f"[..., {name!r}]) before the forward (captured: {listed(cap.names if cap else [])})",
                           param="name")
    got = cap.acts.get(name)
    if got is None:
        raise RuntimeFault("E_ARG", f"model_activation: no forward has run since {name!r} was captured", param="name")
    if isinstance(got, str):
        raise RuntimeFault("E_ARG", f"model_activation: {name!r} returned a {got}, not a tensor", param="name")
    return got


# ---- state and checkpoints ----

@op("model_state", P("model", "object"), outputs=-1)
def model_state(ctx, model):
    """model_state(model): the state_dict tensors in state_dict order (detached, same memory).

    Their names are the 'state' list of the model's meta, and their count the outputs to ask for."""
    return list(model_of("model_state", model).state_dict().values())


@op("model_load_state", P("model", "object"), P("names", "any"), P("tensors", "tensors"),
    P("strict", "bool", True), outputs=0)
def model_load_state(ctx, model, names, tensors, strict):
    """model_load_state(model, names, tensors, strict=True): copy tensors into the named state entries.

    strict: the names must be exactly the model's; shapes must match either way."""
    m = model_of("model_load_state", model)
    names = _strs("model_load_state", "names", names)
    if len(names) != len(tensors):
        raise RuntimeFault("E_ARG", f"model_load_state: {len(names)} names but {len(tensors)} tensors",
                           param="tensors")
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise RuntimeFault("E_ARG", f"model_load_state: names given twice: {listed(twice)}", param="names")
    load_state("model_load_state", m, dict(zip(names, tensors, strict=True)), strict, ctx.guard)
    return ()


def _files_allowed(name: str) -> None:
    if not policy.ALLOW_FILES:
        raise RuntimeFault("E_ARG", f"{name}: this runtime does not allow file access; start it with --allow-files "
                           "(a local ipc:// runtime allows it by default)", param="path")


@op("model_load_file", P("model", "object"), P("path", "str"), P("strict", "bool", True), outputs=0)
def model_load_file(ctx, model, path, strict):
    """model_load_file(model, path, strict=True): load a safetensors file or Hugging Face folder.

    A folder holds model.safetensors or a sharded model.safetensors.index.json. Needs a runtime
    that allows files (--allow-files; on for ipc://); the path must lie inside its --file-root."""
    _files_allowed("model_load_file")
    m = model_of("model_load_file", model)
    load_state("model_load_file", m, read_file("model_load_file", path), strict, ctx.guard)
    return ()


@op("model_save_file", P("model", "object"), P("path", "str"), P("overwrite", "bool", False), outputs=0)
def model_save_file(ctx, model, path, overwrite):
    """model_save_file(model, path, overwrite=False): write the state_dict as a safetensors file.

    A path not ending in .safetensors is a folder that gets model.safetensors (Hugging Face
    layout). An existing file is replaced only with overwrite=True. Needs a runtime that allows
    files (--allow-files; on for ipc://); the path must lie inside its --file-root."""
    _files_allowed("model_save_file")
    write_file("model_save_file", model_of("model_save_file", model), path, overwrite)
    return ()


# ---- hooks ----

@op("model_hook", P("model", "object"), P("point", "str", choices=tuple(POINTS)), P("hook", "object?"),
    P("opts", "any", None), outputs=0)
def model_hook(ctx, model, point, hook, opts):
    """model_hook(model, point, hook, opts=None): install a program at a hook point (kv, router, weight, output).

    hook: a program or any callable list[Tensor] -> list[Tensor]; None removes it. opts for
    'kv': budget (required), state (init values), layers; for 'router': layers; for 'weight'
    and 'output': modules (required: a regular expression matched against whole module names). Each point's
    calling convention is in docs/protocol.md and liaison_runtime/hooks.py."""
    m = model_of("model_hook", model)
    if hook is not None and not callable(hook):
        raise RuntimeFault("E_ARG", f"model_hook: 'hook' must be a program or a callable, got a "
                           f"{type(hook).__name__}", param="hook")
    p = POINTS[point]
    p.install(m, hook, checked_opts(p, opts))
    return ()
