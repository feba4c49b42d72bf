"""Byte-level text from the Python standard library's own source: the language model's data.

Every Python installation carries these files, so the data needs no download. The
training text is a fixed list of modules, the held-out text another module, both read
as UTF-8 bytes (token ids 0-255). The bytes are those of the running Python's
standard library, so figures are reproducible for one Python version.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

TRAIN_MODULES = ("argparse", "dataclasses", "functools", "textwrap", "string", "contextlib", "heapq")
"""The standard-library modules whose source is the training text, in this order."""
TEST_MODULE = "fractions"
"""The held-out module: no training window reads it."""
SEQUENCE_LENGTH = 64
"""Tokens per window: the language model's training (and example) sequence length."""
VOCABULARY = 256
"""One token per byte value."""


@dataclass(frozen=True)
class TextSplit:
    """Training bytes (windows are drawn from them at random offsets while training) and the held-out
    windows: ``test_x`` int64 [N, SEQUENCE_LENGTH], ``test_y`` the same windows shifted by one byte."""

    train: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def train_x(self) -> torch.Tensor:
        return windows(self.train)[0]

    @property
    def train_y(self) -> torch.Tensor:
        return windows(self.train)[1]


def module_bytes(module: str) -> torch.Tensor:
    """The UTF-8 bytes of a standard-library module's source as int64 token ids."""
    path = Path(sysconfig.get_paths()["stdlib"]) / f"{module}.py"
    return torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8).long()


def windows(tokens: torch.Tensor, length: int = SEQUENCE_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive, non-overlapping windows of ``length`` tokens, and for each the next ``length`` tokens
    (the window shifted by one): inputs and next-token targets, [N, length] each."""
    count = (len(tokens) - 1) // length
    x = tokens[: count * length].reshape(count, length)
    y = tokens[1 : count * length + 1].reshape(count, length)
    return x, y


def random_windows(tokens: torch.Tensor, count: int, generator: torch.Generator,
                   length: int = SEQUENCE_LENGTH) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` windows at offsets drawn from ``generator``, with their next-token targets."""
    starts = torch.randint(0, len(tokens) - length - 1, (count, 1), generator=generator)
    index = starts + torch.arange(length)
    return tokens[index], tokens[index + 1]


def load_text_split() -> TextSplit:
    """The training bytes of :data:`TRAIN_MODULES` (joined) and the held-out windows of :data:`TEST_MODULE`."""
    train = torch.cat([module_bytes(module) for module in TRAIN_MODULES])
    return TextSplit(train, *windows(module_bytes(TEST_MODULE)))
