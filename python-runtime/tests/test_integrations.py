"""The Lightning and Hugging Face callbacks (liaison_runtime.integrations) on a real served
script: `liaison_runtime.serve(...)` with programs installed over the protocol by a bare
client (test_serve.py's), counting how often each hook point's program runs, holding a mask
after every optimizer step and, for the plugin optimizer, an SGD update.

Each library trains a tiny MLP on random data for 2 epochs of 3 steps (+ validation), with
the plugin optimizer (`svc.optimizer`) and with the script's own torch optimizer; the moments
the callback reaches are logged in order from the Service's own methods."""

import pytest
import torch
from test_serve import Client, H, mask_program, op, put, sgd_program

import liaison_runtime

N_IN, N_OUT, BATCH, STEPS, EPOCHS = 4, 3, 4, 3, 2
MOMENTS = ("before_step", "after_backward", "after_optimizer_step", "epoch_end", "evaluation", "fit_end")


def counting_program(c: Client, counter: H) -> H:
    """A program that adds 1 to `counter` each time it runs (inputs (lr, step), as every point's)."""
    lr, step, prog = c.handle(), c.handle(), c.handle()
    c.ops(op("program_define", [prog], "count", [op("add_", [c.handle()], counter, 1)], [lr, step], []))
    return prog


class Served:
    """A served MLP with a client that installed: a counter at each traced point, a mask on the
    first layer's weight held after every optimizer step, and (plugin=True) an SGD update."""

    def __init__(self, tmp_path, plugin: bool, lr=0.1):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(N_IN, 8), torch.nn.ReLU(), torch.nn.Linear(8, N_OUT))
        own = None if plugin else torch.optim.SGD(self.net.parameters(), lr=lr, momentum=0.9, nesterov=True)
        self.own = own
        self.svc = liaison_runtime.serve(self.net, optimizer=own, endpoint=f"ipc://{tmp_path}/s.sock")
        self.log: list = []
        for name in MOMENTS:  # log each moment, then run it
            setattr(self.svc, name, self._logged(name, getattr(self.svc, name)))
        c = self.client = Client(self.svc.endpoint)
        c.sid = c.request("hello")["sid"]
        info = c.ops(op("serve_attach", [H(1)]), meta=[H(1)])["meta"][0]
        c.ops(op("serve_model", [H(2)], name="model"))
        points = ("beforeStep", "afterBackward", "afterOptimizerStep")
        self.counts = {p: torch.zeros((), dtype=torch.int64) for p in points}
        points = {p: counting_program(c, put(self.svc, c, t)) for p, t in self.counts.items()}
        c.ops(op("serve_install", [c.handle()], key="count", model="model", points=points))
        self.mask = (torch.arange(8 * N_IN).reshape(8, N_IN) % 3 != 0).float()
        held = mask_program(c, "0.weight", put(self.svc, c, self.mask))
        c.ops(op("serve_install", [c.handle()], key="mask", model="model", points={"afterOptimizerStep": held}))
        if plugin:
            names = info["optimizer_params"]["model"]
            c.ops(op("serve_install", [c.handle()], key="sgd", model="model", update=sgd_program(c, names),
                     params=names, lr=lr))
        self.start = [p.detach().clone() for p in self.net.parameters()]

    def _logged(self, name, real):
        def moment(*a):
            # before_step inside a begun step does nothing (Lightning's zero_grad after the forward)
            if not (name == "before_step" and self.svc._in_step):
                self.log.append((name, *a))
            return real(*a)

        return moment

    def masked_are_zero(self) -> bool:
        return bool(torch.all(self.net[0].weight.detach()[self.mask == 0] == 0))

    def data(self, n):
        g = torch.Generator().manual_seed(1)
        return torch.randn(n, N_IN, generator=g), torch.randint(0, N_OUT, (n,), generator=g)

    def check(self, steps: int, accumulate: int = 1):
        """Every optimizer step reached before_step, after_backward, after_optimizer_step once
        each and in that order (their programs ran that often); epoch ends before their
        evaluations; the fit's end last; the weights moved; the mask held."""
        steps_log = [m for m in self.log if m[0] in MOMENTS[:3]]
        assert steps_log == [(m,) for m in MOMENTS[:3]] * steps, steps_log
        assert {p: int(t) for p, t in self.counts.items()} == dict.fromkeys(self.counts, steps)
        loop = [m[0] if m[0] != "epoch_end" else m for m in self.log if m[0] in MOMENTS[3:]]
        assert loop == [("epoch_end", 0), "evaluation", ("epoch_end", 1), "evaluation", "fit_end"], loop
        evals = [m[1] for m in self.log if m[0] == "evaluation"]
        assert all(isinstance(v, float) for e in evals for v in e.values()) and all(evals)
        assert self.masked_are_zero()
        assert all(not torch.equal(p, q) for p, q in zip(self.net.parameters(), self.start, strict=True))

    def close(self):
        self.client.close()
        self.svc.close()


@pytest.fixture
def served(tmp_path):
    made = []

    def make(plugin):
        made.append(Served(tmp_path, plugin))
        return made[-1]

    yield make
    for s in made:
        s.close()


# ---- PyTorch Lightning ----


def lightning_fit(s: Served, accumulate: int = 1, optimizer=None):
    L = pytest.importorskip("lightning", reason="lightning is a dev dependency (python-runtime[dev])")
    from liaison_runtime.integrations.lightning import LiaisonCallback

    net, svc, seen = s.net, s.svc, []

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = net

        def training_step(self, batch, i):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y) + svc.extra_loss()

        def validation_step(self, batch, i):
            x, y = batch
            self.log("val_loss", torch.nn.functional.cross_entropy(self.net(x), y))

        def configure_optimizers(self):
            return optimizer if optimizer is not None else svc.optimizer

    class Probe(L.Callback):  # the forward of every step sees the masks held by the last one
        def on_train_batch_start(self, *a):
            seen.append(s.masked_are_zero())

    x, y = s.data(BATCH * STEPS * accumulate)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH)
    L.Trainer(max_epochs=EPOCHS, accumulate_grad_batches=accumulate, accelerator="cpu", devices=1, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
              num_sanity_val_steps=1, callbacks=[LiaisonCallback(svc), Probe()]).fit(Tiny(), loader, loader)
    assert seen[accumulate:] and all(seen[accumulate:]), seen  # the first step's batches precede any update
    return len(seen)


def test_lightning_with_the_plugin_optimizer(served):
    s = served(plugin=True)
    lightning_fit(s)
    s.check(EPOCHS * STEPS)


def test_lightning_with_the_scripts_own_optimizer_and_accumulation(served):
    s = served(plugin=False)
    batches = lightning_fit(s, accumulate=2, optimizer=s.own)
    assert batches == EPOCHS * STEPS * 2
    s.check(EPOCHS * STEPS)  # one before_step per accumulated step, not per batch


# ---- Hugging Face Trainer ----


class HFTiny(torch.nn.Module):
    """A model as the Trainer takes it: keyword inputs, a loss when labels are given."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, labels=None):
        logits = self.net(x)
        loss = None if labels is None else torch.nn.functional.cross_entropy(logits, labels)
        return {"loss": loss, "logits": logits}


def hf_trainer(s: Served, tmp_path, accumulate: int = 1, mixin: bool = False):
    transformers = pytest.importorskip("transformers", reason="transformers is a dev dependency (via peft)")
    from liaison_runtime.integrations.hf import LiaisonLossMixin, LiaisonTrainerCallback, plugin_optimizers

    x, y = s.data(BATCH * STEPS * accumulate)
    rows = [{"x": a, "labels": b} for a, b in zip(x, y, strict=True)]
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), per_device_train_batch_size=BATCH, per_device_eval_batch_size=BATCH,
        gradient_accumulation_steps=accumulate, num_train_epochs=EPOCHS, eval_strategy="epoch", save_strategy="no",
        logging_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=0)
    cls = type("LossTrainer", (LiaisonLossMixin, transformers.Trainer), {}) if mixin else transformers.Trainer
    optimizers = plugin_optimizers(s.svc) if s.own is None else (s.own, None)
    seen = []

    class Probe(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k):
            seen.append(s.masked_are_zero())

    trainer = cls(model=HFTiny(s.net), args=args, train_dataset=rows, eval_dataset=rows, optimizers=optimizers,
                  callbacks=[LiaisonTrainerCallback(s.svc), Probe()])
    return trainer, seen


def test_hf_with_the_plugin_optimizer(served, tmp_path):
    s = served(plugin=True)
    trainer, seen = hf_trainer(s, tmp_path)
    trainer.train()
    assert seen[1:] and all(seen[1:]), seen
    s.check(EPOCHS * STEPS)
    assert s.svc.optimizer.param_groups[0]["lr"] == 0.1  # the plugin's rate, not a scheduler's


def test_hf_with_the_scripts_own_optimizer_and_accumulation(served, tmp_path):
    s = served(plugin=False)
    trainer, seen = hf_trainer(s, tmp_path, accumulate=2)
    trainer.train()
    assert len(seen) == EPOCHS * STEPS and all(seen[1:])
    s.check(EPOCHS * STEPS)


def test_hf_loss_mixin_adds_the_plugins_loss_terms(served, tmp_path):
    s = served(plugin=True)
    c = s.client
    lr, step, w, sq, total, prog = (c.handle() for _ in range(6))
    recs = [op("model_param", [w], H(2), "2.weight"), op("mul", [sq], w, w), op("sum", [total], sq)]
    c.ops(op("program_define", [prog], "l2", recs, [lr, step], [total]))
    c.ops(op("serve_install", [c.handle()], key="l2", model="model", loss=prog))
    s.svc.before_step()  # the install is active from the next step on
    s.svc.after_optimizer_step()
    trainer, _ = hf_trainer(s, tmp_path, mixin=True)
    x, y = s.data(BATCH)
    got = trainer.compute_loss(trainer.model, {"x": x, "labels": y})
    want = torch.nn.functional.cross_entropy(s.net(x), y) + s.net[2].weight.pow(2).sum()
    torch.testing.assert_close(got, want)
    got.backward()  # the term is part of the graph: the weight's gradient has its 2w
    assert s.net[2].weight.grad is not None


def test_the_callbacks_need_a_service():
    pytest.importorskip("transformers", reason="transformers is a dev dependency (via peft)")
    from liaison_runtime.integrations.hf import LiaisonTrainerCallback

    with pytest.raises(ValueError, match="needs the service"):
        LiaisonTrainerCallback(None)
