"""The plugin-backed torch.optim.Optimizer of a served script (liaison_runtime/serve.py)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .parts import Installed


class PluginOptimizer(torch.optim.Optimizer):
    """The script's optimizer once a service installed an optimizer plugin: `step()` replays
    the plugin's traced update over every parameter's `.grad`. Before one is installed it
    steps the script's own optimizer (or raises, naming that none is installed, when the
    script gave none). `zero_grad()` begins a step: the 'beforeStep' programs run there.

    One learning rate for every parameter: `param_groups[0]['lr']`, set from the plugin at
    install; a torch LR scheduler on this optimizer changes it as it would SGD's. The
    plugin's state per parameter (`state[p]`) is the tensors its program updates in place,
    saved by `state_dict()` and copied back into them by `load_state_dict()`."""

    def __init__(self, service, params, fallback: torch.optim.Optimizer | None):
        lr = fallback.param_groups[0].get("lr", 0.0) if fallback is not None else 0.0
        super().__init__(params, {"lr": lr})
        self._svc = service
        self._fallback = fallback
        self._names: dict[str, torch.Tensor] = {}

    @property
    def plugin(self) -> str | None:
        """The installed optimizer plugin's id, None while the script's own optimizer steps."""
        inst = self._svc._optimizer_plugin()
        return inst.key if inst is not None else None

    def zero_grad(self, set_to_none: bool = True) -> None:
        self._svc.before_step()
        super().zero_grad(set_to_none)  # the fallback's parameters are these: zeroed with them

    def step(self, closure: Callable | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        svc = self._svc
        svc.after_backward()
        try:
            inst = svc._optimizer_plugin()
            if inst is not None:
                with torch.no_grad():
                    inst.update([svc._lr_tensor(self.param_groups[0]["lr"]), svc._step_t])
                self.param_groups[0]["plugin_step"] = svc.steps
            elif self._fallback is not None:
                self._fallback.step()
            else:
                raise RuntimeError("liaison_runtime.serve: no optimizer plugin is installed and the script gave no "
                                   "optimizer= to step until one is (serve(model, optimizer=...))")
        except BaseException:
            svc._leave_step()
            raise
        svc.after_optimizer_step()
        return loss

    def _adopt_state(self, inst: Installed, params: dict[str, torch.Tensor]) -> None:
        """The plugin's state tensors become this optimizer's state (the very tensors its program updates)."""
        self.state.clear()
        for name, st in inst.state.items():
            p = params.get(name)
            if p is not None:
                self.state[p] = st
        if inst.lr is not None:
            for g in self.param_groups:
                g["lr"] = inst.lr

    def state_dict(self):
        if self._svc._optimizer_plugin() is None and self._fallback is not None:
            return self._fallback.state_dict()
        return super().state_dict()

    def load_state_dict(self, state_dict) -> None:
        if self._svc._optimizer_plugin() is None and self._fallback is not None:
            self._fallback.load_state_dict(state_dict)
            return
        held = {p: st for p, st in self.state.items()}
        super().load_state_dict(state_dict)
        # torch made fresh tensors; the program captured the old ones: copy the values in
        for p, st in held.items():
            loaded = self.state.get(p, {})
            for k, t in st.items():
                if k in loaded:
                    t.copy_(loaded[k])
            self.state[p] = st
