"""Fine-tune a prepared model: its learned input ranges and its weights, together.

The recipe that brings every 8-bit zoo model within 0.5 points of its original
accuracy (``benchmarks/bench_accuracy.py``): Adam with two parameter groups,
the input ranges at a high learning rate and every other parameter at a low
one, both annealed to 0 on a cosine over all steps, shuffled batches, a
classification loss. Calibrate first: while a range is still initialising from
data, each training batch replaces it with the running average.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, fx

from ...passes.errors import ConfigError, DataError, InputsError
from ...passes.inputs import positional_inputs, sample_count, samples_at, tensors_of
from ...passes.numerics.global_batch import BatchStatistics, shared_by
from ...passes.numerics.input_range import InputRange
from ...passes.numerics.weight_constraints import constrained_arrays
from .compiled import maybe_compiled
from .distributed import data_parallel, group_in_use, rank_batches


@dataclass(frozen=True)
class FineTuning:
    """The recipe's settings; the seed fixes the batch order and the training noise."""

    epochs: int = 5
    range_lr: float = 3e-2
    weight_lr: float = 3e-4
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"fine-tuning needs epochs >= 1 and batch_size >= 1, got {self.epochs}, "
                             f"{self.batch_size}")

    def steps(self, samples: int) -> int:
        return self.epochs * math.ceil(samples / self.batch_size)

    def __str__(self) -> str:
        epochs = "1 epoch" if self.epochs == 1 else f"{self.epochs} epochs"
        return (f"Adam, ranges lr {self.range_lr:g}, other parameters lr {self.weight_lr:g}, cosine to 0 over "
                f"{epochs}, batch {self.batch_size}")


HWA_FINE_TUNING = FineTuning(epochs=20, weight_lr=1e-3)
"""The recipe for hardware-aware fine-tuning (training noise in the config, e.g. ``HWA_TRAINING_NOISE``):
20 epochs (the default's 5 times four) at a weight learning rate 3x higher, so the weights can move
to where noise hurts less; chosen on a validation part of the digits training split
(``python -m benchmarks.bench_hwa --choose``)."""


def refuse_non_finite(data, what: str) -> None:
    """:class:`DataError` naming the first sample of ``data`` (a tensor or a nest of them) with NaN or
    infinity (one would turn every weight and range into NaN), as calibration refuses such a batch."""
    for tensor in tensors_of(data):
        if not tensor.is_floating_point() or torch.isfinite(tensor).all():
            continue
        first = int((~torch.isfinite(tensor)).reshape(len(tensor), -1).any(dim=1).nonzero()[0, 0])
        raise DataError(f"fine_tune {what}: sample {first} holds NaN or infinite values; remove them from the data")


def next_token_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """A language model's loss: cross-entropy of [batch, sequence, vocabulary] logits against [batch, sequence]
    next tokens, averaged over every token."""
    return F.cross_entropy(outputs.flatten(0, 1), targets.flatten())


def fine_tune(
    prepared: fx.GraphModule,
    inputs,
    targets: Tensor,
    recipe: FineTuning = FineTuning(),
    loss: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    on_step: Optional[Callable[[float], None]] = None,
    process_group: Optional[torch.distributed.ProcessGroup] = None,
    compile: bool = False,
) -> fx.GraphModule:
    """Train ``prepared`` on ``(inputs, targets)`` with ``recipe``; returns it in eval mode.

    ``inputs`` holds every sample along dimension 0: one tensor for a model of one input, a tuple
    of the positional inputs, or a dict keyed by ``forward``'s parameter names (a dict a one-input
    model reads as such is that input; :mod:`xbar.passes.inputs`); ``targets`` is separate, one
    per sample.

    ``loss(outputs, targets)`` is cross-entropy by default, which fits a classifier ([batch, classes] logits,
    [batch] class indices). Other tasks pass their own: a language model's [batch, sequence, vocabulary] logits
    against [batch, sequence] next tokens, :func:`next_token_cross_entropy`;
    a segmentation model's [batch, classes, H, W] scores against [batch, H, W] labels take ``F.cross_entropy``
    as it is; regression takes ``F.mse_loss``. Score the result with the matching metric of
    :data:`xbar.compiler.metrics.METRICS` (perplexity, mean-iou, mse).

    ``on_step`` receives each step's loss (for progress reports). The training
    noise the prepared model's config sets (``modifier``, ``forward.out_noise``,
    ``forward.w_noise``) acts in every step, drawn from torch's generator seeded
    with ``recipe.seed`` inside :func:`torch.random.fork_rng`: the same seed gives
    the same result, and the caller's random state is left as it was.
    Noise and bound management (``forward.noise_management``, ``forward.bound_management``) act in every
    step as in the converted arrays, with aihwkit's torch-tile gradients
    (:mod:`xbar.passes.numerics.managed_training`).
    After every optimiser step the config's ``clip`` and ``remap`` constrain the analog weights
    (:mod:`xbar.passes.numerics.weight_constraints`), as aihwkit's optimiser does.
    ``compile=True`` runs forward and backward through ``torch.compile``
    (:mod:`xbar.compiler.pipeline.compiled`).

    In a torch.distributed process group (``process_group``, else the default
    group when one is initialised) every rank passes the whole data set; the
    model is wrapped in DistributedDataParallel and each rank trains on its
    DistributedSampler shard, ``recipe.batch_size`` being the global batch. The
    input ranges' statistics are the global batch's, so every rank ends with the
    same parameters, those of one process trained on the global batches (the
    ranks' local batches concatenated in rank order). ``on_step`` gets this
    rank's loss.
    """
    inputs = positional_inputs(prepared, inputs, "fine_tune inputs")
    samples = sample_count(inputs, "fine_tune inputs")
    if samples != len(targets):
        raise InputsError(f"fine_tune got {samples} inputs but {len(targets)} targets: give one target per input")
    for what, data in (("inputs", inputs), ("targets", targets)):
        refuse_non_finite(data, what)
    modules = [m for m in prepared.modules() if isinstance(m, InputRange)]
    ranges = {id(m.value): m.value for m in modules if isinstance(m.value, torch.nn.Parameter)}
    others = [p for p in prepared.parameters() if id(p) not in ranges]
    optimizer = torch.optim.Adam([{"params": list(ranges.values()), "lr": recipe.range_lr},
                                  {"params": others, "lr": recipe.weight_lr}])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, recipe.steps(len(targets)))
    generator = torch.Generator().manual_seed(recipe.seed)
    group = group_in_use(process_group)
    model = data_parallel(prepared.train(), group)
    run = maybe_compiled(model, compile, group)
    constrained = constrained_arrays(prepared)  # clip and remap after every step (aihwkit's post_update_step)
    with torch.random.fork_rng(devices=[]), shared_by(modules, BatchStatistics(group)) as statistics:
        torch.manual_seed(recipe.seed)
        for epoch in range(recipe.epochs):
            order = (torch.randperm(len(targets), generator=generator).split(recipe.batch_size) if group is None
                     else rank_batches(len(targets), recipe.batch_size, recipe.seed, epoch, group))
            for index in order:
                value = loss(run(*samples_at(inputs, index)), targets[index])
                optimizer.zero_grad()
                with statistics.terms_after_backward():  # across ranks: one collective for the ranges' terms
                    value.backward()
                optimizer.step()
                for array in constrained:
                    array.apply()
                schedule.step()
                if on_step is not None:
                    on_step(float(value.detach()))
    return prepared.eval()
