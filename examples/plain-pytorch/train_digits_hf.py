"""A Hugging Face Trainer script: an MLP built from its config, on scikit-learn's digits.

The lines marked `# liaison` serve it to a TypeScript service (examples/serve-callbacks.ts
starts it and installs the `nesterov` optimizer and the `magnitude` pruner): the Trainer then
steps the service's optimizer plugin, and LiaisonTrainerCallback runs the plugins' hook
points at the Trainer's moments. Run alone, it trains with its own SGD.

    python examples/plain-pytorch/train_digits_hf.py --epochs 5
"""

import argparse
import tempfile

import liaison_runtime  # liaison
import torch
import torch.nn.functional as F
from liaison_runtime.integrations import hf as liaison_hf  # liaison
from sklearn.datasets import load_digits
from transformers import PretrainedConfig, PreTrainedModel, Trainer, TrainingArguments

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
n_test = round(0.2 * len(x))  # a fifth held out
test = [{"pixels": x[i], "labels": y[i]} for i in perm[:n_test]]
train = [{"pixels": x[i], "labels": y[i]} for i in perm[n_test:]]


class DigitsConfig(PretrainedConfig):
    model_type = "digits-mlp"

    def __init__(self, sizes=(64, 128, 10), **kwargs):
        super().__init__(**kwargs)
        self.sizes = list(sizes)


class DigitsMLP(PreTrainedModel):
    config_class = DigitsConfig

    def __init__(self, config):
        super().__init__(config)
        a, h, c = config.sizes
        self.net = torch.nn.Sequential(torch.nn.Linear(a, h), torch.nn.ReLU(), torch.nn.Linear(h, c))

    def forward(self, pixels, labels=None):
        logits = self.net(pixels)
        return {"loss": None if labels is None else F.cross_entropy(logits, labels), "logits": logits}


def accuracy(pred):
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


torch.manual_seed(args.seed)
model = DigitsMLP(DigitsConfig()).to("cuda" if torch.cuda.is_available() else "cpu")
svc = liaison_runtime.serve(model, torch.optim.SGD(model.parameters(), lr=args.lr))  # liaison

out = tempfile.TemporaryDirectory(prefix="digits-hf-")  # removed at exit: nothing is saved
trainer = Trainer(
    model=model, train_dataset=train, eval_dataset=test, compute_metrics=accuracy,
    args=TrainingArguments(output_dir=out.name, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
                           per_device_eval_batch_size=len(test), eval_strategy="epoch", save_strategy="no",
                           logging_strategy="epoch", report_to="none", disable_tqdm=True, seed=args.seed),
    optimizers=liaison_hf.plugin_optimizers(svc),  # liaison: the service's optimizer plugin, at its own rate
    callbacks=[liaison_hf.LiaisonTrainerCallback(svc)],  # liaison
)
trainer.train()
m = trainer.evaluate()
print(f"held-out accuracy {m['eval_accuracy']:.3f}, loss {m['eval_loss']:.4f}", flush=True)
print(f"stepped by {svc.optimizer.plugin or 'its own SGD'}", flush=True)  # liaison
