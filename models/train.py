"""Train the zoo models on the digits training split and save their checkpoints.

Usage: python -m xbar.models.train [--models mlp lenet ...] [--epochs N]
"""

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from ..compiler.metrics import accuracy
from .data import DigitsSplit, load_digits_split
from .zoo import ZOO

# Per-model epoch counts, tuned for the accuracy targets within a small CPU budget.
EPOCHS: dict[str, int] = {"mlp": 50, "lenet": 30, "resnet": 30, "transformer": 60}
BATCH_SIZE = 64
LR = 1e-3


def train_model(name: str, data: DigitsSplit, epochs: int, lr: float = LR) -> torch.nn.Module:
    """Train zoo model `name` with Adam + cross-entropy; seeded so runs are reproducible."""
    torch.manual_seed(0)
    model = ZOO[name].factory()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(data.train_y)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n).split(BATCH_SIZE):
            loss = F.cross_entropy(model(data.train_x[idx]), data.train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def save_atomic(state_dict: dict, path: os.PathLike) -> None:
    """Write to a temp file in the target directory, then rename, so readers never see a partial file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".pt.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state_dict, f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; checkpoints should be world-readable
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(ZOO), default=list(ZOO))
    parser.add_argument("--epochs", type=int, help="override the per-model default epoch count")
    args = parser.parse_args(argv)

    data = load_digits_split()
    for name in args.models:
        start = time.perf_counter()
        model = train_model(name, data, args.epochs or EPOCHS[name])
        save_atomic(model.state_dict(), ZOO[name].checkpoint)
        acc = accuracy(model, data.test_x, data.test_y)
        print(f"{name}: test accuracy {acc:.4f} ({time.perf_counter() - start:.1f}s) -> {ZOO[name].checkpoint}")


if __name__ == "__main__":
    main()
