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
from typing import Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor

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
        variance, mean = torch.var_mean(x.detach(), correction=0)
        local = torch.tensor([count, float(mean), float(variance) * count], dtype=torch.float64)
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
    both = torch.stack([count.detach().double().reshape(()), count.new_tensor(float(numel), dtype=torch.float64)])
    dist.all_reduce(both, group=group)
    return (both[0] / both[1]).to(count.dtype)


def mean(x: Tensor) -> Tensor:
    """Mean of all values of the global batch."""
    group = active_group()
    if group is None:
        return x.mean()
    return fraction(x.sum(), x.numel())


def amax(value: float) -> float:
    """The largest of the ranks' ``value``."""
    group = active_group()
    if group is None:
        return value
    result = torch.tensor(value, dtype=torch.float64)
    dist.all_reduce(result, op=dist.ReduceOp.MAX, group=group)
    return float(result)


def concatenated(x: Tensor) -> Tensor:
    """The ranks' flattened ``x`` concatenated in rank order (local sizes may differ)."""
    group = active_group()
    x = x.flatten()
    if group is None:
        return x
    sizes = _all_gather_equal(torch.tensor([x.numel()]), group)[:, 0].tolist()
    padded = torch.cat([x, x.new_zeros(max(sizes) - x.numel())])
    return torch.cat([part[:size] for part, size in zip(_all_gather_equal(padded, group), sizes)])


def _all_gather_equal(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Every rank's ``x`` (same shape on all), stacked in rank order."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, x.contiguous(), group=group)
    return torch.stack(parts)
