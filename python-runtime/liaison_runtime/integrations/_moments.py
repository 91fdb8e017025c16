"""The step moments a library's loop reaches, run on a served script's service once each.

Both callbacks (lightning.py, hf.py) map their library's hooks onto this one state machine,
so the two agree on what a step is:

- `begin()` at the start of a step (before its first forward): the service's 'beforeStep'
  programs. With gradient accumulation a step spans several batches; it runs once, at the
  first (`open` stays set until the update).
- `before_update()` when the step's gradients are complete (after the last micro-batch's
  backward, before the update): 'afterBackward'.
- `after_update()` right after the optimizer's update: 'afterOptimizerStep' (a pruner's masks
  are re-applied here, so the next forward sees them); the step is closed.

When the optimizer the library steps is the service's own (`svc.optimizer`, the plugin
optimizer), its `step()` runs 'afterBackward', the update and 'afterOptimizerStep' itself, in
that order (serve.py); the callbacks then leave those two moments to it and run the rest.
"""

from __future__ import annotations

from numbers import Number

import torch


def unwrap_optimizer(opt):
    """The torch optimizer inside a library's wrapper: Lightning's `LightningOptimizer`
    (`_optimizer`), accelerate's `AcceleratedOptimizer` (`optimizer`), nested or not."""
    for _ in range(4):  # a wrapper of a wrapper at most, in practice
        inner = next((o for a in ("_optimizer", "optimizer") if isinstance(o := getattr(opt, a, None),
                                                                          torch.optim.Optimizer)), None)
        if inner is None or inner is opt:
            return opt
        opt = inner
    return opt


def plain_metrics(metrics) -> dict[str, float]:
    """A library's metrics (tensors, numbers, strings) as the service's {name: float}: one-element
    tensors and numbers, the rest (strings, vectors) dropped."""
    out: dict[str, float] = {}
    for k, v in (metrics or {}).items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            out[str(k)] = float(v.detach().reshape(()).item())
        elif isinstance(v, Number) and not isinstance(v, bool):
            out[str(k)] = float(v)
    return out


class StepMoments:
    """The moments of one service, in order, each once per step."""

    def __init__(self, svc):
        if svc is None:
            raise ValueError("a Liaison callback needs the service: LiaisonCallback(liaison_runtime.serve(model, ...))")
        self.svc = svc
        self.open = False  # begin() ran and the update has not
        self.epochs = 0  # epochs ended (the next epoch_end's number: the service counts from 0)
        self.fitting = False  # between the loop's fit start and fit end: evaluation is the fit's

    def optimizer_steps_itself(self, opt) -> bool:
        """True when `opt` (the library's, possibly wrapped) is the service's plugin optimizer,
        whose step() runs 'afterBackward' and 'afterOptimizerStep' itself."""
        return opt is not None and unwrap_optimizer(opt) is self.svc.optimizer

    def start_fit(self) -> None:
        self.fitting = True
        self.open = False

    def begin(self) -> None:
        if not self.open:
            self.open = True
            self.svc.before_step()

    def before_update(self, opt) -> None:
        self.begin()  # a loop whose step-start hook did not fire (a resumed batch) still opens it
        if not self.optimizer_steps_itself(opt):
            self.svc.after_backward()

    def after_update(self, opt) -> None:
        if not self.open:
            return  # no step was begun: nothing was updated by this loop
        self.open = False
        if not self.optimizer_steps_itself(opt):
            self.svc.after_optimizer_step()

    def epoch_end(self) -> None:
        self.svc.epoch_end(self.epochs)
        self.epochs += 1

    def evaluation(self, metrics) -> None:
        if self.fitting:
            self.svc.evaluation(plain_metrics(metrics))

    def fit_end(self) -> None:
        if self.fitting:
            self.fitting = False
            self.svc.fit_end()
