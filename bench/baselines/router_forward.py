"""Baseline of router.forward: an MoE layer's forward and backward with a router, written in
plain PyTorch — the router's math as the plugin (plugins/routers/) writes it, and the experts
run batched as the runtime runs them (Experts: a GPU's one bmm over stacked parameters, a
CPU's per-expert matmuls on the rows grouped by expert), so the ratio is the traced program's
and the runtime's own cost.

The layer is the runtime's own `{"kind": "moe"}` build from the wire spec the SDK side sends
(`--spec`, seed included), so its weights (copied into the stacked parameters) and router
parameters are the SDK's; x is the runtime's `randn` with the SDK's seed. Each timed group:
`--group` steps of grads cleared, forward, loss = mean(y²), backward, then the last loss read
back (a GPU syncs too), as the SDK side reads its loss once a group.

    python router_forward.py --spec JSON --router soft|topk|expert-choice|soft-moe --config JSON
                             --tokens N [--seed 1] [--group 1]

Serves: prints {"ready": true}, then answers each stdin line N with N timed groups:
{"epoch_s": [a group's seconds / group, ...], "loss": the last step's loss}.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from digits_loop import serve
from liaison_runtime.models import build


def switch_aux(probs: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    e = probs.shape[1]
    return (F.one_hot(first, e).float().mean(0) * probs.mean(0)).sum() * e


def zloss(logits: torch.Tensor) -> torch.Tensor:
    return logits.logsumexp(-1).square().mean()


def route(name: str, cfg: dict, x: torch.Tensor, p: dict, e: int):
    """The plugin's route() in plain PyTorch: (form, a, b, aux, zloss, probs)."""
    if name == "soft":
        logits = x @ p["gate"] if "gate" in p else torch.tanh(x @ p["w1"]) @ p["w2"]
        probs = logits.softmax(-1)
        return "weights", probs, None, switch_aux(probs, probs.argmax(-1)), zloss(logits), probs
    if name == "topk":
        k = cfg.get("k", 1)
        logits = x @ p["gate"]
        probs = logits.softmax(-1)
        top, idx = probs.topk(k, -1)
        chosen = top / top.sum(-1, keepdim=True) if cfg.get("normalize", True) and k > 1 else top
        weights = torch.zeros_like(probs).scatter(1, idx, chosen)
        return "weights", weights, None, switch_aux(probs, idx[:, 0]), zloss(logits), probs
    if name == "expert-choice":
        logits = x @ p["gate"]
        probs = logits.softmax(-1)
        n = x.shape[0]
        c = min(n, math.ceil(n * cfg.get("capacity", 2) / e))
        gates, indices = probs.T.topk(c, -1)  # (E, C)
        return "indices", indices, gates, torch.zeros((), device=x.device), zloss(logits), probs
    if name == "soft-moe":
        s = cfg.get("slots", 1)
        if cfg.get("normalize", True):
            phi = p["phi"] / (p["phi"].norm(2, 0, keepdim=True) + 1e-6) * p["scale"]
            logits = (x / (x.norm(2, -1, keepdim=True) + 1e-6)) @ phi
        else:
            logits = x @ p["phi"]
        dispatch = logits.softmax(0).reshape(-1, e, s)
        combine = logits.softmax(-1).reshape(-1, e, s)
        return "slots", dispatch, combine, torch.zeros((), device=x.device), zloss(logits), combine.sum(-1)
    raise SystemExit(f"unknown router {name}")


class Experts(torch.nn.Module):
    """E GELU experts run batched, as the runtime's dispatch runs them: on a GPU as stacked
    parameters (E, H, D) / (E, O, H) in one bmm per layer (one launch in place of E); on a CPU
    as the layer's own per-expert Linears (a ModuleList, as most PyTorch MoEs hold them), the
    (token, expert) pairs gathered once and each expert's two matmuls on its rows."""

    def __init__(self, layer, device: torch.device):
        super().__init__()
        self.bmm = device.type != "cpu"
        if not self.bmm:
            self.each = layer.experts
            return
        fc, proj = [ex.fc for ex in layer.experts], [ex.proj for ex in layer.experts]
        self.w1 = torch.nn.Parameter(torch.stack([m.weight.detach() for m in fc]))  # (E, H, D)
        self.b1 = torch.nn.Parameter(torch.stack([m.bias.detach() for m in fc]))  # (E, H)
        self.w2 = torch.nn.Parameter(torch.stack([m.weight.detach() for m in proj]))  # (E, O, H)
        self.b2 = torch.nn.Parameter(torch.stack([m.bias.detach() for m in proj]))  # (E, O)

    def one(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Expert i on its rows x (M, D) -> (M, O)."""
        if not self.bmm:
            ex = self.each[i]
            return ex.proj(F.gelu(ex.fc(x)))
        return F.gelu(x @ self.w1[i].T + self.b1[i]) @ self.w2[i].T + self.b2[i]

    def run(self, xe: torch.Tensor) -> torch.Tensor:
        """(E, M, D) -> (E, M, O)."""
        if not self.bmm:
            return torch.stack([self.one(i, xi) for i, xi in enumerate(xe.unbind(0))])
        h = F.gelu(torch.baddbmm(self.b1[:, None], xe, self.w1.transpose(1, 2)))
        return torch.baddbmm(self.b2[:, None], h, self.w2.transpose(1, 2))

    def dense(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Every expert on every token, mixed by w (N, E)."""
        if not self.bmm:
            out = self.one(0, x) * w[:, :1]
            for i in range(1, w.shape[1]):
                out = torch.addcmul(out, self.one(i, x), w[:, i:i + 1])
            return out
        e, h, d = self.w1.shape
        hid = F.gelu(x @ self.w1.reshape(e * h, d).T + self.b1.reshape(-1)).reshape(-1, e, h) * w[:, :, None]
        return hid.reshape(-1, e * h) @ self.w2.transpose(1, 2).reshape(e * h, -1) + w @ self.b2

    def grouped(self, x: torch.Tensor, tok: torch.Tensor, w: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """Pairs sorted by expert: one gather, each expert on its rows, each group weighted back."""
        out = x.new_zeros(x.shape[0], self.w2.shape[1] if self.bmm else self.each[0].proj.out_features)
        for i, (xi, t, wi) in enumerate(zip(x.index_select(0, tok).split(sizes), tok.split(sizes), w.split(sizes),
                                            strict=True)):
            if xi.shape[0]:
                out.index_add_(0, t, self.one(i, xi) * wi[:, None])
        return out

    def forward(self, x: torch.Tensor, form: str, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        n = x.shape[0]
        if form == "slots":
            return torch.einsum("nes,eso->no", b, self.run(torch.einsum("nes,nd->esd", a, x)))
        if form == "indices":
            if not self.bmm:
                return self.grouped(x, a.reshape(-1), b.reshape(-1), [a.shape[1]] * a.shape[0])
            y = self.run(x.index_select(0, a.reshape(-1)).reshape(*a.shape, -1)) * b[:, :, None]
            return x.new_zeros(n, y.shape[-1]).index_add(0, a.reshape(-1), y.reshape(-1, y.shape[-1]))
        nz = a != 0
        counts = nz.sum(0)
        sizes = counts.tolist()
        pairs, m, e = sum(sizes), max(sizes), a.shape[1]
        if (2 * pairs > n * e) if self.bmm else (16 * pairs > 15 * n * e):
            return self.dense(x, a)
        ex, tok = nz.T.nonzero(as_tuple=True)
        if not self.bmm or e * m > 1.5 * pairs:  # a CPU, or unequal groups: each expert on its own rows
            return self.grouped(x, tok, a[tok, ex], sizes)
        pos = torch.arange(ex.numel(), device=x.device) - (counts.cumsum(0) - counts)[ex]
        idx = torch.zeros(e, m, dtype=torch.long, device=x.device).index_put((ex, pos), tok)
        w = a.new_zeros(e, m).index_put((ex, pos), a[tok, ex])
        y = self.run(x.index_select(0, idx.reshape(-1)).reshape(e, m, -1)) * w[:, :, None]
        return x.new_zeros(n, y.shape[-1]).index_add(0, idx.reshape(-1), y.reshape(-1, y.shape[-1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--router", required=True)
    ap.add_argument("--config", default="{}")
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--group", type=int, default=1, help="steps per timed group (the loss read after the last)")
    a = ap.parse_args()
    if a.group < 1:
        ap.error(f"--group must be at least 1, got {a.group}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec, cfg = json.loads(a.spec), json.loads(a.config)
    layer = build(spec, device).moe
    experts = Experts(layer, device).to(device)
    params = dict(layer.router.named_parameters())
    e = len(layer.experts)
    # the runtime's randn(shape, seed=s): a fresh generator on the device, seeded
    x = torch.randn([a.tokens, spec["inputs"]], device=device, generator=torch.Generator(device).manual_seed(a.seed))
    everything = [*experts.parameters(), *params.values()]

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        for _ in range(a.group):
            for t in everything:
                t.grad = None
            form, ra, rb, _aux, _z, _probs = route(a.router, cfg, x, params, e)
            loss = experts(x, form, ra, rb).square().mean()
            loss.backward()
        v = loss.item()
        return (time.perf_counter() - t0) / a.group, v

    serve(step)


if __name__ == "__main__":
    main()
