"""Post-training calibration of input ranges: observers of a layer's inputs.

Named as aihwkit names its calibration types. Each observer sees the inputs of
one input range, batch by batch, and proposes a range; all are deterministic
for a fixed data order. The reference rule (init from data, a moving average of
``init_std_alpha * std`` over the first ``init_from_data`` batches) lives in
:class:`xbar.passes.numerics.input_range.InputRange` itself and has no observer.

One class per method, behind :class:`RangeObserver`, each registered under its
:class:`CalibrationMethod` in :data:`OBSERVERS`; a new method is one enum member,
one class and its entry there.

A convolution's observer is given its range's patches
(:class:`~xbar.passes.numerics.patches.PatchView`, unless the range is over
pixels) and takes its statistics over the patch elements, as aihwkit's
calibration sees an array's input: each pixel weighted by its multiplicity, the
padding zeros included (the std as the init from data takes it; a quantile over
the weighted values; the largest ``|x|`` of the pixels that fall in a patch).

Across torch.distributed ranks (an observer given a
:class:`~xbar.passes.numerics.global_batch.BatchStatistics` over a process group)
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

from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import Enum
from typing import Optional

import torch
from torch import Tensor

from .global_batch import BatchStatistics
from .patches import PatchView


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


@dataclass(frozen=True)
class ObserverOptions:
    """What the observers may be tuned by; each reads the options its method uses."""

    std_alpha: float = 3.0
    quantile: float = 0.9999
    max_samples: int = 100_000
    seed: int = 0


class RangeObserver(ABC):
    """Watches one input range's inputs (batch statistics by ``statistics``) and proposes a range."""

    method: CalibrationMethod

    def __init__(self, options: ObserverOptions = ObserverOptions(), statistics: Optional[BatchStatistics] = None):
        self.options = options
        self.statistics = statistics or BatchStatistics()
        self.batches = 0

    def observe(self, x: Tensor, patches: Optional[PatchView] = None) -> None:
        """Take one batch of the range's input, over ``patches``' elements if given."""
        self._observe(x.detach().float(), patches)
        self.batches += 1

    @abstractmethod
    def _observe(self, x: Tensor, patches: Optional[PatchView]) -> None:
        """Take one batch's float values."""

    @abstractmethod
    def result(self) -> float:
        """The proposed range (across ranks possibly a collective: call it on every rank)."""

    def detail(self) -> str:
        """The options this method uses, for :meth:`describe`."""
        return ""

    def describe(self) -> str:
        return f"{self.method.value}({self.detail()}; batches={self.batches})"


def _quantile(values: Tensor, q: float, weights: Optional[Tensor] = None, zeros: float = 0.0) -> float:
    """``q``-quantile of a 1-d tensor (nearest rank; torch.quantile caps the input size); with ``weights``,
    of the values each repeated ``weights`` times, plus ``zeros`` zeros."""
    if weights is None:
        k = min(values.numel(), max(1, int(round(q * values.numel()))))
        return float(values.kthvalue(k).values)
    total = float(weights.sum()) + zeros
    k = min(total, max(1.0, round(q * total)))
    if k <= zeros:
        return 0.0
    ordered, order = values.sort()
    ranks = weights[order].cumsum(0) + zeros
    return float(ordered[torch.searchsorted(ranks, torch.tensor([k])).clamp(max=len(ordered) - 1)])


def _weighted_magnitudes(x: Tensor, patches: Optional[PatchView]) -> tuple[Tensor, Optional[Tensor], float]:
    """``|x|`` flattened, each value's weight (its multiplicity; None: 1 each) and the number of zeros
    beside them (the patches' padding)."""
    if patches is None:
        return x.abs().flatten(), None, 0.0
    m, count = patches.multiplicity(x)
    weights = m.expand_as(x).flatten()
    return x.abs().flatten(), weights, float(count - weights.sum())


class _MovingAverage(RangeObserver):
    """The mean over all batches of one value per batch (:meth:`sample`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.value = 0.0

    @abstractmethod
    def sample(self, x: Tensor, patches: Optional[PatchView]) -> float:
        """This batch's value."""

    def _observe(self, x: Tensor, patches: Optional[PatchView]) -> None:
        self.value = (self.value * self.batches + self.sample(x, patches)) / (self.batches + 1)

    def result(self) -> float:
        return self.value


class MovingStd(_MovingAverage):
    method = CalibrationMethod.MOVING_STD

    def sample(self, x: Tensor, patches: Optional[PatchView]) -> float:
        std = self.statistics.std(x.flatten()) if patches is None else self.statistics.std_of_moments(
            *patches.moments(x))
        return self.options.std_alpha * float(std)

    def detail(self) -> str:
        return f"std_alpha={self.options.std_alpha}"


class MovingQuantile(_MovingAverage):
    method = CalibrationMethod.MOVING_QUANTILE

    def sample(self, x: Tensor, patches: Optional[PatchView]) -> float:
        values, weights, zeros = _weighted_magnitudes(x, patches)
        if weights is None:
            return _quantile(self.statistics.concatenated(values), self.options.quantile)
        zeros = float(self.statistics.concatenated(torch.tensor([zeros])).sum())
        return _quantile(self.statistics.concatenated(values), self.options.quantile,
                         self.statistics.concatenated(weights), zeros)

    def detail(self) -> str:
        return f"quantile={self.options.quantile}"


class CacheQuantile(RangeObserver):
    """Over patches the cache holds each pixel's weight beside its value, and the zeros as a count that
    shrinks with the cache when it is subsampled (the expected number of zeros kept)."""

    method = CalibrationMethod.CACHE_QUANTILE

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generator = torch.Generator().manual_seed(self.options.seed)
        self.cache = torch.empty(0)
        self.weights: Optional[Tensor] = None
        self.zeros = 0.0

    def _observe(self, x: Tensor, patches: Optional[PatchView]) -> None:
        values, weights, zeros = _weighted_magnitudes(x, patches)
        cache = torch.cat([self.cache, self.statistics.concatenated(values)])
        if weights is not None:
            self.weights = torch.cat([self.weights if self.weights is not None else torch.empty(0),
                                      self.statistics.concatenated(weights)])
            self.zeros += float(self.statistics.concatenated(torch.tensor([zeros])).sum())
        if cache.numel() > self.options.max_samples:
            kept = torch.randperm(cache.numel(), generator=self.generator)[: self.options.max_samples]
            if self.weights is not None:
                self.weights, self.zeros = self.weights[kept], self.zeros * len(kept) / cache.numel()
            cache = cache[kept]
        self.cache = cache

    def result(self) -> float:
        return _quantile(self.cache, self.options.quantile, self.weights, self.zeros)

    def detail(self) -> str:
        return f"quantile={self.options.quantile}, max_samples={self.options.max_samples}"


class Max(RangeObserver):
    method = CalibrationMethod.MAX

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.value = 0.0

    def _observe(self, x: Tensor, patches: Optional[PatchView]) -> None:
        if patches is not None:  # a pixel no patch reads (a stride past the kernel) is no element
            x = x * (patches.multiplicity(x)[0] > 0)
        self.value = max(self.value, float(x.abs().max()))

    def result(self) -> float:
        return self.statistics.amax(self.value)


OBSERVERS: dict[CalibrationMethod, type[RangeObserver]] = {
    cls.method: cls for cls in (MovingStd, MovingQuantile, CacheQuantile, Max)}
"""The observer class of each post-training method (every method but the reference rule)."""


def observer_for(method: CalibrationMethod, options: ObserverOptions = ObserverOptions(),
                 statistics: Optional[BatchStatistics] = None) -> RangeObserver:
    """A fresh observer of ``method`` (a post-training one: not INIT_FROM_DATA)."""
    return OBSERVERS[method](options, statistics)
