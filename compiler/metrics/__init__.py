"""How well a model does on labelled samples: what the evaluations and the command line report.

A metric is a callable ``(outputs, targets) -> (sum, count)`` (:mod:`.base`); :data:`METRICS` holds
the shipped ones by name (:mod:`.tasks`). Needs torch alone, so the library scores models without
the example models' data dependencies (scikit-learn).
"""

from __future__ import annotations

from typing import Callable

import torch

from ...passes.errors import UsageError
from .base import Metric, MetricLike, as_metric, score
from .tasks import (
    MEAN_IOU,
    MEAN_SQUARED_ERROR,
    NEXT_TOKEN_ACCURACY,
    PERPLEXITY,
    PIXEL_ACCURACY,
    TOP1_ACCURACY,
)

METRICS: dict[str, Metric] = {metric.name: metric for metric in (
    TOP1_ACCURACY, NEXT_TOKEN_ACCURACY, PERPLEXITY, PIXEL_ACCURACY, MEAN_IOU, MEAN_SQUARED_ERROR)}
"""The shipped metrics by name, the default (top-1 accuracy) first."""


def metric(name: str) -> Metric:
    """The shipped metric called ``name``."""
    if name not in METRICS:
        raise UsageError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    return METRICS[name]


def accuracy(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 256) -> float:
    """Fraction of samples whose largest logit is their label (:data:`TOP1_ACCURACY`).

    ``run`` maps a batch to logits: a model (put in eval mode first) or any callable,
    such as an ONNX Runtime session wrapped by ``xbar.compiler.onnx.runtime.onnx_runner``.
    """
    return score(run, x, y, TOP1_ACCURACY, batch_size)


__all__ = ["METRICS", "Metric", "MetricLike", "accuracy", "as_metric", "metric", "score"]
