"""What ``xbar compile``, ``xbar evaluate`` and ``xbar inspect`` show: progress bars,
one-line notes, the table of the metric (test accuracy by default) and the layer tables."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Iterable, Iterator, Optional

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ...passes.inputs import samples_at
from ...passes.numerics.calibration import CalibrationMethod
from ...passes.numerics.training_noise import TrainingNoise
from ..chip.placement import Mapping
from ..metrics import score
from ..pipeline.finetune import HWA_FINE_TUNING, FineTuning, fine_tune, next_token_cross_entropy
from ..pipeline.stages import calibrate
from .data import Dataset
from .inputs import positional
from .model_loading import LoadedModel
from .scoring import Scoring


def progress_bar(console: Console, *extra_columns) -> Progress:
    """A progress bar on ``console``: what runs, the bar, done / total, time elapsed, then ``extra_columns``."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    *extra_columns, console=console)


def calibrate_ranges(prepared, data: Dataset, batches: list[torch.Tensor], console: Console,
                     method: str = CalibrationMethod.INIT_FROM_DATA.value, compile: bool = False) -> int:
    """Set the input ranges from ``batches`` of ``data`` with ``method``, with a progress bar; returns the count."""
    with progress_bar(console) as progress:
        task = progress.add_task(f"calibrating input ranges on {data.name}", total=len(batches))
        return calibrate(prepared, _advancing(batches, progress, task), method, compile=compile)


def fine_tune_model(prepared, data: Dataset, epochs: int, batch_size: int, console: Console,
                    compile: bool = False, per_token: bool = False) -> str:
    """Fine-tune ``prepared`` on the labelled samples, with a progress bar; returns a one-line note.

    With training noise in the config, the learning rates are those of ``HWA_FINE_TUNING``. ``per_token``:
    a language model's [batch, sequence, vocabulary] logits against next tokens (the loss averages every
    token), else a classifier's [batch, classes] logits against class indices.
    """
    noisy = any(isinstance(module, TrainingNoise) for module in prepared.modules())
    recipe = dataclasses.replace(HWA_FINE_TUNING if noisy else FineTuning(), epochs=epochs, batch_size=batch_size)
    with progress_bar(console, TextColumn("loss {task.fields[loss]:.3f}")) as progress:
        task = progress.add_task(f"fine-tuning on {data.name}", total=recipe.steps(len(data.labels)),
                                 loss=math.nan)
        fine_tune(prepared, data.samples, data.labels, recipe,
                  loss=next_token_cross_entropy if per_token else F.cross_entropy,
                  on_step=lambda loss: progress.update(task, advance=1, loss=loss), compile=compile)
    kind = "hardware-aware fine-tuned (training noise on)" if noisy else "fine-tuned"
    return f"{kind} on {len(data.labels)} labelled samples from {data.name}: {recipe}"


def _advancing(items: Iterable, progress: Progress, task) -> Iterator:
    for item in items:
        yield item
        progress.advance(task)


def calibration_note(batches: int, data: Optional[Dataset], batch_size: int) -> str:
    if batches == 0:
        hint = "pass --calib DATA" if data is None else "--calib-batches is 0"
        return f"input ranges not calibrated ({hint}): they keep pre_post.input_range.init_value"
    plural = "batch" if batches == 1 else "batches"
    return f"input ranges calibrated on {batches} {plural} of up to {batch_size} samples from {data.name}"


@torch.no_grad()
def output_shape(source: LoadedModel, samples) -> list[int]:
    """The original model's output shape on two samples (a classifier gives [2, classes]); ``samples`` is a
    tensor, or a tuple of the positional inputs."""
    return list(source.run(*positional(samples_at(samples, slice(0, 2)))).shape)


def metric_report(source: LoadedModel, converted, onnx_path: Path, scoring: Scoring, batch_size: int) -> Table:
    """The metric of the original, the converted PyTorch model and the ONNX file on the scoring samples,
    side by side."""
    from ..onnx.runtime import onnx_runner  # lazy: onnxruntime is slow to import and `xbar inspect` needs none

    runners = {
        "original (PyTorch)": source.run,
        "compiled (PyTorch)": converted,
        "compiled (ONNX Runtime)": onnx_runner(onnx_path),
    }
    table = Table(title=scoring.title, title_justify="left")
    figures = []
    for name, run in runners.items():
        table.add_column(name, justify="right", no_wrap=True)
        figures.append(scoring.metric.text(score(run, scoring.x, scoring.y, scoring.metric, batch_size)))
    table.add_row(*figures)
    return table




def mapping_note(mapping: Mapping) -> str:
    """One line on a chip mapping: arrays used, utilisation, latency, throughput and efficiency."""
    chip, cost = mapping.chip, mapping.cost
    chips = f"{mapping.chips} {chip.name} chips" if mapping.chips > 1 else chip.name
    replicated = sum(count > 1 for count in mapping.replicas.values())
    return (f"chip: {chips}: {mapping.arrays_used} of {mapping.chips * chip.arrays} arrays "
            f"({replicated} layer{'s' * (replicated != 1)} replicated), {mapping.utilisation:.0%} of the devices "
            f"hold weights; per inference {cost.latency_ns / 1e3:.3g} us layer by layer, "
            f"{cost.energy_pj / 1e6:.3g} uJ; pipelined {cost.inferences_per_s:.3g} inferences/s, "
            f"{cost.tops:.3g} TOPS, {cost.tops_per_watt:.3g} TOPS/W")
