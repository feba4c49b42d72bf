"""Train the zoo models and save their checkpoints: the digit classifiers on the digits training split,
the language model (charlm) on the standard-library source text of :mod:`.text`.

Usage: python -m xbar.models.train [--models mlp lenet ... charlm] [--epochs N] [--steps N]
"""

import argparse
import os
import tempfile
import time

import torch
import torch.nn.functional as F

from ..compiler.metrics import accuracy, metric, score
from .data import DigitsSplit, load_digits_split
from .text import TextSplit, load_text_split, random_windows
from .zoo import ZOO

# Per-model epoch counts, tuned for the accuracy targets within a small CPU budget.
EPOCHS: dict[str, int] = {"mlp": 50, "lenet": 30, "resnet": 30, "transformer": 60}
BATCH_SIZE = 64
LR = 1e-3
LANGUAGE_MODEL_STEPS = 1200
"""Optimiser steps for charlm: a few minutes on one core."""
LANGUAGE_MODEL_BATCH = 32
LANGUAGE_MODEL_LR = 3e-3


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


def train_language_model(name: str, text: TextSplit, steps: int = LANGUAGE_MODEL_STEPS) -> torch.nn.Module:
    """Train zoo language model ``name`` on random windows of the training text, next-token cross-entropy,
    Adam with a cosine schedule; seeded (model and windows) so runs are reproducible."""
    torch.manual_seed(0)
    model = ZOO[name].factory()
    optimizer = torch.optim.Adam(model.parameters(), lr=LANGUAGE_MODEL_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        x, y = random_windows(text.train, LANGUAGE_MODEL_BATCH, generator)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
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
    parser.add_argument("--steps", type=int, default=LANGUAGE_MODEL_STEPS, help="charlm's optimiser steps")
    args = parser.parse_args(argv)

    for name in args.models:
        start = time.perf_counter()
        if ZOO[name].dataset == "pysource":
            text = load_text_split()
            model = train_language_model(name, text, args.steps)
            figure = f"held-out perplexity {score(model, text.test_x, text.test_y, metric('perplexity')):.3f}"
        else:
            data = load_digits_split()
            model = train_model(name, data, args.epochs or EPOCHS[name])
            figure = f"test accuracy {accuracy(model, data.test_x, data.test_y):.4f}"
        save_atomic(model.state_dict(), ZOO[name].checkpoint)
        print(f"{name}: {figure} ({time.perf_counter() - start:.1f}s) -> {ZOO[name].checkpoint}")


if __name__ == "__main__":
    main()
