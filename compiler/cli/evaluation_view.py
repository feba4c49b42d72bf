"""Show an :class:`~xbar.compiler.devices.evaluation.Evaluation` to people: a rich table of
its metric (accuracy by default) per time and a figure of the metric against time."""

from __future__ import annotations

import textwrap
from pathlib import Path

from rich.table import Table

from ..devices.evaluation import Evaluation
from .figures import pyplot, save_figure

TITLE_WIDTH = 0.95
"""The widest a title line may be, as a fraction of the figure's width."""


def accuracy_table(evaluation: Evaluation) -> Table:
    """One row per time (mean, std, min and max over the seeds), after the noise-free reference row; with
    recalibration, its mean and std beside."""
    text = evaluation.metric.text
    recalibrated = [f"recalibrated {column}" for column in ("mean", "std")] if evaluation.recalibrated else []
    table = Table()
    table.add_column("time after programming")
    table.add_column("seconds", justify="right")
    for column in ("mean", "std", "min", "max", *recalibrated):
        table.add_column(column, justify="right")
    table.add_row("ideal (converted, no noise)", "", text(evaluation.ideal), "", "", "", *[""] * len(recalibrated))
    for index, point in enumerate(evaluation.points):
        beside = evaluation.recalibrated[index] if recalibrated else None
        table.add_row(point.label, f"{point.seconds:g}", text(point.mean), text(point.std),
                      text(min(point.values)), text(max(point.values)),
                      *([text(beside.mean), text(beside.std)] if beside else []))
    return table


def plot_accuracy(evaluation: Evaluation, path: Path, kind: str, title: str, split: str) -> Path:
    """Save :func:`accuracy_figure` as ``kind``."""
    return save_figure(accuracy_figure(evaluation, title, split), path, kind)


def accuracy_figure(evaluation: Evaluation, title: str, split: str):
    """The metric's mean against time with a band of one std, and the noise-free model as a horizontal line;
    ``split`` ("test" or "calibration") names the samples on the metric's axis; the title is wrapped to fit.
    The time axis is logarithmic (symmetric-log, linear up to the first positive time, if 0 s is listed)."""
    scaled = evaluation.metric.axis_value
    seconds = [point.seconds for point in evaluation.points]
    mean = [scaled(point.mean) for point in evaluation.points]
    std = [scaled(point.std) for point in evaluation.points]
    figure, axes = pyplot().subplots(figsize=(7, 4.2), layout="constrained")
    axes.axhline(scaled(evaluation.ideal), color="tab:gray", linestyle="--", label="ideal (converted, no noise)")
    axes.fill_between(seconds, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                      color="tab:blue", alpha=0.2, label="± 1 std over seeds")
    axes.plot(seconds, mean, "o-", color="tab:blue", label=f"mean of {len(evaluation.seeds)} seeds")
    time_axis(axes, seconds, [point.label for point in evaluation.points])
    axes.set_ylabel(f"{evaluation.metric.axis_label} on the {split} samples")
    axes.legend(loc="best")
    fit_title(figure, figure.suptitle(title, fontsize="medium"))  # centred on the figure, not on the axes
    return figure


def fit_title(figure, text) -> None:
    """Wrap a title (a matplotlib Text) at spaces until each line fits within :data:`TITLE_WIDTH` of the figure."""
    renderer = figure.canvas.get_renderer()
    limit = TITLE_WIDTH * figure.bbox.width
    title, characters = text.get_text(), len(text.get_text())
    while (width := text.get_window_extent(renderer).width) > limit and characters > 1:
        characters = max(1, min(characters - 1, int(characters * limit / width)))
        text.set_text(textwrap.fill(title, characters))


def time_axis(axes, seconds: list[float], labels: list[str]) -> None:
    """A logarithmic time axis ticked at the times; symmetric-log (linear up to the first positive time)
    when 0 s is one of them, which a log axis cannot show."""
    positive = [s for s in seconds if s > 0]
    if len(positive) < len(seconds):
        axes.set_xscale("symlog", linthresh=min(positive, default=1.0))
    else:
        axes.set_xscale("log")
    axes.set_xticks(seconds, labels)
    axes.minorticks_off()
    axes.set_xlabel("time after programming")
