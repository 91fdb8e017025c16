"""Baseline of router.forward: an MoE layer's forward and backward with a router, written in
plain PyTorch — the router's math as the plugin (plugins/routers/) writes it, and the experts
held as stacked parameters (E, H, D) / (E, O, H) run batched, as a PyTorch MoE holds them.

The layer is the runtime's own `{"kind": "moe"}` build from the wire spec the SDK side sends
(`--spec`, seed included), so its weights (copied into the stacked parameters) and router
parameters are the SDK's; x is the runtime's `randn` with the SDK's seed. Each timed step:
grads cleared, forward, loss = mean(y²), backward, the loss read back (a GPU syncs too).

    python router_forward.py --spec JSON --router soft|topk|expert-choice|soft-moe --config JSON
                             --tokens N [--seed 1]

Serves: prints {"ready": true}, then answers each stdin line N with N timed steps:
{"epoch_s": [...], "loss": the last step's loss}.
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
    """E GELU experts as stacked parameters, run batched."""

    def __init__(self, layer):
        super().__init__()
        fc, proj = [ex.fc for ex in layer.experts], [ex.proj for ex in layer.experts]
        self.w1 = torch.nn.Parameter(torch.stack([m.weight.detach() for m in fc]))  # (E, H, D)
        self.b1 = torch.nn.Parameter(torch.stack([m.bias.detach() for m in fc]))  # (E, H)
        self.w2 = torch.nn.Parameter(torch.stack([m.weight.detach() for m in proj]))  # (E, O, H)
        self.b2 = torch.nn.Parameter(torch.stack([m.bias.detach() for m in proj]))  # (E, O)

    def run(self, xe: torch.Tensor) -> torch.Tensor:
        """(E, M, D) -> (E, M, O)."""
        h = F.gelu(torch.baddbmm(self.b1[:, None], xe, self.w1.transpose(1, 2)))
        return torch.baddbmm(self.b2[:, None], h, self.w2.transpose(1, 2))

    def dense(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Every expert on every token, mixed by w (N, E)."""
        e, h, d = self.w1.shape
        hid = F.gelu(x @ self.w1.reshape(e * h, d).T + self.b1.reshape(-1)).reshape(-1, e, h) * w[:, :, None]
        return hid.reshape(-1, e * h) @ self.w2.transpose(1, 2).reshape(e * h, -1) + w @ self.b2

    def forward(self, x: torch.Tensor, form: str, a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        n, out = x.shape[0], self.w2.shape[1]
        if form == "slots":
            return torch.einsum("nes,eso->no", b, self.run(torch.einsum("nes,nd->esd", a, x)))
        if form == "indices":
            y = self.run(x[a]) * b[:, :, None]
            return x.new_zeros(n, out).index_add(0, a.reshape(-1), y.reshape(-1, out))
        nz = a != 0
        counts = nz.sum(0)
        sizes = counts.tolist()
        pairs, m, e = sum(sizes), max(sizes), a.shape[1]
        if 2 * pairs > n * e:
            return self.dense(x, a)
        ex, tok = nz.T.nonzero(as_tuple=True)
        if e * m > (1.5 if x.is_cuda else 1.0) * pairs:  # unequal groups: each expert on its own slice
            xs = x[tok].split(sizes)
            ys = [F.gelu(xi @ self.w1[i].T + self.b1[i]) @ self.w2[i].T + self.b2[i]
                  for i, xi in enumerate(xs) if xi.shape[0]]
            return x.new_zeros(n, out).index_add(0, tok, torch.cat(ys) * a[tok, ex][:, None])
        pos = torch.arange(ex.numel(), device=x.device) - (counts.cumsum(0) - counts)[ex]
        idx = torch.zeros(a.shape[1], m, dtype=torch.long, device=x.device).index_put((ex, pos), tok)
        w = a.new_zeros(a.shape[1], m).index_put((ex, pos), a[tok, ex])
        y = self.run(x[idx]) * w[:, :, None]
        return x.new_zeros(n, out).index_add(0, idx.reshape(-1), y.reshape(-1, out))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--router", required=True)
    ap.add_argument("--config", default="{}")
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec, cfg = json.loads(a.spec), json.loads(a.config)
    layer = build(spec, device).moe
    experts = Experts(layer).to(device)
    params = dict(layer.router.named_parameters())
    e = len(layer.experts)
    # the runtime's randn(shape, seed=s): a fresh generator on the device, seeded
    x = torch.randn([a.tokens, spec["inputs"]], device=device, generator=torch.Generator(device).manual_seed(a.seed))
    everything = [*experts.parameters(), *params.values()]

    def step() -> tuple[float, float]:
        t0 = time.perf_counter()
        for t in everything:
            t.grad = None
        form, ra, rb, _aux, _z, _probs = route(a.router, cfg, x, params, e)
        loss = experts(x, form, ra, rb).square().mean()
        loss.backward()
        v = loss.item()
        return time.perf_counter() - t0, v

    serve(step)


if __name__ == "__main__":
    main()
