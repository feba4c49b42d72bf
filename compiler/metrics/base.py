"""What a metric is, and scoring a model with one over labelled samples in batches.

A metric maps one batch of outputs and targets to ``(sum, count)``, tensors that add up over
batches (scalars, or per-class vectors where the metric needs them); its ``finish`` turns the
totals into one number (by default ``sum / count``). Batching never changes the figure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Union

import torch
from torch import Tensor

from ...passes.errors import MetricError

Totals = tuple[Tensor, Tensor]


def ratio(total: Tensor, count: Tensor) -> float:
    """``sum / count`` over every element: the mean of what was summed."""
    return total.sum().item() / count.sum().item()


def exp_ratio(total: Tensor, count: Tensor) -> float:
    """``exp(sum / count)``: perplexity from a summed negative log-likelihood and a token count."""
    return math.exp(ratio(total, count))


@dataclass(frozen=True)
class Metric:
    """A named metric: ``measure(outputs, targets) -> (sum, count)`` per batch, and how the totals finish.

    ``percent`` says the figure is a fraction shown as a percentage; ``plural`` names the per-seed
    figures in JSON.
    """

    name: str
    measure: Callable[[Tensor, Tensor], Totals]
    finish: Callable[[Tensor, Tensor], float] = ratio
    percent: bool = True
    plural: str = ""

    def __call__(self, outputs: Tensor, targets: Tensor) -> Totals:
        return self.measure(outputs, targets)

    @property
    def key(self) -> str:
        """The name as a JSON key: ``next-token-accuracy`` -> ``next_token_accuracy``."""
        return self.name.replace("-", "_")

    @property
    def per_seed_key(self) -> str:
        return self.plural or f"{self.key}_values"

    def text(self, value: float) -> str:
        """The figure as tables show it: ``98.22%`` for a fraction, four significant digits otherwise (``8.810``)."""
        return f"{value:.2%}" if self.percent else f"{value:#.4g}"

    def axis_value(self, value: float) -> float:
        """The figure on a plot's axis: percent for a fraction."""
        return 100 * value if self.percent else value

    @property
    def axis_label(self) -> str:
        return f"{self.name} (%)" if self.percent else self.name


MetricLike = Union[Metric, Callable[[Tensor, Tensor], Totals]]


def as_metric(metric: MetricLike) -> Metric:
    """A :class:`Metric` as is; any other ``(outputs, targets) -> (sum, count)`` callable named after
    itself, finishing as ``sum / count`` and shown as a plain number."""
    if isinstance(metric, Metric):
        return metric
    return Metric(getattr(metric, "__name__", type(metric).__name__), metric, percent=False)


@torch.no_grad()
def score(run: Callable[[Tensor], Tensor], x: Tensor, y: Tensor, metric: MetricLike,
          batch_size: int = 256) -> float:
    """``metric`` of ``run`` on the samples ``x`` with targets ``y``, ``batch_size`` samples at a time.

    ``x`` is one tensor, or a tuple of the positional inputs of a model of several (each sample along
    dimension 0 of every one). ``run`` maps a batch to outputs: a model (put in eval mode first) or any
    callable, such as an ONNX Runtime session wrapped by ``xbar.compiler.onnx.runtime.onnx_runner``.
    """
    metric = as_metric(metric)
    if isinstance(run, torch.nn.Module):
        run.eval()
    inputs = x if isinstance(x, tuple) else (x,)
    totals = [metric(run(*(part[i : i + batch_size] for part in inputs)), y[i : i + batch_size])
              for i in range(0, len(y), batch_size)]
    total, count = (torch.stack(parts).sum(dim=0) for parts in zip(*totals))
    return metric.finish(total, count)


def check_shapes(name: str, takes: str, fits: bool, outputs: Tensor, targets: Tensor) -> None:
    """Refuse outputs and targets that ``name`` cannot score, saying what it takes."""
    if not fits:
        raise MetricError(f"the metric {name!r} takes {takes}; got outputs of shape {list(outputs.shape)} and "
                          f"targets of shape {list(targets.shape)}: choose the metric of the model's task")


def check_classes(name: str, targets: Tensor, classes: int) -> None:
    """Refuse targets that are not class indices into ``classes`` outputs."""
    if targets.is_floating_point() or targets.is_complex():
        raise MetricError(f"the metric {name!r} takes integer class indices as targets, got {targets.dtype}")
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= classes):
        raise MetricError(f"the metric {name!r}: the targets run from {int(targets.min())} to "
                          f"{int(targets.max())}, but the outputs have {classes} classes (0 to {classes - 1})")
