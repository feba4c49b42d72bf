"""Shared benchmark helpers: interleaved timing so both sides see the same noise."""

from __future__ import annotations

import statistics
import sys
import time
from typing import Callable, Optional

import torch
from rich.console import Console
from torch import nn

EIGHT_BIT = {"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10}
"""8-bit DAC and ADC (254 steps), ADC bound 10: the benchmarks' hardware."""


def command_console(module: str, argv: Optional[list[str]]) -> Console:
    """A console for a benchmark's tables (160 columns when not a terminal) that first echoes
    the command that produced them, so a pasted table carries its command."""
    console = Console(width=None if sys.stdout.isatty() else 160)
    arguments = " ".join(sys.argv[1:] if argv is None else argv)
    console.print(f"$ python -m benchmarks.{module} {arguments}".rstrip(), highlight=False, markup=False)
    return console


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = 30, inner: int = 5,
                        warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each function, timing them in alternation."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            samples[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(values) for name, values in samples.items()}


class BenchMLP(nn.Module):
    """784-1024-1024-10, the MLP of the issue's reference figures."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 1024), nn.Linear(1024, 1024), nn.Linear(1024, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class BenchCNN(nn.Module):
    """A small CIFAR-shaped CNN (3x32x32): four 3x3 convolutions of 32-64 channels."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.conv3, self.conv4 = nn.Conv2d(32, 64, 3, padding=1), nn.Conv2d(64, 64, 3, padding=1)
        self.fc = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv2(torch.relu(self.conv1(x)))), 2)
        x = torch.max_pool2d(torch.relu(self.conv4(torch.relu(self.conv3(x)))), 2)
        return self.fc(x.flatten(1))
