"""A plain PyTorch training script: an MLP on scikit-learn's digits, SGD, cross-entropy.

The lines marked `# liaison` serve it to a TypeScript service (examples/serve-digits.ts
starts it and installs the `nesterov` optimizer and the `magnitude` pruner): the service's
plugins then run inside this loop, in this process. Run alone, it trains with its own SGD.

    python examples/plain-pytorch/train_digits.py --epochs 5
"""

import argparse
import json

import liaison_runtime  # liaison
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--losses", help="write every step's loss here (JSON)")
args = parser.parse_args()
device = "cuda" if torch.cuda.is_available() else "cpu"

x, y = load_digits(return_X_y=True)
x, y = torch.tensor(x / 16.0, dtype=torch.float32, device=device), torch.tensor(y, device=device)
perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0)).to(device)
n_test = round(0.2 * len(x))  # a fifth held out
x_test, y_test, x_train, y_train = x[perm[:n_test]], y[perm[:n_test]], x[perm[n_test:]], y[perm[n_test:]]

torch.manual_seed(args.seed)
model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
svc = liaison_runtime.serve(model, optimizer)  # liaison
optimizer = svc.optimizer  # liaison: steps the service's optimizer plugin once one is installed

losses = []
for epoch in range(args.epochs):
    model.train()
    epoch_losses = []
    order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(args.seed * 1_000_003 + epoch))
    for i in range(0, len(order), args.batch_size):
        idx = order[i:i + args.batch_size].to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        loss.backward()
        optimizer.step()
        epoch_losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    losses += epoch_losses
    epoch_loss = sum(epoch_losses) / len(epoch_losses)
    print(f"epoch {epoch + 1}: loss {epoch_loss:.4f}, held-out accuracy {accuracy:.3f}", flush=True)
    svc.epoch_end(epoch, {"loss": epoch_loss, "accuracy": accuracy})  # liaison: the service's pruning events

if args.losses:
    with open(args.losses, "w") as f:
        json.dump(losses, f)
