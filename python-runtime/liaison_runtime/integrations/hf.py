"""Plugins installed into a served script, run by the Hugging Face `Trainer`'s loop.

```python
import liaison_runtime
from transformers import Trainer, TrainingArguments
from liaison_runtime.integrations.hf import LiaisonLossMixin, LiaisonTrainerCallback, plugin_optimizers

svc = liaison_runtime.serve(model, name="model", wait_for_client=60)
class DigitsTrainer(LiaisonLossMixin, Trainer):    # only for plugins that add loss terms
    pass
trainer = DigitsTrainer(model=model, args=TrainingArguments(...), train_dataset=train, eval_dataset=test,
                        optimizers=plugin_optimizers(svc),      # the optimizer plugin steps, at its own rate
                        callbacks=[LiaisonTrainerCallback(svc)])
trainer.train()
```

Where the Trainer's events meet the service's moments (_moments.py):

- `on_train_begin`: the fit's evaluations and fit end count from here;
- `on_step_begin`: `before_step()` (once per optimizer step, also with gradient accumulation);
- `on_pre_optimizer_step`: `after_backward()`, the step's gradients whole (after clipping),
  before the update;
- `on_optimizer_step`: `after_optimizer_step()` (a pruner's masks are held before the next forward);
- `on_epoch_end`: `epoch_end(epoch)`, before the epoch's evaluation, in the Trainer's order;
- `on_evaluate` during `train()`: `evaluation(metrics)`;
- `on_train_end`: `fit_end()`.

When the optimizer the Trainer steps is `svc.optimizer` (accelerate wraps it; the callback
looks inside), its `step()` runs 'afterBackward' and 'afterOptimizerStep' around the update
itself, and the callback leaves those two to it. The optimizer plugin's learning rate is the one
the service installed it with (`svc.optimizer.param_groups[0]["lr"]`, set when the install
becomes active at the next step): the scheduler the Trainer would make for
`optimizers=(svc.optimizer, None)` (`lr_scheduler_type`, default linear) scales the rate the
group had when the Trainer started — 0, or the script's own optimizer's, if the plugin was not
active yet — and would overwrite the plugin's. `plugin_optimizers(svc)` pairs the optimizer with
a scheduler that leaves the rate alone. transformers is imported here, when this module is;
nothing in the runtime imports it.
"""

from __future__ import annotations

try:
    from transformers import TrainerCallback
except ImportError as e:
    raise ImportError("liaison_runtime.integrations.hf needs transformers: pip install transformers") from e

import torch

from ._moments import StepMoments

if not all(hasattr(TrainerCallback, h) for h in ("on_pre_optimizer_step", "on_optimizer_step")):
    # the update's two sides are the only events around optimizer.step(); without them
    # 'afterBackward' and the masks after the update have no place in the loop
    raise ImportError("liaison_runtime.integrations.hf needs a transformers whose TrainerCallback has "
                      "on_pre_optimizer_step and on_optimizer_step (a recent one): pip install -U transformers")


class LiaisonTrainerCallback(TrainerCallback):
    """Runs the plugins of `svc` (what `liaison_runtime.serve(...)` returned) at the moments
    of the Hugging Face Trainer's loop: see the module's list."""

    def __init__(self, svc):
        self.svc = svc
        self.moments = StepMoments(svc)

    def on_train_begin(self, args, state, control, **kwargs):
        self.moments.start_fit()

    def on_step_begin(self, args, state, control, **kwargs):
        self.moments.begin()

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.moments.before_update(optimizer)

    def on_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.moments.after_update(optimizer)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.moments.epoch_end()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.moments.evaluation(metrics)

    def on_train_end(self, args, state, control, **kwargs):
        self.moments.fit_end()


def plugin_optimizers(svc):
    """`Trainer(optimizers=plugin_optimizers(svc))`: the service's plugin optimizer and a
    scheduler that keeps its learning rate as the installed plugin set it (torch's ConstantLR
    with factor 1 and no iterations reads the group's rate back at every step)."""
    keep = torch.optim.lr_scheduler.ConstantLR(svc.optimizer, factor=1.0, total_iters=0)
    return svc.optimizer, keep


class LiaisonLossMixin:
    """A `Trainer` mixin (`class MyTrainer(LiaisonLossMixin, Trainer)`) that adds the installed
    plugins' loss terms (`svc.extra_loss()`, from the forward just run) to the loss the
    Trainer computes; the service is the one of the LiaisonTrainerCallback among its callbacks."""

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        out = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        svc = next((cb.svc for cb in self.callback_handler.callbacks if isinstance(cb, LiaisonTrainerCallback)), None)
        if svc is None:
            raise ValueError("LiaisonLossMixin: no LiaisonTrainerCallback among the Trainer's callbacks; "
                             "pass callbacks=[LiaisonTrainerCallback(svc)]")
        if return_outputs:
            loss, outputs = out
            return loss + svc.extra_loss(), outputs
        return out + svc.extra_loss()
