"""Every op in the table against torch itself.

CASES must name every op in OPS (test_every_op_has_a_case keeps it so): an op added
without a case fails the suite. Each case runs the op the way the executor does —
arguments bound from wire values (handles for tensors) — and compares with a reference.
Inputs are cloned per run, so in-place ops never disturb the table.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from runner import Runner, fault

from liaison_runtime.ops import OPS
from liaison_runtime.ops.registry import Ctx


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


_g = gen(0)


def rn(*shape, dtype=torch.float32):
    return torch.randn(*shape, generator=_g, dtype=dtype)


def T(*values, dtype=torch.int64):
    return torch.tensor(values, dtype=dtype)


x, y, z = rn(3, 4), rn(3, 4), rn(3, 4)
pos = rn(3, 4).abs() + 0.1
xi = torch.arange(12).reshape(3, 4)
mask = x > 0
v, w = rn(4), rn(4)
cube = rn(2, 3, 4)
a64 = rn(4, 3, dtype=torch.float64)
_m = rn(4, 4, dtype=torch.float64)
spd = _m @ _m.T + 4 * torch.eye(4, dtype=torch.float64)  # symmetric positive definite, well conditioned
rhs = rn(4, 2, dtype=torch.float64)
idx = T(0, 3, 1, 1, 2, 0).reshape(3, 2)
src = rn(3, 2)
logits = rn(3, 5)
labels = T(1, 4, 0)
torch.manual_seed(0)
layer = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.Tanh())
sig, img, vol = rn(2, 3, 7), rn(2, 3, 6, 5), rn(1, 2, 3, 3, 2)


def _conv1d_ref(t, wt, stride, pad):
    """out[n, o, i] = sum over c, k of w[o, c, k] * padded[n, c, i * stride + k], as a loop."""
    p = F.pad(t, (pad, pad))
    k = wt.shape[-1]
    n_out = (p.shape[-1] - k) // stride + 1
    return torch.stack([torch.einsum("nck,ock->no", p[..., i * stride:i * stride + k], wt) for i in range(n_out)], -1)


def _conv2d_ref(t, wt, pad, dil):
    """A stride-1 dilated 2-d convolution as unfold (im2col) and a matmul."""
    cols = F.unfold(F.pad(t, (pad[1], pad[1], pad[0], pad[0])), wt.shape[2:], dilation=dil)  # (N, C*kh*kw, L)
    h = t.shape[2] + 2 * pad[0] - dil[0] * (wt.shape[2] - 1)
    w = t.shape[3] + 2 * pad[1] - dil[1] * (wt.shape[3] - 1)
    return (wt.reshape(wt.shape[0], -1) @ cols).reshape(t.shape[0], wt.shape[0], h, w)


def C(op, args, ref, kw=None, tag=""):
    return pytest.param(op, args, kw or {}, ref, id=op + tag)


def _topk_mask_ref(mag, k):
    """1 where mag reaches its k-th largest value (no ties in the random inputs)."""
    return (mag >= mag.flatten().sort(descending=True).values[k - 1]).to(mag.dtype)


def _slice_ref(t, dim, start, end, step):
    keep = list(range(t.shape[dim]))[slice(start, end, step)]
    return torch.stack([t.select(dim, i) for i in keep], dim) if keep else t.narrow(dim, 0, 0)


def _dropout_ref(t, p, seed):
    keep = torch.empty_like(t).bernoulli_(1 - p, generator=gen(seed))
    return t * keep / (1 - p)


_BINARY = ["add", "sub", "mul", "div", "pow", "maximum", "minimum", "remainder", "floor_divide", "atan2",
           "eq", "ne", "lt", "le", "gt", "ge"]
_LOGICAL = ["logical_and", "logical_or", "logical_xor"]
_UNARY = ["neg", "abs", "sign", "square", "relu", "floor", "ceil", "round", "exp", "expm1", "sin", "cos",
          "tanh", "sigmoid", "reciprocal", "isfinite"]
_POSITIVE = ["log", "log1p", "sqrt", "rsqrt"]

CASES = [
    # ---- elementwise ----
    *[C(n, [x, y], getattr(torch, n)) for n in _BINARY],
    *[C(n, [mask, y > 0], getattr(torch, n)) for n in _LOGICAL],
    *[C(n, [x], getattr(torch, n)) for n in _UNARY],
    *[C(n, [pos], getattr(torch, n)) for n in _POSITIVE],
    C("add", [xi, 3], lambda a, b: a + 3, tag="_scalar"),
    C("maximum", [x, 0.0], lambda a, b: a.clamp(min=0), tag="_scalar"),
    C("atan2", [x, 2.0], lambda a, b: torch.atan2(a, torch.tensor(2.0)), tag="_scalar"),
    *[C(n, [mask, True], lambda a, b, n=n: getattr(torch, n)(a, torch.tensor(True)), tag="_scalar") for n in _LOGICAL],
    C("logical_not", [mask], torch.logical_not),
    C("gelu", [x], F.gelu),
    C("silu", [x], F.silu),
    C("isnan", [torch.tensor([1.0, float("nan")])], torch.isnan),
    C("clamp", [x, -0.5, 0.5], lambda t, lo, hi: t.clamp(lo, hi)),
    C("clamp", [x], lambda t, max: t.clamp(max=max), kw={"max": 0.2}, tag="_max"),
    C("where", [mask, x, y], torch.where),
    C("where", [mask, x, 0.0], lambda c, a, b: torch.where(c, a, torch.zeros_like(a)), tag="_scalar"),
    # ---- creation and random ----
    C("zeros", [[2, 3]], lambda s: torch.zeros(2, 3)),
    C("zeros", [[2]], lambda s, dtype: torch.zeros(2, dtype=torch.int64), kw={"dtype": "i64"}, tag="_i64"),
    C("ones", [[2, 3], "bf16"], lambda s, d: torch.ones(2, 3, dtype=torch.bfloat16)),
    C("full", [[2, 2], 7, "i32"], lambda s, val, d: torch.full((2, 2), 7, dtype=torch.int32)),
    C("arange", [5], lambda n: torch.arange(5)),
    C("arange", [1, 7, 2, "f64"], lambda *a: torch.arange(1, 7, 2, dtype=torch.float64), tag="_range"),
    C("manual_seed", [3], lambda s: ()),
    C("rand", [[3]], lambda s, seed: torch.rand(3, generator=gen(1)), kw={"seed": 1}),
    C("randn", [[2, 2]], lambda s, seed: torch.randn(2, 2, generator=gen(2)), kw={"seed": 2}),
    C("randint", [0, 10, [5]], lambda lo, hi, s, seed: torch.randint(0, 10, (5,), generator=gen(3)),
      kw={"seed": 3}),
    C("normal", [1.0, 2.0, [4]], lambda m, sd, s, seed: torch.normal(1.0, 2.0, (4,), generator=gen(4)),
      kw={"seed": 4}),
    C("randperm", [6], lambda n, seed: torch.randperm(6, generator=gen(5)), kw={"seed": 5}),
    C("bernoulli", [pos / 3], lambda p, seed: torch.bernoulli(p, generator=gen(6)), kw={"seed": 6}),
    C("rand_like", [x], lambda t, seed: torch.rand(3, 4, generator=gen(7)), kw={"seed": 7}),
    C("randn_like", [x], lambda t, dtype, seed: torch.randn(3, 4, generator=gen(8), dtype=torch.float64),
      kw={"seed": 8, "dtype": "f64"}),
    C("eye", [3], lambda n: torch.eye(3)),
    C("eye", [2, 3], lambda n, m: torch.eye(2, 3), tag="_rect"),
    C("linspace", [0, 1, 5], lambda *a: torch.tensor([0, 0.25, 0.5, 0.75, 1.0])),
    C("zeros_like", [x], torch.zeros_like),
    C("ones_like", [xi], torch.ones_like),
    C("full_like", [x, 2.5], torch.full_like),
    C("full_like", [x, 2], lambda t, val, dtype: torch.full((3, 4), 2, dtype=torch.int32),
      kw={"dtype": "i32"}, tag="_dtype"),
    C("to", [x, "f64"], lambda t, d: t.double()),
    C("clone", [x], torch.clone),
    # ---- reductions ----
    C("sum", [x], torch.sum),
    C("sum", [x, [0]], lambda t, d, keepdim: t.sum(0, keepdim=True), kw={"keepdim": True}, tag="_keepdim"),
    C("sum", [xi, 1], lambda t, d: t.sum(1), tag="_int"),
    C("sum", [mask], lambda t: t.sum(), tag="_bool"),
    C("mean", [x, [0, 1]], lambda t, d: t.mean()),
    C("mean", [x, -1], lambda t, d: t.mean(-1), tag="_last"),
    C("prod", [x], torch.prod),
    C("prod", [x, [0, 1]], lambda t, d, keepdim: t.prod(1, True).prod(0, True), kw={"keepdim": True},
      tag="_dims"),
    C("amax", [x, 1], lambda t, d: t.amax(1)),
    C("amin", [x, [0, 1]], lambda t, d, keepdim: t.amin((0, 1), keepdim=True), kw={"keepdim": True}),
    C("argmax", [x], torch.argmax),
    C("argmax", [x, 1, True], lambda t, d, k: t.argmax(1, keepdim=True), tag="_dim"),
    C("argmin", [x, 0], lambda t, d: t.argmin(0)),
    C("std", [x, 1], lambda t, d: t.std(1)),
    C("var", [x], lambda t, correction: t.var(correction=0), kw={"correction": 0}),
    C("logsumexp", [x, 1], lambda t, d: t.logsumexp(1)),
    C("logsumexp", [x], lambda t: t.exp().sum().log(), tag="_all"),
    C("all", [mask, 1], lambda t, d: t.all(1)),
    C("any", [mask], torch.any),
    C("cumsum", [x, 1], lambda t, d: t.cumsum(1)),
    C("cumsum", [xi, 0], lambda t, d: t.cumsum(0), tag="_int"),
    C("norm", [x], lambda t: t.square().sum().sqrt()),
    C("norm", [x, 1.0, [1]], lambda t, o, d: t.abs().sum(1), tag="_l1"),
    C("max_dim", [x, 1], lambda t, d: tuple(torch.max(t, 1))),
    C("min_dim", [x, 0, True], lambda t, d, k: tuple(torch.min(t, 0, keepdim=True))),
    # ---- sorting ----
    C("topk", [x, 2], lambda t, k: tuple(torch.topk(t, 2))),
    C("topk", [x, 1, 0, False], lambda t, k, d, lg: tuple(torch.topk(t, 1, 0, largest=False)),
      tag="_smallest"),
    # k = min(n, ⌈n·frac/div⌉): 4 columns · 0.5 = 2; dim 0, 3 rows · 2 / 3 = 2 smallest; 4 · 5 capped at 4
    C("topk_frac", [x, 0.5], lambda t, f: tuple(s[:, :2] for s in torch.sort(t, descending=True))),
    C("topk_frac", [x, 2.0, 3, 0, False], lambda t, f, d, dim, lg: tuple(s[:2] for s in torch.sort(t, 0)),
      tag="_smallest"),
    C("topk_frac", [x, 5], lambda t, f: tuple(torch.sort(t, descending=True)), tag="_capped"),
    C("sort", [x], lambda t: tuple(torch.sort(t))),
    C("sort", [x, 0, True, True], lambda t, *a: tuple(torch.sort(t, dim=0, descending=True, stable=True)),
      tag="_desc"),
    C("argsort", [x], lambda t, descending: t.argsort(descending=True), kw={"descending": True}),
    C("topk_mask", [x, 5], lambda t, k: _topk_mask_ref(t.abs(), 5)),
    C("topk_mask", [cube, 7, False], lambda t, k, a: _topk_mask_ref(t, 7), tag="_signed"),
    # ---- linear algebra ----
    C("matmul", [x, rn(4, 2)], lambda a, b: (a.unsqueeze(-1) * b).sum(1)),
    C("matmul", [cube, rn(4, 5)], torch.matmul, tag="_batched"),
    C("matmul", [v, rn(4, 2)], torch.matmul, tag="_vector"),
    C("einsum", ["ij,jk->ik", [x, rn(4, 2)]], lambda e, ops: ops[0] @ ops[1]),
    C("einsum", ["...ij->...ji", [cube]], lambda e, ops: ops[0].transpose(-1, -2), tag="_ellipsis"),
    C("qr", [a64], lambda t: tuple(torch.linalg.qr(t))),
    C("qr", [a64, "complete"], lambda t, m: tuple(torch.linalg.qr(t, mode="complete")), tag="_complete"),
    C("eigh", [spd], lambda t: tuple(torch.linalg.eigh(t))),
    C("eigh", [spd, "U"], lambda t, u: tuple(torch.linalg.eigh(t, UPLO="U")), tag="_upper"),
    C("svd", [a64], lambda t: tuple(torch.linalg.svd(t, full_matrices=False))),
    C("svd", [a64, True], lambda t, f: tuple(torch.linalg.svd(t)), tag="_full"),
    C("svdvals", [a64], torch.linalg.svdvals),
    C("solve", [spd, rhs], lambda a, b: torch.linalg.inv(a) @ b),
    C("solve", [spd, rhs[:, 0]], lambda a, b: torch.linalg.inv(a) @ b, tag="_vector"),
    C("inv", [spd], torch.linalg.inv),
    C("cholesky", [spd], torch.linalg.cholesky),
    C("cholesky", [spd, True], lambda t, u: torch.linalg.cholesky(t).mT, tag="_upper"),
    C("det", [spd], torch.linalg.det),
    C("vector_norm", [x, 3.0], lambda t, o: t.abs().pow(3).sum().pow(1 / 3)),
    C("matrix_norm", [a64], lambda t: t.square().sum().sqrt()),
    C("matrix_norm", [a64, "nuc"], lambda t, o: torch.linalg.svdvals(t).sum(), tag="_nuc"),
    C("matrix_norm", [a64, 2], lambda t, o: torch.linalg.svdvals(t)[0], tag="_spectral"),
    C("outer", [v, w[:3]], lambda a, b: a[:, None] * b),
    C("dot", [v, w], lambda a, b: (a * b).sum()),
    # ---- shapes ----
    C("reshape", [x, [4, 3]], lambda t, s: t.reshape(4, 3)),
    C("reshape", [x, [2, -1]], lambda t, s: t.reshape(2, 6), tag="_infer"),
    C("permute", [cube, [2, 0, 1]], lambda t, d: t.permute(2, 0, 1)),
    C("transpose", [x, 0, 1], lambda t, a, b: t.T),
    C("squeeze", [rn(1, 3, 1)], torch.squeeze),
    C("squeeze", [rn(1, 3, 1), [0]], lambda t, d: t[0], tag="_dim"),
    C("unsqueeze", [x, -1], lambda t, d: t[..., None]),
    C("flatten", [cube, 1], lambda t, s: t.reshape(2, 12)),
    C("expand", [rn(3, 1), [2, 3, 4]], lambda t, s: t.expand(2, 3, 4)),
    C("expand", [rn(3, 1), [-1, 5]], lambda t, s: t.expand(3, 5), tag="_keep"),
    C("cat", [[x, y]], lambda ts: torch.cat(ts)),
    C("cat", [[x, rn(3, 2)], 1], lambda ts, d: torch.cat(ts, 1), tag="_dim1"),
    C("stack", [[x, y], 1], lambda ts, d: torch.stack(ts, 1)),
    C("stack", [[x, y], -1], lambda ts, d: torch.stack(ts, 2), tag="_last"),
    C("split", [x, 3, 1], lambda t, s, d: [t[:, :3], t[:, 3:]]),
    C("split", [x, [1, 3], 1], lambda t, s, d: [t[:, :1], t[:, 1:]], tag="_sections"),
    C("chunk", [x, 2, 0], lambda t, c, d: [t[:2], t[2:]]),
    C("unbind", [x, 1], lambda t, d: [t[:, i] for i in range(4)]),
    C("contiguous", [x.T], lambda t: torch.tensor(t.tolist())),
    C("flip", [x, [0, 1]], lambda t, d: t.flip(0).flip(1)),
    C("roll", [x, 1], lambda t, s: t.flatten().roll(1).reshape(3, 4)),
    C("roll", [x, [1, -1], [0, 1]], lambda t, s, d: t.roll(1, 0).roll(-1, 1), tag="_dims"),
    C("repeat", [x, [2, 1, 1]], lambda t, r: torch.stack([t, t])),
    C("tril", [x], torch.tril),
    C("triu", [x, 1], lambda t, d: torch.triu(t, 1)),
    C("diag", [v], torch.diag),
    C("diag", [x, 1], lambda t, d: torch.stack([t[0, 1], t[1, 2], t[2, 3]]), tag="_of_matrix"),
    C("narrow", [x, 1, 1, 2], lambda t, d, s, n: t[:, 1:3]),
    C("narrow", [x, 1, -2, 2], lambda t, d, s, n: t[:, 2:], tag="_negative"),
    C("slice", [x, 1, 1], lambda t, d, s: t[:, 1:]),
    C("slice", [x, 1, None, None, 2], lambda t, *a: t[:, ::2], tag="_step"),
    C("slice", [x, 1, -1, None, -2], lambda t, *a: _slice_ref(t, *a), tag="_reverse"),
    C("slice", [x, 0, None, None, -1], lambda t, *a: _slice_ref(t, *a), tag="_reverse_all"),
    C("slice", [x, 0, 5, 10], lambda t, *a: t[5:10], tag="_empty"),
    C("slice", [x, 0, -2, 0, -1], lambda t, *a: _slice_ref(t, *a), tag="_reverse_bounded"),
    # ---- indexing ----
    C("index_select", [x, 1, T(0, 2)], lambda t, d, i: t[:, [0, 2]]),
    C("index_select", [x, 0, T(2, 2, dtype=torch.int32)], lambda t, d, i: t[[2, 2]], tag="_i32"),
    C("gather", [x, 1, idx], torch.gather),
    C("scatter", [torch.zeros(3, 4), 1, idx, src], torch.scatter),
    C("scatter", [torch.zeros(3, 4), 1, idx, 5.0], torch.scatter, tag="_scalar"),
    C("scatter_add", [torch.ones(3, 4), 1, idx, src], torch.scatter_add),
    C("scatter_reduce", [x, 1, idx, src, "amax"], lambda *a: torch.scatter_reduce(*a)),
    C("scatter_reduce", [x, 1, idx, src, "mean", False], lambda t, d, i, s, r, inc:
      torch.scatter_reduce(t, d, i, s, r, include_self=False), tag="_exclude_self"),
    C("masked_fill", [x, mask, 0.0], torch.masked_fill),
    C("masked_fill", [x, T(1, 0, 0, 1, dtype=torch.bool), torch.tensor(9.0)], torch.masked_fill,
      tag="_broadcast"),
    C("masked_select", [x, mask], lambda t, m: t[m]),
    C("take_along_dim", [x, x.argsort(1), 1], lambda t, i, d: t.sort(1).values),
    C("take_along_dim", [x, T(0, 5)], lambda t, i: t.flatten()[[0, 5]], tag="_flat"),
    C("nonzero", [mask], torch.nonzero),
    C("one_hot", [T(0, 2, 1), 4], lambda t, n: torch.eye(4, dtype=torch.int64)[[0, 2, 1]]),
    C("one_hot", [T(0, 2, dtype=torch.int32)], lambda t: torch.eye(3, dtype=torch.int64)[[0, 2]],
      tag="_auto"),
    # ---- nn ----
    C("softmax", [x, 1], lambda t, d: t.exp() / t.exp().sum(1, keepdim=True)),
    C("log_softmax", [x, 0], lambda t, d: t - t.logsumexp(0, keepdim=True)),
    C("layer_norm", [x, [4]],
      lambda t, s: (t - t.mean(1, True)) / (t.var(1, keepdim=True, correction=0) + 1e-5).sqrt()),
    C("layer_norm", [x, [4], v, w, 1e-3], lambda t, s, wt, b, e: F.layer_norm(t, [4], wt, b, 1e-3),
      tag="_affine"),
    C("linear", [x, rn(2, 4)], lambda t, wt: t @ wt.T),
    C("linear", [x, rn(2, 4), rn(2)], lambda t, wt, b: t @ wt.T + b, tag="_bias"),
    C("conv", [sig, rn(4, 3, 3), None, 2, 1], lambda t, wt, b, s, p: _conv1d_ref(t, wt, s, p), tag="1d"),
    C("conv", [img, rn(5, 3, 3, 2), rn(5), 1, [1, 0], [2, 1]],
      lambda t, wt, b, s, p, d: _conv2d_ref(t, wt, p, d) + b[:, None, None], tag="2d"),
    C("conv", [vol, rn(4, 1, 1, 1, 1), None, [1, 2, 2], 0, 1, 2],  # 1x1x1, 2 groups: channel c feeds 2c, 2c+1
      lambda t, wt, b, s, p, d, g: t[:, [0, 0, 1, 1], :, ::2, ::2] * wt.reshape(1, 4, 1, 1, 1), tag="3d_groups"),
    C("cross_entropy", [logits, labels], lambda a, t: -a.log_softmax(1)[[0, 1, 2], [1, 4, 0]].mean()),
    C("cross_entropy", [logits, labels.to(torch.int32)], lambda a, t, ignore_index, reduction:
      F.cross_entropy(a, labels, ignore_index=4, reduction="sum"), kw={"ignore_index": 4, "reduction": "sum"},
      tag="_ignore"),
    C("cross_entropy", [logits, logits.softmax(1)], lambda a, p, label_smoothing:
      F.cross_entropy(a, p, label_smoothing=0.1), kw={"label_smoothing": 0.1}, tag="_probs"),
    C("mse_loss", [x, y], lambda a, b: (a - b).square().mean()),
    C("mse_loss", [x, y, "none"], lambda a, b, r: (a - b).square(), tag="_none"),
    C("dropout", [x, 0.25], lambda t, p, seed: _dropout_ref(t, 0.25, 9), kw={"seed": 9}),
    C("dropout", [x, 0.5, False], lambda t, p, tr: t, tag="_eval"),
    # ---- in place ----
    C("copy_", [x, y], lambda a, b: b),
    C("copy_", [x, v.to(torch.float64)], lambda a, b: b.float().expand(3, 4), tag="_broadcast_cast"),
    C("add_", [x, y, 2.0], lambda a, b, al: a + 2 * b),
    C("add_", [xi, 3, 2.0], lambda a, b, al: a + 6, tag="_int"),
    C("sub_", [x, v], lambda a, b: a - b),
    C("mul_", [x, 2.0], lambda a, b: a * 2),
    C("div_", [x, pos], lambda a, b: a / b),
    C("addcmul_", [x, y, z, 0.5], lambda a, b, c, val: a + 0.5 * b * c),
    C("addcdiv_", [x, y, pos, 0.1], lambda a, b, c, val: a + 0.1 * b / c),
    C("lerp_", [x, y, 0.3], lambda a, b, wt: a + 0.3 * (b - a)),
    C("lerp_", [x, y, pos / 3], lambda a, b, wt: a + wt * (b - a), tag="_tensor_weight"),
    C("clamp_", [x, -0.1, 0.1], lambda a, lo, hi: a.clamp(-0.1, 0.1)),
    C("zero_", [x], torch.zeros_like),
    C("fill_", [xi, 3], lambda a, val: torch.full_like(a, 3)),
    C("masked_fill_", [x, mask, 0.0], torch.masked_fill),
    C("index_copy_", [torch.zeros(3, 4), 1, T(0, 3), src], lambda a, d, i, s: torch.index_copy(a, d, i, s)),
    # ---- adopted modules ----
    C("module_forward", [layer, [x]], lambda m, ins: torch.tanh(ins[0] @ m[0].weight.T + m[0].bias).detach()),
    C("module_param", [layer, "0.weight"], lambda m, n: m[0].weight.detach()),
    # ---- collectives on a plain runtime: a group of one (test_dist.py runs them on a real group) ----
    C("dist_all_reduce", [x], lambda t: t),
    C("dist_all_reduce", [x, "sum", False], lambda t, o, c: t, tag="_unchecked"),
    C("dist_all_reduce", [xi, "max"], lambda t, o: t, tag="_max_int"),
    C("dist_all_gather", [cube, 2], lambda t, d: t),
    C("dist_broadcast", [x, 0], lambda t, s: t),
    C("dist_reduce_scatter", [x, "mean", 1], lambda t, o, d: t),
    C("dist_all_reduce_many", [[x, xi]], lambda ts: ts),
    C("dist_rank", [], lambda: torch.tensor(0)),
    C("dist_world_size", [], lambda: torch.tensor(1)),
    C("dist_shard", [x, 1], lambda t, d: t),
]


def _clone(v):
    if isinstance(v, torch.Tensor):
        return v.clone()
    if isinstance(v, list):
        return [_clone(e) for e in v]
    return v


def assert_same(got, want):
    if isinstance(want, (tuple, list)):
        assert isinstance(got, (tuple, list)), f"expected {len(want)} outputs, got {type(got).__name__}"
        assert len(got) == len(want)
        for g, w_ in zip(got, want, strict=True):
            assert_same(g, w_)
        return
    assert isinstance(got, torch.Tensor), f"expected a tensor, got {type(got).__name__}"
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,args,kw,ref", CASES)
def test_op(name, args, kw, ref):
    args, kw = _clone(args), {k: _clone(a) for k, a in kw.items()}
    want = ref(*_clone(args), **{k: _clone(a) for k, a in kw.items()})
    got = Runner()(name, *args, **kw)
    d = OPS[name]
    if d.outputs == 1:
        assert isinstance(got, torch.Tensor), f"{name} must return one tensor"
    elif d.outputs == -1:
        assert isinstance(got, list), f"{name} must return a list"
    else:
        assert isinstance(got, tuple) and len(got) == d.outputs, f"{name} must return {d.outputs} tensors"
    if d.inplace:
        assert got is args[0], f"{name} must return its input, written in place"
    assert_same(got, want)


# Ops on models, programs, datasets and files have their own suites (test_models, test_data,
# test_generate, test_program), which check that they call each of these ops by name.
_ELSEWHERE = {n for n, d in OPS.items() if d.fn.__module__.rsplit(".", 1)[-1] in ("model", "train", "data", "program",
                                                                                  "tensorboard", "params", "tokenizer")}


def test_every_op_has_a_case():
    covered = {p.values[0] for p in CASES} | _ELSEWHERE
    assert sorted(set(OPS) - covered) == [], "ops without a case in CASES"
    assert sorted(covered - set(OPS)) == [], "cases for ops that are not in OPS"


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_is_documented(name):
    d = OPS[name]
    assert d.doc.startswith(f"{name}("), f"{name}'s docstring must open with its signature"
    assert d.outputs >= -1
    if d.inplace:
        assert d.params[0].kind == "tensor" and d.params[0].name == "input"


def test_split_like_ops_have_variable_outputs():
    variable = {"split", "chunk", "unbind", "model_state", "program_run", "dist_all_reduce_many"}
    assert {n for n, d in OPS.items() if d.outputs == -1} == variable


def test_decompositions_reconstruct():
    run = Runner()
    q, r = run("qr", a64)
    torch.testing.assert_close(q @ r, a64)
    u, s, vh = run("svd", a64)
    torch.testing.assert_close(u @ torch.diag(s) @ vh, a64)
    vals, vecs = run("eigh", spd)
    torch.testing.assert_close(vecs @ torch.diag(vals) @ vecs.T, spd)
    L = run("cholesky", spd)
    torch.testing.assert_close(L @ L.T, spd)
    torch.testing.assert_close(spd @ run("solve", spd, rhs), rhs)


def test_dropout_zeroes_or_scales():
    t = torch.ones(10_000)
    out = Runner()("dropout", t, 0.3, seed=1)
    kept = out != 0
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / 0.7))
    assert 0.65 < kept.float().mean().item() < 0.75
    assert torch.equal(Runner()("dropout", t, 1.0), torch.zeros_like(t))


def test_shape_ops_return_views_where_torch_does():
    base = rn(3, 4)
    run = Runner()
    for name, args in [("reshape", [[12]]), ("transpose", [0, 1]), ("narrow", [1, 0, 2]), ("slice", [1, 1])]:
        out = run(name, base, *args)
        assert out.untyped_storage().data_ptr() == base.untyped_storage().data_ptr(), name
    assert run("contiguous", base.T).is_contiguous()


def test_inplace_op_writes_the_stored_tensor():
    run = Runner()
    t = torch.zeros(2, 2)
    h = run.wire(t)
    out = OPS["add_"].fn(run.ctx, **OPS["add_"].bind([h, 1.5], {}, run.session))
    assert out is t and run.session.get(h.id) is t
    assert torch.equal(t, torch.full((2, 2), 1.5))


def test_topk_frac_takes_k_from_the_size_of_each_input():
    run = Runner()
    # expert choice's C = min(N, ⌈c·N/E⌉), c = 1.25, E = 3, for one program's inputs of any N
    for n in (1, 3, 4, 12, 13):
        vals, idx = run("topk_frac", rn(3, n), 1.25, 3)
        assert list(idx.shape) == [3, min(n, math.ceil(1.25 * n / 3))] and idx.dtype == torch.int64
    assert fault("E_ARG", run, "topk_frac", x, math.nan).extra["param"] == "frac"
    assert fault("E_ARG", run, "topk_frac", x, 1.0, 0).extra["param"] == "div"
    assert run("topk_frac", x, 0.0)[0].shape == (3, 0)


def test_topk_mask_keeps_exactly_k_and_passes_the_gradient_straight_through():
    run = Runner()
    # ties: every entry equal, still exactly k ones (topk's indices scattered, not a threshold)
    assert run("topk_mask", torch.ones(3, 4), 5).sum().item() == 5
    s = rn(4, 3, dtype=torch.float64).requires_grad_()
    m = run("topk_mask", s, 6)
    g = rn(4, 3, dtype=torch.float64)
    m.backward(g)
    torch.testing.assert_close(s.grad, g * s.detach().sign())  # through |s|: g·sign(s)
    s.grad = None
    run("topk_mask", s, 6, abs=False).backward(g)
    torch.testing.assert_close(s.grad, g)
    assert m.dtype == torch.float64 and m.shape == s.shape


def test_conv_refuses_what_does_not_fit_naming_the_field():
    run = Runner()
    cases = [
        ((img, rn(5, 3, 3)), {}, "E_SHAPE", "input"),  # a 1-d weight on a 2-d image
        ((img, rn(5, 3, 3, 3, 3, 3)), {}, "E_SHAPE", "weight"),  # rank 6
        ((img, rn(5, 2, 3, 3)), {}, "E_SHAPE", "weight"),  # 2 input channels, the image has 3
        ((img, rn(5, 3, 3, 3), rn(4)), {}, "E_SHAPE", "bias"),
        ((img, rn(5, 3, 3, 3)), {"stride": [1, 2, 3]}, "E_ARG", "stride"),
        ((img, rn(5, 3, 3, 3)), {"padding": -1}, "E_ARG", "padding"),
        ((img, rn(5, 3, 3, 3)), {"padding": "same", "stride": 2}, "E_ARG", "padding"),
        ((img, rn(5, 3, 3, 3)), {"dilation": 0}, "E_ARG", "dilation"),
        ((img, rn(6, 1, 3, 3)), {"groups": 4}, "E_ARG", "groups"),
        ((img, rn(5, 3, 9, 9)), {}, "E_SHAPE", "input"),  # the kernel is larger than the image
    ]
    for args, kw, code, field in cases:
        f = fault(code, run, "conv", *args, **kw)
        assert f.extra.get("param") == field and f"'{field}'" in f.message, (kw, f.message)
    same = run("conv", img, rn(5, 3, 3, 3), padding="same")
    assert same.shape == (2, 5, 6, 5)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs a CUDA device (on a CPU the op draws on the CPU anyway)")
def test_seeded_randperm_gives_the_same_order_on_every_device():
    # a data order (Dataset.batches) follows its seed, whatever device the runtime has
    run = Runner()
    run.ctx = Ctx(torch.device("cuda"), run.session)
    p = run("randperm", 1438, seed=7)
    assert p.device.type == "cuda"
    assert torch.equal(p.cpu(), torch.randperm(1438, generator=gen(7)))
    assert run("randperm", 5).device.type == "cuda"  # unseeded: the session's own stream, on the device
