"""Neural-network functions: normalisation, linear and convolution layers, losses, dropout."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import RuntimeFault
from .checks import need_dim, need_float, need_rank, need_same_dtype
from .registry import P, op

_REDUCTIONS = ("mean", "sum", "none")


def _shape_fault(name: str, msg: str, param: str) -> RuntimeFault:
    return RuntimeFault("E_SHAPE", f"{name}: {msg}", param=param)


def _same_float(name: str, t, param: str, like, like_param: str = "input") -> None:
    need_float(name, param, t)
    need_same_dtype(name, param, t, like, like_param)


def _softmax(name: str, fn):
    def run(ctx, input, dim):
        need_float(name, "input", input)
        need_dim(name, input, dim)
        return fn(input, dim)

    run.__doc__ = f"{name}(input, dim): normalised along dim."
    op(name, P("input", "tensor"), P("dim", "int"))(run)


_softmax("softmax", torch.softmax)
_softmax("log_softmax", torch.log_softmax)


@op("layer_norm", P("input", "tensor"), P("normalized_shape", "shape"), P("weight", "tensor?", None),
    P("bias", "tensor?", None), P("eps", "float", 1e-5))
def layer_norm(ctx, input, normalized_shape, weight, bias, eps):
    """layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5): over the trailing dims."""
    need_float("layer_norm", "input", input)
    k = len(normalized_shape)
    if k == 0 or k > input.dim() or list(input.shape[input.dim() - k:]) != normalized_shape:
        raise _shape_fault("layer_norm", f"'normalized_shape' {normalized_shape} must be a non-empty tail of "
                           f"the input's shape {list(input.shape)}", "normalized_shape")
    for t, p in ((weight, "weight"), (bias, "bias")):
        if t is not None:
            _same_float("layer_norm", t, p, input)
            if list(t.shape) != normalized_shape:
                raise _shape_fault("layer_norm", f"'{p}' has shape {list(t.shape)}, expected "
                                   f"{normalized_shape}", p)
    return F.layer_norm(input, normalized_shape, weight, bias, eps)


@op("linear", P("input", "tensor"), P("weight", "tensor"), P("bias", "tensor?", None))
def linear(ctx, input, weight, bias):
    """linear(input, weight, bias=None): input (..., in) @ weight (out, in)^T + bias (out,)."""
    need_float("linear", "input", input)
    _same_float("linear", weight, "weight", input)
    need_rank("linear", "input", input, 1, max(input.dim(), 1))
    need_rank("linear", "weight", weight, 2)
    if input.shape[-1] != weight.shape[1]:
        raise _shape_fault("linear", f"'input' {list(input.shape)} has {input.shape[-1]} features but "
                           f"'weight' {list(weight.shape)} expects {weight.shape[1]}", "weight")
    if bias is not None:
        _same_float("linear", bias, "bias", input)
        if list(bias.shape) != [weight.shape[0]]:
            raise _shape_fault("linear", f"'bias' has shape {list(bias.shape)}, expected "
                               f"[{weight.shape[0]}]", "bias")
    return F.linear(input, weight, bias)


_CONVS = {3: F.conv1d, 4: F.conv2d, 5: F.conv3d}


def _conv_ints(field: str, v, n: int, lo: int) -> list[int]:
    """An int or a list of n ints, each >= lo (stride, padding, dilation of an n-d conv)."""
    vals = [v] * n if isinstance(v, int) and not isinstance(v, bool) else v
    if not isinstance(vals, list) or len(vals) != n or not all(
            isinstance(i, int) and not isinstance(i, bool) and i >= lo for i in vals):
        raise RuntimeFault("E_ARG", f"conv: '{field}' must be an integer >= {lo} or a list of {n} of them "
                           f"(one per spatial dim), got {v!r}", param=field)
    return vals


@op("conv", P("input", "tensor"), P("weight", "tensor"), P("bias", "tensor?", None), P("stride", "int|ints", 1),
    P("padding", "any", 0), P("dilation", "int|ints", 1), P("groups", "int", 1))
def conv(ctx, input, weight, bias, stride, padding, dilation, groups):
    """conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1): 1/2/3-d by weight's rank.

    input (N, C_in, *S) or (C_in, *S), weight (C_out, C_in / groups, *K) of rank 3, 4 or 5 (F.conv1d,
    conv2d, conv3d); stride, padding, dilation an int or one per spatial dim; padding also 'same' or
    'valid'."""
    need_float("conv", "input", input)
    _same_float("conv", weight, "weight", input)
    if weight.dim() not in _CONVS:
        raise _shape_fault("conv", f"'weight' {list(weight.shape)} must have rank 3, 4 or 5 (a 1-, 2- or 3-d "
                           "convolution's (C_out, C_in / groups, *kernel))", "weight")
    n = weight.dim() - 2
    if input.dim() not in (n + 1, n + 2):
        raise _shape_fault("conv", f"'input' {list(input.shape)} must be (N, C, {n} spatial dims) or (C, {n} "
                           f"spatial dims) for a {n}-d 'weight' {list(weight.shape)}", "input")
    if groups < 1 or weight.shape[0] % groups:
        raise RuntimeFault("E_ARG", f"conv: 'groups' must be >= 1 and divide the {weight.shape[0]} output "
                           f"channels, got {groups}", param="groups")
    c = input.shape[-n - 1]
    if c != weight.shape[1] * groups:
        raise _shape_fault("conv", f"'input' {list(input.shape)} has {c} channels but 'weight' "
                           f"{list(weight.shape)} with groups {groups} expects {weight.shape[1] * groups}", "weight")
    if bias is not None:
        _same_float("conv", bias, "bias", input)
        if list(bias.shape) != [weight.shape[0]]:
            raise _shape_fault("conv", f"'bias' has shape {list(bias.shape)}, expected [{weight.shape[0]}]", "bias")
    stride = _conv_ints("stride", stride, n, 1)
    dilation = _conv_ints("dilation", dilation, n, 1)
    if padding not in ("same", "valid"):
        padding = _conv_ints("padding", padding, n, 0)
    elif padding == "same" and any(s != 1 for s in stride):
        raise RuntimeFault("E_ARG", f"conv: 'padding' 'same' needs stride 1, got stride {stride}", param="padding")
    # each output size from the geometry, so that torch's own errors (CUDA out of memory, cuDNN)
    # pass through as they are instead of reading as a shape mismatch
    pads = [0] * n if padding == "valid" else None if padding == "same" else padding
    for i, size in enumerate(input.shape[-n:]):
        span = dilation[i] * (weight.shape[2 + i] - 1) + 1
        if pads is not None and (size + 2 * pads[i] - span) // stride[i] + 1 < 1:
            raise _shape_fault("conv", f"'input' {list(input.shape)} is {size} long in spatial dim {i}, shorter than "
                               f"the dilated kernel ({span}) with padding {pads[i]} on each side ('weight' "
                               f"{list(weight.shape)}, dilation {dilation}, padding {padding})", "input")
    return _CONVS[weight.dim()](input, weight, bias, stride, padding, dilation, groups)


@op("cross_entropy", P("input", "tensor"), P("target", "tensor"), P("weight", "tensor?", None),
    P("ignore_index", "int", -100), P("reduction", "str", "mean", choices=_REDUCTIONS),
    P("label_smoothing", "float", 0.0))
def cross_entropy(ctx, input, target, weight, ignore_index, reduction, label_smoothing):
    """cross_entropy(input, target, weight=None, ignore_index=-100, reduction='mean', label_smoothing=0)."""
    # input (N, C, ...) or (C,) logits; target (N, ...) class indices or input-shaped probabilities.
    name = "cross_entropy"
    need_float(name, "input", input)
    need_rank(name, "input", input, 1, max(input.dim(), 1))
    c_dim = 1 if input.dim() >= 2 else 0
    classes = input.shape[c_dim]
    if not 0.0 <= label_smoothing <= 1.0:
        raise RuntimeFault("E_ARG", f"{name}: 'label_smoothing' must be in [0, 1], got {label_smoothing}",
                           param="label_smoothing")
    if weight is not None:
        _same_float(name, weight, "weight", input)
        if list(weight.shape) != [classes]:
            raise _shape_fault(name, f"'weight' has shape {list(weight.shape)}, expected [{classes}]",
                               "weight")
    if target.is_floating_point():
        _same_float(name, target, "target", input)
        if target.shape != input.shape:
            raise _shape_fault(name, f"probability 'target' {list(target.shape)} must match 'input' "
                               f"{list(input.shape)}", "target")
        return F.cross_entropy(input, target, weight, reduction=reduction, label_smoothing=label_smoothing)
    want = list(input.shape[:c_dim]) + list(input.shape[c_dim + 1:])
    if list(target.shape) != want:
        raise _shape_fault(name, f"class-index 'target' has shape {list(target.shape)}, expected {want} for "
                           f"'input' {list(input.shape)}", "target")
    if target.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise RuntimeFault("E_DTYPE", f"{name}: 'target' must hold class indices (i64/i32/u8) or "
                           f"probabilities (a float tensor), got {target.dtype}", param="target")
    target = target.long()

    def out_of_range():
        kept = target[target != ignore_index]
        return _shape_fault(name, f"'target' holds classes from {int(kept.min())} to {int(kept.max())}, "
                            f"outside [0, {classes}) (ignore_index {ignore_index} aside)", "target")

    if input.device.type != "cpu":
        # An out-of-range class is a device-side assert there, which poisons the context: check
        # first, at the cost of a sync. On the CPU torch raises cleanly, and the check would
        # cost a training step a fifth of its time, so the error is translated after the fact.
        kept = target[target != ignore_index]
        if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= classes):
            raise out_of_range()
    try:
        return F.cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=label_smoothing)
    except IndexError:
        raise out_of_range() from None


@op("mse_loss", P("input", "tensor"), P("target", "tensor"),
    P("reduction", "str", "mean", choices=_REDUCTIONS))
def mse_loss(ctx, input, target, reduction):
    """mse_loss(input, target, reduction='mean'): squared error; shapes must be equal."""
    need_float("mse_loss", "input", input)
    _same_float("mse_loss", target, "target", input)
    # torch would broadcast with only a warning; a shape mismatch here is almost always a bug.
    if target.shape != input.shape:
        raise _shape_fault("mse_loss", f"'target' {list(target.shape)} must have the shape of 'input' "
                           f"{list(input.shape)}", "target")
    return F.mse_loss(input, target, reduction=reduction)


@op("dropout", P("input", "tensor"), P("p", "float", 0.5), P("training", "bool", True),
    P("seed", "seed?", None))
def dropout(ctx, input, p, training, seed):
    """dropout(input, p=0.5, training=True, seed=None): zero with probability p, scale the rest by 1/(1-p)."""
    need_float("dropout", "input", input)
    if not 0.0 <= p <= 1.0:
        raise RuntimeFault("E_ARG", f"dropout: 'p' must be in [0, 1], got {p}", param="p")
    if not training or p == 0.0:
        return input.clone()
    if p == 1.0:
        return torch.zeros_like(input)
    # F.dropout takes no generator, so the mask is drawn here from the session's (or the seed's) stream.
    keep = torch.empty_like(input).bernoulli_(1.0 - p, generator=ctx.generator(seed))
    return input * keep / (1.0 - p)
