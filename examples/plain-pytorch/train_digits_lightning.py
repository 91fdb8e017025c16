"""A PyTorch Lightning script: an MLP on scikit-learn's digits, SGD, cross-entropy.

The lines marked `# liaison` serve it to a TypeScript service (examples/serve-callbacks.ts
starts it and installs the `nesterov` optimizer and the `magnitude` pruner): Lightning then
steps the service's optimizer plugin, and LiaisonCallback runs the plugins' hook points at
Lightning's moments. Run alone, it trains with its own SGD.

    python examples/plain-pytorch/train_digits_lightning.py --epochs 5
"""

import argparse

import liaison_runtime  # liaison
import lightning as L
import torch
import torch.nn.functional as F
from liaison_runtime.integrations.lightning import LiaisonCallback  # liaison
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
device = "cuda" if torch.cuda.is_available() else "cpu"

x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
n_test = round(0.2 * len(x))  # a fifth held out
test, train = TensorDataset(x[perm[:n_test]], y[perm[:n_test]]), TensorDataset(x[perm[n_test:]], y[perm[n_test:]])


class DigitsMLP(L.LightningModule):
    def __init__(self, sizes=(64, 128, 10), lr=0.05):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(sizes[0], sizes[1]), torch.nn.ReLU(),
                                       torch.nn.Linear(sizes[1], sizes[2]))
        self.optimizer = torch.optim.SGD(self.parameters(), lr=lr)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_accuracy", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return self.optimizer


L.seed_everything(args.seed, verbose=False)
module = DigitsMLP(lr=args.lr).to(device)
svc = liaison_runtime.serve(module.net, module.optimizer)  # liaison
module.optimizer = svc.optimizer  # liaison: steps the service's optimizer plugin once one is installed

trainer = L.Trainer(max_epochs=args.epochs, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    num_sanity_val_steps=0, callbacks=[LiaisonCallback(svc)])  # liaison: the callback
trainer.fit(module, DataLoader(train, batch_size=args.batch_size, shuffle=True), DataLoader(test, batch_size=len(test)))
m = trainer.callback_metrics
print(f"held-out accuracy {m['val_accuracy'].item():.3f}, loss {m['val_loss'].item():.4f}", flush=True)
print(f"stepped by {svc.optimizer.plugin or 'its own SGD'}", flush=True)  # liaison
