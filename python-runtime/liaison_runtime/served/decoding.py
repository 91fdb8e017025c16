"""A served script's cached decoding (liaison_runtime/serve.py): `svc.generate` and
`svc.kv_eval` run the runtime's own `generate` / `kv_eval` ops on a served liaison GPT, so
the KV policy a service installed at the model's `kv` hook point (`Service.install(h2o(…))`,
which is `Model.setKVPolicy` over the script's module) decides what its cache keeps —
exactly as on a runtime of its own. They hold the lock for the whole decoding, as a step
does: an install or uninstall lands between two decodings, never inside one (a decoding
reads the hook when it starts). A mixin of `Service`."""

from __future__ import annotations

import torch

from ..errors import RuntimeFault
from ..ops import train as _ops
from .parts import Turns


class _Ctx:
    """The one thing the decoding ops use of an op context: a generator for `seed`."""

    def __init__(self, device: torch.device):
        self.device = device

    def generator(self, seed: int | None) -> torch.Generator:
        g = torch.Generator(device=self.device)
        if seed is None:
            g.seed()
        else:
            g.manual_seed(seed)
        return g


class ServiceDecoding:
    models: dict[str, torch.nn.Module]
    _turns: Turns
    _in_step: bool

    def generate(self, prompt: torch.Tensor, steps: int, *, model: str | None = None, temperature: float = 0.0,
                 seed: int | None = None, lengths: list[int] | torch.Tensor | None = None) -> torch.Tensor:
        """(B, T0) int prompt -> (B, T0 + steps) tokens, decoded one at a time through the served GPT's
        KV cache and the policy installed there (none: the full cache). temperature 0 is greedy;
        `lengths` makes the prompts ragged (left-padded), as the runtime's `generate` op."""
        m = self._gpt(model, "generate")
        if lengths is not None and not isinstance(lengths, torch.Tensor):
            lengths = torch.tensor(list(lengths), dtype=torch.int64)
        return self._decode(lambda: _ops.generate(_Ctx(prompt.device), m, prompt, int(steps), float(temperature),
                                                  seed, lengths))

    def kv_eval(self, tokens: torch.Tensor, prefill: int = 1, *, model: str | None = None) -> torch.Tensor:
        """(B, T) int tokens -> (B, T - prefill) negative log-likelihoods of tokens prefill.., each given
        everything before it as the served GPT's KV cache (and its policy) keeps it: teacher forcing,
        as the runtime's `kv_eval` op (`Model.perplexity` averages it)."""
        m = self._gpt(model, "kv_eval")
        return self._decode(lambda: _ops.kv_eval(_Ctx(tokens.device), m, tokens, int(prefill)))

    def _gpt(self, name: str | None, op: str) -> torch.nn.Module:
        if name is None:
            if len(self.models) != 1:
                raise ValueError(f"svc.{op}: this script serves {len(self.models)} models "
                                 f"({', '.join(self.models)}); name one (model='…')")
            name = next(iter(self.models))
        if name not in self.models:
            raise ValueError(f"svc.{op}: this script serves no model named {name!r}; it serves "
                             f"{', '.join(repr(n) for n in self.models)}")
        return self.models[name]

    def _decode(self, fn):
        """fn under the lock (a decoding is one turn, as a step is), its faults as ValueError."""
        held = self._in_step  # inside a step this thread holds the lock already
        if not held:
            self._check_running()
            self._turns.step_acquire()
        try:
            return fn()
        except RuntimeFault as e:
            raise ValueError(f"{e.message} [{e.code}]") from None
        finally:
            if not held:
                self._turns.lock.release()

    def _check_running(self) -> None:
        raise NotImplementedError  # Service's: ServiceStopped after a disconnect with on_disconnect='stop'
