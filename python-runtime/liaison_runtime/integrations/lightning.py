"""Plugins installed into a served script, run by PyTorch Lightning's loop.

```python
import lightning as L
import liaison_runtime
from liaison_runtime.integrations.lightning import LiaisonCallback

svc = liaison_runtime.serve(net, name="model", wait_for_client=60)   # net: the LightningModule's nn.Module
class Digits(L.LightningModule):
    ...
    def training_step(self, batch, i):
        x, y = batch
        return F.cross_entropy(self.net(x), y) + svc.extra_loss()    # the plugins' loss terms, if any
    def configure_optimizers(self):
        return svc.optimizer                                         # the optimizer plugin steps

L.Trainer(max_epochs=5, callbacks=[LiaisonCallback(svc)]).fit(Digits(), train, val)
```

Where Lightning's hooks meet the service's moments (_moments.py):

- `on_fit_start`: the fit's evaluations and fit end count from here;
- `on_train_batch_start`: `before_step()` (at the first batch of an accumulated step);
- `on_before_optimizer_step`: `after_backward()`, once per update, after the last
  micro-batch's backward, before gradient clipping and the update (`on_after_backward` fires
  after every micro-batch: with `accumulate_grad_batches` > 1 the gradients are not whole there);
- `on_train_batch_end` of a batch that stepped: `after_optimizer_step()` (a pruner's masks are
  held before the next forward);
- `on_train_batch_end` of the epoch's last batch (else `on_train_epoch_end`): `epoch_end(epoch)`,
  before the epoch's validation, in the Trainer's order;
- `on_validation_end` during `fit` (not the sanity check): `evaluation(trainer.callback_metrics)`;
- `on_train_end`: `fit_end()`.

When the optimizer Lightning steps is `svc.optimizer`, its `step()` runs 'afterBackward' and
'afterOptimizerStep' around the update itself, and the callback leaves those two to it. With
any other optimizer (the script's AdamW, a pruner installed alone) the callback runs them, and
the script's optimizer makes the update.

Lightning is imported here, when this module is; nothing in the runtime imports it.
"""

from __future__ import annotations

try:
    from lightning.pytorch import Callback
    from lightning.pytorch.trainer.states import TrainerFn
except ImportError:  # the standalone package of older installs
    try:
        from pytorch_lightning import Callback
        from pytorch_lightning.trainer.states import TrainerFn
    except ImportError as e:
        msg = "liaison_runtime.integrations.lightning needs PyTorch Lightning: pip install lightning"
        raise ImportError(msg) from e

from ._moments import StepMoments


def _last_batch(trainer) -> bool:
    """The batch that just ended is its epoch's last (Lightning's own flag, which decides the
    epoch-end validation); False where this Lightning has no such flag (then the epoch ends at
    on_train_epoch_end, after the validation)."""
    progress = getattr(getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None), "batch_progress", None)
    return bool(getattr(progress, "is_last_batch", False))


class LiaisonCallback(Callback):
    """Runs the plugins of `svc` (what `liaison_runtime.serve(...)` returned) at the moments
    of Lightning's training loop: see the module's list."""

    def __init__(self, svc):
        super().__init__()
        self.svc = svc
        self.moments = StepMoments(svc)
        self._stepping = None  # the optimizer of an update under way in this batch
        self._ended_epoch = -1  # Lightning's current_epoch whose end the service has had

    def on_fit_start(self, trainer, pl_module) -> None:
        self.moments.start_fit()
        self._stepping = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.moments.begin()

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.moments.before_update(optimizer)
        self._stepping = optimizer

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._stepping is not None:
            opt, self._stepping = self._stepping, None
            self.moments.after_update(opt)
        if _last_batch(trainer):
            self._end_epoch(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._end_epoch(trainer)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # the sanity check and trainer.validate() are not the fit's evaluation
        self.moments.evaluation(trainer.callback_metrics)

    def on_train_end(self, trainer, pl_module) -> None:
        self.moments.fit_end()

    def _end_epoch(self, trainer) -> None:
        if self._ended_epoch != trainer.current_epoch:
            self._ended_epoch = trainer.current_epoch
            self.moments.epoch_end()
