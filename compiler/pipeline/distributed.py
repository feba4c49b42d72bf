"""Calibration and fine-tuning over torch.distributed ranks: the group, the data shards, the lockstep.

xbar runs on PyTorch's own engine: a process group (gloo on CPU, nccl on GPU),
DistributedDataParallel for the gradients, DistributedSampler for the shards.
A step's global batch is the concatenation of the ranks' local batches in rank
order; the input ranges' statistics are taken over it
(:mod:`xbar.passes.numerics.global_batch`), so every rank ends with the same model, the
one a single process would get on the global batches.
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from ...passes.errors import UserError


def group_in_use(process_group: Optional[dist.ProcessGroup] = None) -> Optional[dist.ProcessGroup]:
    """``process_group``, else the default group when one is initialised; None when one process works alone."""
    if process_group is None:
        if not (dist.is_available() and dist.is_initialized()):
            return None
        process_group = dist.group.WORLD
    return process_group if dist.get_world_size(process_group) > 1 else None


def in_lockstep(items: Iterable, group: Optional[dist.ProcessGroup], what: str, *, at_once: bool = False) -> Iterator:
    """This rank's ``items``, one step at a time while every rank has one.

    The ranks agree that all have an item and that none failed to produce it,
    so an error on one rank (a bad batch) is raised on every rank, as that
    rank's message, instead of leaving the others waiting in a collective;
    ranks with different numbers of ``what`` are refused. They agree before
    each step, or, with ``at_once`` (items already in memory, such as a list of
    batches), once for all items, taken first: then the steps have no sync
    point of their own.
    """
    if group is None:
        yield from items
        return
    if at_once:
        taken, error = [], None
        try:
            taken = list(items)
        except Exception as exc:  # reported on every rank below
            error = exc
        failures, counts = _every_rank([error is not None, len(taken)], group).unbind(dim=1)
        _check_agreement(int(failures.max()), error, group, len(set(counts.tolist())) > 1, what)
        yield from taken
        return
    iterator = iter(items)
    while True:
        item, error = None, None
        try:
            item = next(iterator)
            status = 1
        except StopIteration:
            status = 0
        except Exception as exc:  # reported on every rank below
            status, error = 2, exc
        failed, some_have, some_done = _every_rank([status == 2, status == 1, status == 0], group).amax(dim=0).tolist()
        _check_agreement(failed, error, group, some_have and some_done, what)
        if not some_have:
            return
        yield item


def _every_rank(values: list[int], group: dist.ProcessGroup) -> Tensor:
    """Every rank's ``values``, one row per rank (an all-gather: for a few values gloo's beats its all-reduce)."""
    local = torch.tensor(values, dtype=torch.int64)
    every_rank = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(every_rank, local, group=group)
    return torch.stack(every_rank)


def _check_agreement(failed: int, error: Optional[Exception], group: dist.ProcessGroup, uneven: bool,
                     what: str) -> None:
    """Raise the first failing rank's error on every rank, or refuse ranks with different numbers of ``what``."""
    if failed:
        raise _first_error(error, group)
    if uneven:
        raise UserError(f"the ranks were given different numbers of {what}: give every rank the same number")


def _first_error(error: Optional[Exception], group: dist.ProcessGroup) -> Exception:
    """The error of the lowest failing rank, raised on every rank (this rank's own if it failed)."""
    messages = [None] * dist.get_world_size(group)
    dist.all_gather_object(messages, None if error is None else str(error).strip().splitlines()[0], group=group)
    if error is not None:
        return error
    rank, message = next((rank, m) for rank, m in enumerate(messages) if m is not None)
    return UserError(f"rank {rank}: {message}")


def local_share(batch: Tensor, group: Optional[dist.ProcessGroup]) -> Tensor:
    """This rank's share of a global ``batch``: the ranks' shares, in rank order, concatenate to it."""
    if group is None:
        return batch
    world = dist.get_world_size(group)
    if len(batch) < world:
        raise UserError(f"a batch of {len(batch)} samples cannot be shared by {world} processes; "
                        f"use a batch size of at least {world}")
    return batch.tensor_split(world)[dist.get_rank(group)]


def rank_batches(samples: int, batch_size: int, seed: int, epoch: int, group: dist.ProcessGroup) -> list[Tensor]:
    """This rank's index batches for one epoch: a DistributedSampler shard, ``batch_size / world`` at a time.

    ``batch_size`` is the global batch. The sampler shuffles with ``seed + epoch``
    and pads the shards to equal length by repeating a few samples, so every rank
    runs the same number of equal-sized local batches (DDP's mean of the ranks'
    mean losses is then the global batch's mean loss).
    """
    world = dist.get_world_size(group)
    if batch_size % world:
        raise UserError(f"the batch size {batch_size} does not split evenly over {world} processes; "
                        f"choose a multiple of {world}")
    sampler = DistributedSampler(range(samples), num_replicas=world, rank=dist.get_rank(group), shuffle=True,
                                 seed=seed)
    sampler.set_epoch(epoch)
    return list(torch.tensor(list(sampler)).split(batch_size // world))


def rank_share(count: int, group: Optional[dist.ProcessGroup]) -> range:
    """This rank's indices of ``count`` independent tasks (e.g. programming seeds): every world-th one,
    from its rank; all of them for a single process."""
    if group is None:
        return range(count)
    return range(dist.get_rank(group), count, dist.get_world_size(group))


def gathered(results: dict, group: Optional[dist.ProcessGroup]) -> dict:
    """Every rank's ``results`` merged (keys are unique across ranks); ``results`` itself for a single process."""
    if group is None:
        return results
    every_rank = [None] * dist.get_world_size(group)
    dist.all_gather_object(every_rank, results, group=group)
    return {key: value for part in every_rank for key, value in part.items()}


def data_parallel(model: nn.Module, group: Optional[dist.ProcessGroup]) -> nn.Module:
    """``model`` in DistributedDataParallel over ``group`` (itself for a single process).

    DDP makes every rank start from rank 0's parameters and buffers; buffers are
    not re-sent each step: the only ones that change in training (the input
    ranges' init-from-data state) are updated from global statistics, so they
    stay equal on every rank.
    """
    if group is None:
        return model
    return DistributedDataParallel(model, process_group=group, forward_sync_buffers=False)



@contextlib.contextmanager
def process_group_from_environment() -> Iterator[None]:
    """The default process group from torchrun's environment (gloo for CPU tensors, nccl for CUDA ones
    when there is a GPU), destroyed on leaving."""
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()

