"""Post-training calibration of input ranges: observers of a layer's inputs.

Named as aihwkit names its calibration types. Each observer sees the inputs of
one input range, batch by batch, and proposes a range; all are deterministic
for a fixed data order. The reference rule (init from data, a moving average of
``init_std_alpha * std`` over the first ``init_from_data`` batches) lives in
:class:`xbar.passes.numerics.input_range.InputRange` itself.

Across torch.distributed ranks (inside :func:`~xbar.passes.numerics.global_batch.across_ranks`)
each step's batch is the concatenation of the ranks' local batches in rank
order, and every rank proposes the range one process would on those global
batches: MovingStd averages the global batch's std (combined from each rank's
count, mean and squared deviations), MovingQuantile the quantile of the global
batch's values (gathered from all ranks), CacheQuantile appends the gathered
global batch to a cache that every rank holds and subsamples with the same
seeded generator (so the caches are identical, value for value), and Max takes
the largest of the ranks' maxima. Each observation is then a collective: every
rank must observe the same number of batches.
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor

from . import global_batch


class CalibrationMethod(Enum):
    INIT_FROM_DATA = "InitFromData"
    """The reference rule of ``InputRangeParameter`` (aihwkit's init from data)."""
    MOVING_STD = "MovingStd"
    """Mean over all batches of ``init_std_alpha * std(x)``."""
    MOVING_QUANTILE = "MovingQuantile"
    """Mean over all batches of the ``quantile`` of ``|x|``."""
    CACHE_QUANTILE = "CacheQuantile"
    """The ``quantile`` of ``|x|`` over a cache of at most ``max_samples`` values."""
    MAX = "Max"
    """The largest ``|x|`` seen."""


def _quantile(values: Tensor, q: float) -> float:
    """``q``-quantile of a 1-d tensor (nearest rank; torch.quantile caps the input size)."""
    k = min(values.numel(), max(1, int(round(q * values.numel()))))
    return float(values.kthvalue(k).values)


class RangeObserver:
    """Watches one input range's inputs and proposes a range."""

    def __init__(self, method: CalibrationMethod, *, std_alpha: float = 3.0, quantile: float = 0.9999,
                 max_samples: int = 100_000, seed: int = 0):
        self.method = method
        self.std_alpha = std_alpha
        self.quantile = quantile
        self.max_samples = max_samples
        self.generator = torch.Generator().manual_seed(seed)
        self.batches = 0
        self.value = 0.0
        self.cache = torch.empty(0)

    def observe(self, x: Tensor) -> None:
        x = x.detach().float().flatten()
        if self.method == CalibrationMethod.MAX:
            self.value = max(self.value, float(x.abs().max()))
        elif self.method == CalibrationMethod.CACHE_QUANTILE:
            cache = torch.cat([self.cache, global_batch.concatenated(x.abs())])
            if cache.numel() > self.max_samples:
                cache = cache[torch.randperm(cache.numel(), generator=self.generator)[: self.max_samples]]
            self.cache = cache
        else:
            sample = (self.std_alpha * float(global_batch.std(x)) if self.method == CalibrationMethod.MOVING_STD
                      else _quantile(global_batch.concatenated(x.abs()), self.quantile))
            self.value = (self.value * self.batches + sample) / (self.batches + 1)
        self.batches += 1

    def result(self) -> float:
        """The proposed range (for Max across ranks a collective: call it on every rank)."""
        if self.method == CalibrationMethod.CACHE_QUANTILE:
            return _quantile(self.cache, self.quantile)
        if self.method == CalibrationMethod.MAX:
            return global_batch.amax(self.value)
        return self.value

    def describe(self) -> str:
        detail = {CalibrationMethod.MOVING_STD: f"std_alpha={self.std_alpha}",
                  CalibrationMethod.MOVING_QUANTILE: f"quantile={self.quantile}",
                  CalibrationMethod.CACHE_QUANTILE: f"quantile={self.quantile}, max_samples={self.max_samples}",
                  CalibrationMethod.MAX: ""}[self.method]
        return f"{self.method.value}({detail}; batches={self.batches})"
