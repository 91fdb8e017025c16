"""How an MoE layer (moe.py) runs its experts on a route, and the router statistics it records.

Batched (the default), in one of two ways by device (`_bmm_wins`):
- on a CPU, grouped by expert: the (token, expert) pairs gathered at once (index_select),
  each expert's own two matmuls on its contiguous rows, each group weighted and added back
  in place — no padding and no stacking, since a CPU's matmuls are compute-bound (wasted
  rows cost their full price) and a batched product there gains nothing over E calls on
  the same rows (measured, bench router.experts_batched). 'weights' with (nearly) every
  weight nonzero runs every expert on every token, weighting its output (N, O), not its
  hidden (N, H); 'slots' runs each expert on its S slot inputs;
- on an accelerator, one batched matmul over the experts, their weights stacked (torch.stack,
  so autograd reaches each expert's own Parameters): 'weights' dense folds the mixture into
  (N, E·H) @ (E·H, O), sparse pads the groups into an (E, M, D) bmm while that adds at most
  half again the work (else the grouped path); 'indices' (E, C, D) bmm; 'slots' (E, S, D) bmm.
The per-expert loop (`batched: false`, or an expert whose Linear carries a hook, which only
its own forward runs) computes the same sums one expert at a time, as the layer first did.
"""

from __future__ import annotations

import torch

from .moe import ACTIVATIONS, Route


def batched_ok(moe) -> bool:
    """False when an expert's Linear has a forward hook (a weight or output hook, an adapter,
    a pruner's mask): the batched path reads the stored weights and would skip it."""
    return not any(m._forward_hooks or m._forward_pre_hooks for ex in moe.experts for m in (ex.fc, ex.proj))


def dispatch(moe, flat: torch.Tensor, r: Route, batched: bool) -> torch.Tensor:
    """flat (N, D) -> (N, out): the experts' outputs mixed as the route says."""
    if batched:
        return _BATCHED[r.form](moe, flat, r)
    return _LOOP[r.form](moe, flat, r)


# ---- one expert at a time ----

def _loop_weights(moe, flat, r: Route):
    out = flat.new_zeros(flat.shape[0], moe.out)
    for e, expert in enumerate(moe.experts):
        # tokens this expert serves; the index carries no gradient, the weights do
        idx = r.a[:, e].nonzero().squeeze(1)  # (n_e,)
        if idx.numel():
            out = out.index_add(0, idx, r.a[idx, e:e + 1] * expert(flat[idx]))
    return out


def _loop_indices(moe, flat, r: Route):
    out = flat.new_zeros(flat.shape[0], moe.out)
    if r.a.shape[1] == 0:
        return out
    for e, expert in enumerate(moe.experts):
        idx = r.a[e]  # (C,)
        out = out.index_add(0, idx, r.b[e, :, None] * expert(flat[idx]))
    return out


def _loop_slots(moe, flat, r: Route):
    slot_in = torch.einsum("nes,nd->esd", r.a, flat)  # (E, S, D)
    y = torch.stack([expert(slot_in[e]) for e, expert in enumerate(moe.experts)])  # (E, S, O)
    return torch.einsum("nes,eso->no", r.b, y)


# ---- batched ----

def _bmm_wins(flat: torch.Tensor) -> bool:
    """One batched product over the experts (accelerators: one launch in place of E) rather
    than each expert on its own rows (CPUs: the same FLOPs, without padding or stacking)."""
    return flat.device.type != "cpu"


def _ffn(moe):
    """expert e's FeedForward on x (M, D) -> (M, O), as its own Linears (autograd into them)."""
    act = ACTIVATIONS[moe.experts[0].activation]
    return lambda e, x: moe.experts[e].proj(act(moe.experts[e].fc(x)))


def _stacked(moe):
    """(W1 (E, H, D), b1 (E, H) or None, W2 (E, O, H), b2 (E, O) or None, activation)."""
    fc = [ex.fc for ex in moe.experts]
    proj = [ex.proj for ex in moe.experts]
    w1, w2 = torch.stack([m.weight for m in fc]), torch.stack([m.weight for m in proj])
    b1 = torch.stack([m.bias for m in fc]) if fc[0].bias is not None else None
    b2 = torch.stack([m.bias for m in proj]) if proj[0].bias is not None else None
    return w1, b1, w2, b2, ACTIVATIONS[moe.experts[0].activation]


def _experts(moe, xe: torch.Tensor) -> torch.Tensor:
    """xe (E, M, D): expert e's M inputs -> (E, M, O), expert e on its own rows, one bmm each layer."""
    w1, b1, w2, b2, act = _stacked(moe)
    h = torch.bmm(xe, w1.transpose(1, 2)) if b1 is None else torch.baddbmm(b1[:, None], xe, w1.transpose(1, 2))
    h = act(h)  # (E, M, H)
    return torch.bmm(h, w2.transpose(1, 2)) if b2 is None else torch.baddbmm(b2[:, None], h, w2.transpose(1, 2))


def _dense(moe, flat, weights):
    """Every expert on every token, y = Σ_e w[:, e] · expert_e(x)."""
    if not _bmm_wins(flat):
        ffn, out = _ffn(moe), None
        for e in range(weights.shape[1]):
            y = ffn(e, flat)  # (N, O); weighting it, not the hidden (N, H), is H/O times less work
            out = y * weights[:, e:e + 1] if out is None else torch.addcmul(out, y, weights[:, e:e + 1])
        return out
    # (N, D) @ (D, E·H), weighted, then (N, E·H) @ (E·H, O): two large products
    w1, b1, w2, b2, act = _stacked(moe)
    e, h, d = w1.shape
    hid = flat @ w1.reshape(e * h, d).T  # (N, E·H)
    if b1 is not None:
        hid = hid + b1.reshape(-1)
    hid = act(hid).reshape(-1, e, h) * weights[:, :, None]  # (N, E, H): the mixture folded in
    out = hid.reshape(-1, e * h) @ w2.transpose(1, 2).reshape(e * h, -1)  # (N, O)
    return out if b2 is None else out + weights @ b2


def _batched_weights(moe, flat, r: Route):
    weights = r.a
    n, e = weights.shape
    nz = weights != 0
    counts = nz.sum(0)  # (E,)
    sizes = counts.tolist() if n else [0] * e  # one sync: the group sizes
    pairs, m = sum(sizes), max(sizes)
    if pairs == 0:
        return flat.new_zeros(n, moe.out)
    bmm = _bmm_wins(flat)
    # most weights nonzero: every expert on every token. The fold's (N, E·H) products win
    # from half the pairs on; each expert on all N rows wastes compute a CPU pays for, but
    # no gather or scatter: from 15 in 16 pairs on
    if (2 * pairs > n * e) if bmm else (16 * pairs > 15 * n * e):
        return _dense(moe, flat, weights)
    # (token, expert) pairs grouped by expert (nonzero of (E, N) is in expert-major order)
    ex, tok = nz.T.nonzero(as_tuple=True)  # (P,) each
    # padding every group to the largest costs (E·M − P) rows of wasted work: one bmm beats
    # E small launches up to half again the work (the 1.5 is not tuned; on one H200 the batched layer
    # took 0.43–0.59x of the per-expert loop's time, docs/routers.md)
    if not bmm or e * m > 1.5 * pairs:
        return _grouped(moe, flat, tok, weights[tok, ex], sizes)
    starts = counts.cumsum(0) - counts  # (E,) where each group begins among the P pairs
    pos = torch.arange(ex.numel(), device=flat.device) - starts[ex]  # (P,) the pair's row in its group
    idx = torch.zeros(e, m, dtype=torch.long, device=flat.device).index_put((ex, pos), tok)  # (E, M), pad: token 0
    w = weights.new_zeros(e, m).index_put((ex, pos), weights[tok, ex])  # (E, M), pad: 0 (autograd into weights)
    y = _experts(moe, flat.index_select(0, idx.reshape(-1)).reshape(e, m, -1)) * w[:, :, None]  # (E, M, O)
    return flat.new_zeros(n, moe.out).index_add(0, idx.reshape(-1), y.reshape(-1, moe.out))


def _grouped(moe, flat, tok, w, sizes):
    """Pairs sorted by expert: tok (P,) tokens, w (P,) weights, sizes[e] pairs of expert e;
    one gather, each expert's two matmuls on its rows, each group weighted and added in place."""
    ffn = _ffn(moe)
    xs = flat.index_select(0, tok).split(sizes)  # (n_e, D) each; x[tok] (advanced indexing) is ~7x slower on a CPU
    out = flat.new_zeros(flat.shape[0], moe.out)
    for e, (x, t, we) in enumerate(zip(xs, tok.split(sizes), w.split(sizes), strict=True)):
        if x.shape[0]:
            out.index_add_(0, t, ffn(e, x) * we[:, None])
    return out


def _batched_indices(moe, flat, r: Route):
    idx, gates = r.a, r.b  # (E, C)
    e, c = idx.shape
    if c == 0:
        return flat.new_zeros(flat.shape[0], moe.out)
    tok = idx.reshape(-1)  # (E·C,): expert e's C tokens in a row, the grouped path's order
    if not _bmm_wins(flat):
        return _grouped(moe, flat, tok, gates.reshape(-1), [c] * e)
    y = _experts(moe, flat.index_select(0, tok).reshape(e, c, -1)) * gates[:, :, None]  # (E, C, O)
    return flat.new_zeros(flat.shape[0], moe.out).index_add(0, tok, y.reshape(-1, moe.out))


def _batched_slots(moe, flat, r: Route):
    slot_in = torch.einsum("nes,nd->esd", r.a, flat)  # (E, S, D)
    if _bmm_wins(flat):
        y = _experts(moe, slot_in)
    else:  # E·S rows in all: stacking the weights would cost more than the experts' products
        ffn = _ffn(moe)
        y = torch.stack([ffn(e, s) for e, s in enumerate(slot_in.unbind(0))])  # (E, S, O)
    return torch.einsum("nes,eso->no", r.b, y)


_LOOP = {"weights": _loop_weights, "indices": _loop_indices, "slots": _loop_slots}
_BATCHED = {"weights": _batched_weights, "indices": _batched_indices, "slots": _batched_slots}


# ---- statistics ----

@torch.no_grad()
def stats(r: Route, n: int, e: int) -> dict[str, torch.Tensor]:
    """Detached: `load` (E,) each expert's share of the routed (token, expert) mass (weights:
    nonzero entries; indices: tokens taken; slots: dispatch mass), `dropped` () the fraction
    of tokens no expert serves, `entropy` () the mean per-token entropy (nats) of `probs`
    (or of the dispatch mass per expert, normalised per token), `aux`, `zloss` ()."""
    dev = r.aux.device
    if r.form == "weights":
        used = (r.a != 0).float()  # (N, E)
        per_expert, served, mass = used.sum(0), used.sum(1), r.a.abs()
    elif r.form == "indices":
        taken = (r.b != 0).float()  # (E, C)
        per_expert = taken.sum(1)
        cols = torch.arange(e, device=r.a.device)[:, None].expand_as(r.a)
        mass = r.b.new_zeros(n, e).index_put((r.a.reshape(-1), cols.reshape(-1)), r.b.abs().reshape(-1),
                                             accumulate=True)  # (N, E) gate mass per token and expert
        served = r.b.new_zeros(n).index_add(0, r.a.reshape(-1), taken.reshape(-1))
    else:
        mass = r.a.abs().sum(2)  # (N, E) dispatch mass
        per_expert, served = mass.sum(0), r.b.abs().sum((1, 2))
    load = per_expert / per_expert.sum().clamp_min(1e-30)  # all 0 when nothing is routed
    p = r.probs.float() if r.probs is not None else mass.float() / mass.float().sum(1, keepdim=True).clamp_min(1e-30)
    entropy = -torch.special.xlogy(p, p).sum(1).mean() if n else torch.zeros((), device=dev)
    dropped = (served == 0).float().mean() if n else torch.zeros((), device=dev)
    return {"load": load.float().to(dev), "dropped": dropped.to(dev), "entropy": entropy.to(dev),
            "aux": r.aux.detach().float(), "zloss": r.zloss.detach().float()}

