"""Statistics of the global batch when a step's batch is split over torch.distributed ranks.

Inside ``across_ranks(group)`` the helpers here see the batch every rank holds
at this step as one batch, the concatenation of the ranks' local batches in rank
order (what a single process given that batch would see), as SyncBatchNorm does
for its mean and variance. Outside it, or with ``group=None``, they compute
exactly what plain torch gives on the local tensor, so a single process pays
nothing and its results do not change by a bit.

Every rank must call the same helpers in the same order with a tensor (local
batches may differ in size, not in number): each is a collective.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor

_deferred: Optional[list[tuple[Tensor, Tensor, int, Callable[[Tensor], Tensor]]]] = None
"""The terms :func:`fraction_term` deferred in the innermost :func:`terms_after_backward` block, or None."""

_group: Optional[dist.ProcessGroup] = None
"""The group of the innermost active ``across_ranks`` block. A plain module global, not a ContextVar:
torch.compile traces a global (and guards on it) but cannot trace ``ContextVar.get``."""


@contextlib.contextmanager
def across_ranks(group: Optional[dist.ProcessGroup]) -> Iterator[None]:
    """Take batch statistics over ``group``'s ranks (a torch.distributed process group) inside the block.

    The setting is process-wide, as a process group is: one block at a time per process.
    """
    global _group
    outer, _group = _group, group
    try:
        yield
    finally:
        _group = outer


def active_group() -> Optional[dist.ProcessGroup]:
    """The process group statistics are taken over, or None (this process alone)."""
    return _group


def std(x: Tensor) -> Tensor:
    """Unbiased std of all values of the global batch.

    Each rank contributes (count, mean, sum of squared deviations) of its values,
    computed as ``x.std()`` computes them, combined in float64 by Chan's parallel
    rule, so it is as accurate as one pass over the concatenation.
    """
    group = active_group()
    if group is None:
        return x.std()
    count = x.numel()
    if count:
        x = x.detach()  # var and mean apart: on CPU torch.var_mean is several times slower than both
        local = torch.tensor([count, float(x.mean()), float(x.var(correction=0)) * count], dtype=torch.float64)
    else:
        local = torch.zeros(3, dtype=torch.float64)
    parts = _all_gather_equal(local, group)
    counts, means, squares = parts[:, 0], parts[:, 1], parts[:, 2]
    total = counts.sum()
    global_mean = (counts * means).sum() / total
    squares = squares.sum() + (counts * (means - global_mean) ** 2).sum()
    return (squares / (total - 1)).sqrt().to(x.dtype)


def fraction(count: Tensor, numel: int) -> Tensor:
    """``count / numel`` where both are summed over the global batch (e.g. the fraction of unclipped values)."""
    group = active_group()
    if group is None:
        return count / numel
    return _fractions(count.detach().reshape(1), [numel], group)[0].to(count.dtype)


def fraction_term(param: Tensor, count: Tensor, numel: int, term: Callable[[Tensor], Tensor]) -> Optional[Tensor]:
    """A gradient term of ``param`` that depends on ``count / numel`` of the global batch: ``term(fraction)``.

    For the range gradients' decay and output-clipping terms, which depend on the
    parameter and a fraction, not on the incoming gradient. Computed now, or, inside
    :func:`terms_after_backward` (across ranks, ``param`` a leaf), deferred: then it is
    added to ``param.grad`` when the block ends and this returns None.
    """
    if _deferred is None or active_group() is None or not param.is_leaf:
        return term(fraction(count, numel))
    _deferred.append((param, count.detach().reshape(()), numel, term))
    return None


@contextlib.contextmanager
def terms_after_backward() -> Iterator[None]:
    """Take the fractions of every :func:`fraction_term` of the block in one collective when it ends.

    Across ranks each term's fraction is a collective; during a backward pass
    that is one per input range and ADC, a sync point each. Inside this block
    (around ``loss.backward()`` of data-parallel training) the terms wait until the
    backward is done, then one collective takes all their fractions and each term
    is added to its parameter's ``.grad``. DistributedDataParallel has averaged
    the rest of the gradient by then and every rank adds the same term, so the
    gradients equal the per-term ones up to float rounding.
    """
    global _deferred
    outer, _deferred = _deferred, []
    try:
        yield
        pending, group = _deferred, active_group()
    finally:
        _deferred = outer
    if not pending:
        return
    fractions = _fractions(torch.stack([count for _, count, _, _ in pending]), [n for _, _, n, _ in pending], group)
    with torch.no_grad():
        for (param, count, _, term), value in zip(pending, fractions):
            added = term(value.to(count.dtype)).reshape(param.shape)
            param.grad = added if param.grad is None else param.grad.add_(added)


def amax(value: float) -> float:
    """The largest of the ranks' ``value``."""
    group = active_group()
    if group is None:
        return value
    return float(_all_gather_equal(torch.tensor([value], dtype=torch.float64), group).max())


def concatenated(x: Tensor) -> Tensor:
    """The ranks' flattened ``x`` concatenated in rank order (local sizes may differ)."""
    group = active_group()
    x = x.flatten()
    if group is None:
        return x
    sizes = _all_gather_equal(torch.tensor([x.numel()]), group)[:, 0].tolist()
    padded = torch.cat([x, x.new_zeros(max(sizes) - x.numel())])
    return torch.cat([part[:size] for part, size in zip(_all_gather_equal(padded, group), sizes)])


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
