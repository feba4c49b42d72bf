"""Statistics of the global batch when a step's batch is split over torch.distributed ranks.

A :class:`BatchStatistics` over a process group sees the batch every rank holds
at this step as one batch, the concatenation of the ranks' local batches in rank
order (what a single process given that batch would see), as SyncBatchNorm does
for its mean and variance. Over no group (the default) it computes exactly what
plain torch gives on the local tensor, so a single process pays nothing and its
results do not change by a bit.

Each input range holds one (:class:`~xbar.passes.numerics.input_range.InputRange`
``.statistics``); the pipeline gives every range of a model the same one over
its group for the duration of a calibration or fine-tuning, and the observers of
a calibration take it too. A plain attribute, not a ContextVar: torch.compile
traces an attribute (and guards on it) but cannot trace ``ContextVar.get``.

Every rank must call the same methods in the same order with a tensor (local
batches may differ in size, not in number): each is a collective.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor

DeferredTerm = tuple[Tensor, Tensor, int, Callable[[Tensor], Tensor]]
"""``(param, count, numel, term)`` of a :meth:`BatchStatistics.fraction_term` waiting for the backward's end."""


class BatchStatistics:
    """Batch statistics over ``group``'s ranks (a torch.distributed process group), or over this process alone."""

    def __init__(self, group: Optional[dist.ProcessGroup] = None):
        self.group = group
        self.deferred: Optional[list[DeferredTerm]] = None
        """The terms :meth:`fraction_term` deferred inside :meth:`terms_after_backward`, or None outside it."""

    def std(self, x: Tensor) -> Tensor:
        """Unbiased std of all values of the global batch.

        Each rank contributes (count, mean, sum of squared deviations) of its values,
        computed as ``x.std()`` computes them, combined in float64 by Chan's parallel
        rule, so it is as accurate as one pass over the concatenation.
        """
        if self.group is None:
            return x.std()
        count = x.numel()
        if count:
            x = x.detach()  # var and mean apart: on CPU torch.var_mean is several times slower than both
            local = torch.tensor([count, float(x.mean()), float(x.var(correction=0)) * count], dtype=torch.float64)
        else:
            local = torch.zeros(3, dtype=torch.float64)
        return self._combined_std(local, x.dtype)

    def std_of_moments(self, count: int, mean: Tensor, squares: Tensor) -> Tensor:
        """Unbiased std of the global batch from this rank's ``count`` values, their ``mean`` and
        their sum of squared deviations ``squares`` (weighted statistics, e.g. over a convolution's patches)."""
        if self.group is None:
            return (squares / (count - 1)).sqrt()
        local = torch.tensor([count, float(mean), float(squares)], dtype=torch.float64)
        return self._combined_std(local, mean.dtype)

    def _combined_std(self, local: Tensor, dtype: torch.dtype) -> Tensor:
        """The std of the ranks' ``local`` (count, mean, sum of squared deviations), by Chan's parallel rule."""
        parts = _all_gather_equal(local, self.group)
        counts, means, squares = parts[:, 0], parts[:, 1], parts[:, 2]
        total = counts.sum()
        global_mean = (counts * means).sum() / total
        squares = squares.sum() + (counts * (means - global_mean) ** 2).sum()
        return (squares / (total - 1)).sqrt().to(dtype)

    def fraction(self, count: Tensor, numel: int) -> Tensor:
        """``count / numel`` where both are summed over the global batch (e.g. the fraction of unclipped values)."""
        if self.group is None:
            return count / numel
        return _fractions(count.detach().reshape(1), [numel], self.group)[0].to(count.dtype)

    def fraction_term(self, param: Tensor, count: Tensor, numel: int,
                      term: Callable[[Tensor], Tensor]) -> Optional[Tensor]:
        """A gradient term of ``param`` that depends on ``count / numel`` of the global batch: ``term(fraction)``.

        For the range gradients' decay and output-clipping terms, which depend on the
        parameter and a fraction, not on the incoming gradient. Computed now, or, inside
        :meth:`terms_after_backward` (across ranks, ``param`` a leaf), deferred: then it is
        added to ``param.grad`` when the block ends and this returns None.
        """
        if self.group is None or self.deferred is None or not param.is_leaf:
            return term(self.fraction(count, numel))
        self.deferred.append((param, count.detach().reshape(()), numel, term))
        return None

    @contextlib.contextmanager
    def terms_after_backward(self) -> Iterator[None]:
        """Take the fractions of every :meth:`fraction_term` of the block in one collective when it ends.

        Across ranks each term's fraction is a collective; during a backward pass
        that is one per input range and ADC, a sync point each. Inside this block
        (around ``loss.backward()`` of data-parallel training) the terms wait until the
        backward is done, then one collective takes all their fractions and each term
        is added to its parameter's ``.grad``. DistributedDataParallel has averaged
        the rest of the gradient by then and every rank adds the same term, so the
        gradients equal the per-term ones up to float rounding.
        """
        outer, self.deferred = self.deferred, []
        try:
            yield
            pending = self.deferred
        finally:
            self.deferred = outer
        if pending:
            self._add_terms(pending)

    def _add_terms(self, pending: list[DeferredTerm]) -> None:
        fractions = _fractions(torch.stack([count for _, count, _, _ in pending]), [n for _, _, n, _ in pending],
                               self.group)
        with torch.no_grad():
            for (param, count, _, term), value in zip(pending, fractions):
                added = term(value.to(count.dtype)).reshape(param.shape)
                param.grad = added if param.grad is None else param.grad.add_(added)

    def amax(self, value: float) -> float:
        """The largest of the ranks' ``value``."""
        if self.group is None:
            return value
        return float(_all_gather_equal(torch.tensor([value], dtype=torch.float64), self.group).max())

    def concatenated(self, x: Tensor) -> Tensor:
        """The ranks' flattened ``x`` concatenated in rank order (local sizes may differ)."""
        x = x.flatten()
        if self.group is None:
            return x
        sizes = _all_gather_equal(torch.tensor([x.numel()]), self.group)[:, 0].tolist()
        padded = torch.cat([x, x.new_zeros(max(sizes) - x.numel())])
        return torch.cat([part[:size] for part, size in zip(_all_gather_equal(padded, self.group), sizes)])


@contextlib.contextmanager
def shared_by(holders: Iterable, statistics: BatchStatistics) -> Iterator[BatchStatistics]:
    """Give every one of ``holders`` (modules with a ``statistics`` attribute) ``statistics`` inside the block,
    then their own back."""
    holders = list(holders)
    own = [holder.statistics for holder in holders]
    for holder in holders:
        holder.statistics = statistics
    try:
        yield statistics
    finally:
        for holder, statistics_before in zip(holders, own):
            holder.statistics = statistics_before


def _fractions(counts: Tensor, numels: list[int], group: dist.ProcessGroup) -> Tensor:
    """``sum(counts) / sum(numels)`` over the ranks, per entry, in float64."""
    local = torch.stack([counts.double(), torch.tensor(numels, dtype=torch.float64)])
    totals = _all_gather_equal(local, group).sum(dim=0)
    return totals[0] / totals[1]


def _all_gather_equal(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Every rank's ``x`` (same shape on all), stacked in rank order.

    The one collective of this module: for a few values gloo's all-gather takes
    about half the time of its all-reduce, and the sum in rank order comes out
    the same on every rank."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.stack(parts)
