"""The digits data set split shared by training, the tests and the command line."""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DigitsSplit:
    """Fixed train/test split; x is float32 [N, 1, 8, 8] in [0, 1], y is int64 [N]."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def load_digits_split() -> DigitsSplit:
    """Load sklearn's 8x8 digits with a deterministic stratified 25% held-out test split."""
    from sklearn.datasets import load_digits  # on use: scikit-learn takes about a second to import
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        torch.arange(len(y)).numpy(), test_size=0.25, random_state=0, stratify=digits.target
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return DigitsSplit(x[train_idx], y[train_idx], x[test_idx], y[test_idx])

