"""What ``xbar compile`` and ``xbar evaluate`` score a model on, and with which metric.

The samples: ``--test DATA`` (its test split if it is a built-in data set), else the test
split of the built-in data set that calibrates, else the labelled calibration samples
themselves, which the output names as such (an optimistic figure). The metric: ``--metric``,
else the zoo model's, else top-1 accuracy. A metric that does not fit the model's outputs or
the labels is refused before any work.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from ...passes.errors import DataError, MetricError
from ...passes.inputs import samples_at
from ..metrics import Metric, metric
from .data import Dataset
from .inputs import positional
from .model_loading import LoadedModel

DEFAULT_METRIC = "accuracy"


@dataclass(frozen=True)
class Scoring:
    """Labelled samples to score on, what they are, and the metric."""

    metric: Metric
    x: Tensor
    y: Tensor
    name: str
    split: str
    described: str

    @property
    def title(self) -> str:
        """The heading of the compile report's table: ``test accuracy on digits (450 samples)``."""
        if self.split == "calibration":
            return f"{self.metric.name} on {self.described} (the calibration set: an optimistic figure)"
        return f"test {self.metric.name} on {self.name} ({len(self.y)} samples)"


def chosen_metric(name: Optional[str], source: LoadedModel) -> Metric:
    """``--metric``, else the zoo model's, else top-1 accuracy."""
    return metric(name or source.metric or DEFAULT_METRIC)


def scoring_data(chosen: Metric, test: Optional[Dataset], data: Optional[Dataset]) -> Optional[Scoring]:
    """``--test`` data, else the calibration data set's test split, else its labelled samples; None without labels."""
    if test is not None:
        if test.test is not None:
            return _test_split(chosen, test)
        if test.labels is None:
            raise DataError(f"--test {test.name} has no labels: save the targets under 'y' beside the samples 'x'")
        return Scoring(chosen, test.samples, test.labels, test.name, "test",
                       f"the {len(test.labels)} labelled test samples of {test.name}")
    if data is None:
        return None
    if data.test is not None:
        return _test_split(chosen, data)
    if data.labels is None:
        return None
    return Scoring(chosen, data.samples, data.labels, data.name, "calibration",
                   f"the {len(data.labels)} labelled calibration samples of {data.name}")


def _test_split(chosen: Metric, data: Dataset) -> Scoring:
    x, y = data.test
    return Scoring(chosen, x, y, data.name, "test", f"the {data.name} test split ({len(y)} samples)")


@torch.no_grad()
def check_metric_fits(source: LoadedModel, scoring: Scoring) -> None:
    """Before any work: score the original model's output on the first two samples, repeated once per label,
    against every label, so a metric that does not fit the outputs' shape or a label out of range is refused
    without running the model on every sample."""
    outputs = source.run(*positional(samples_at(scoring.x, slice(0, 2))))
    repeated = outputs[:1].expand(len(scoring.y), *outputs.shape[1:])
    try:
        scoring.metric(repeated, scoring.y)
    except MetricError as exc:
        raise MetricError(f"{source.name} on {scoring.name}: {exc} (--metric)") from exc
