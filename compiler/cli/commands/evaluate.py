"""``xbar evaluate``: compile a model as ``xbar compile`` does, then measure its metric (top-1
accuracy by default, ``--metric``) on noisy, drifting devices, programmed once per seed and read
at each time.

Checked before any work: the plot path and image type, the hardware config, the device model
(and that it can be read at every time), the model, its labelled data, that the metric fits and that
the calibration data holds the ``--recalibrate`` batches.

``--recalibrate N`` also recalibrates every drifted model on the first N batches of the calibration
data (:func:`xbar.recalibrate`) and shows its metric beside the drift compensation's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from ....passes.errors import UsageError
from ...chip.description import Chip
from ...chip.record import mapping_record
from ...chip.shipped import chip_named
from ...chip.target import check_capacity, chip_config, map_converted
from ...config.hardware import HardwareConfig
from ...devices.base import BaseNoiseModel
from ...devices.evaluation import OutNoiseAtRead, accuracy_over_time, check_times
from ...devices.registry import noise_model
from ...files import check_writable, reporting_write_errors
from ...pipeline.distributed import group_in_use, rank_share
from ...pipeline.stages import convert
from ..console import is_reporting_process, say, stderr_console, stdout_console
from ..data import Dataset
from ..evaluation_view import accuracy_table, plot_accuracy
from ..figures import image_type
from ..inputs import positional
from ..inspection_view import describe_config
from ..report import calibration_note, mapping_note, progress_bar
from ..steps import compile_steps, hardware_config, load_inputs, read_config_file

COMPENSATIONS = {"global": "global", "per-column": "per_column", "global-exact-reference": "global_exact_reference",
                 "none": None}
"""--compensation -> what :func:`xbar.drift` takes."""
COMPENSATION_TEXT = {"global": "global drift compensation (one gain per array)",
                     "per-column": "per-column drift compensation (one gain per output column)",
                     "global-exact-reference": "global drift compensation against the exact reference (one gain "
                                               "per array)",
                     "none": "no drift compensation"}
OUT_NOISE_TEXT = {OutNoiseAtRead.EVERY_READ: "output noise at every read",
                  OutNoiseAtRead.TRAINING_ONLY: "reads without output noise"}


def run(args: argparse.Namespace) -> int:
    out, err = stdout_console(), stderr_console()
    plot_path = check_writable(Path(args.plot), "--plot") if args.plot else None
    kind = image_type(plot_path) if plot_path else None
    chip = chip_named(args.chip) if args.chip else None
    config = hardware_config(args) if chip is None else chip_config(hardware_config(args), chip)
    devices = device_model(args, config, chip)
    times = {time.label: time.seconds for time in args.times}
    check_times(devices, times)
    inputs = load_inputs(args, config, "--finetune" if args.finetune else None, "xbar evaluate")
    scoring = inputs.scoring
    recalibration_batches = recalibration_inputs(inputs.data, args.batch_size, args.recalibrate)
    fits = None if chip is None else (lambda prepared: check_capacity(convert(prepared), chip, args.chips))
    compiled = compile_steps(inputs, args, err, fits)
    mapping = None if chip is None else map_converted(compiled.converted, inputs.example, chip, args.chips)
    share = len(rank_share(args.seeds, group_in_use()))  # under torchrun the ranks share the seeds out
    with progress_bar(err) as progress:
        here = "" if share == args.seeds else f" ({share} seeds in this process)"
        task = progress.add_task(f"programming and reading: {args.seeds} seeds x {len(times)} times{here}",
                                 total=share * len(times))
        evaluation = accuracy_over_time(compiled.converted, devices, times, args.seeds, scoring.x, scoring.y,
                                        compensation=COMPENSATIONS[args.compensation], batch_size=args.batch_size,
                                        on_step=lambda: progress.advance(task), compile=args.compile,
                                        metric=scoring.metric, out_noise=OutNoiseAtRead(args.out_noise),
                                        recalibration_batches=recalibration_batches,
                                        recalibration=args.recalibration.replace("-", "_"))
    seeds = "1 programming seed" if args.seeds == 1 else f"{args.seeds} programming seeds"
    title = f"{inputs.source.name}: {scoring.metric.name} on {scoring.described}, {seeds}"
    split = scoring.split
    if plot_path is not None and is_reporting_process():
        with reporting_write_errors(plot_path, "--plot"):
            plot_accuracy(evaluation, plot_path, kind, title, split)
    if args.json:
        data = {"name": scoring.name, "split": split, "samples": len(scoring.y)}
        chip_data = {} if mapping is None else {"chip": chip.to_dict(), "mapping": mapping_record(mapping)}
        out.out(json.dumps({"model": inputs.source.name, "data": data, "hardware": config.to_dict(),
                            **evaluation.as_dict(), **chip_data}, indent=2, allow_nan=False), highlight=False)
    else:
        say(out, f"hardware: {describe_config(config.to_dict())}")
        say(out, calibration_note(compiled.calibration_batches, inputs.data, args.batch_size))
        if compiled.fine_tuning:
            say(out, compiled.fine_tuning)
        say(out, f"devices: {noise_text(evaluation.noise_model)}; {COMPENSATION_TEXT[args.compensation]}; "
                 f"{OUT_NOISE_TEXT[evaluation.out_noise]}")
        if recalibration_batches:
            say(out, f"recalibrated: {args.recalibration} on {len(recalibration_batches)} batches of up to "
                     f"{args.batch_size} calibration samples from {inputs.data.name}, at every time")
        say(out, title)
        say(out, accuracy_table(evaluation))
        if mapping is not None:
            say(out, mapping_note(mapping))
    if plot_path is not None:
        say(err, f"wrote {plot_path}")
    return 0


def recalibration_inputs(data: Optional[Dataset], batch_size: int, count: Optional[int]) -> list:
    """The first ``count`` batches of the calibration data, as the model's positional inputs (none without
    --recalibrate); refuses more batches than the data holds."""
    if count is None:
        return []
    held = 0 if data is None else len(data.batches(batch_size))
    if held == 0:
        raise UsageError("--recalibrate needs calibration data: pass --calib DATA")
    if count > held:
        raise UsageError(f"--recalibrate {count} asks for {count} batches of {batch_size}, but {data.name} holds "
                         f"{held}; pass --recalibrate {held} or fewer")
    return [positional(batch) for batch in data.batches(batch_size, count)]


def device_model(args: argparse.Namespace, config: HardwareConfig, chip: Optional[Chip] = None) -> BaseNoiseModel:
    """--noise, else the config file's [noise] section, else the chip's device model, else the PCM-like
    default; g_max (and g_min) the converter's."""
    section = read_config_file(Path(args.config)).noise if args.config else None
    where = f"--config {args.config}" if args.config else "--noise"
    name = args.noise if args.noise or section is not None or chip is None else chip.device_model
    return noise_model(name, section, config.converter.g_max, where, config.converter.g_min)


def noise_text(description: dict) -> str:
    """``{"model": "M", "parameters": {...}}`` as ``M(name=value, ...)``, numbers in their shortest form."""
    parameters = ", ".join(f"{name}={_value_text(value)}" for name, value in description["parameters"].items())
    return f"{description['model']}({parameters})"


def _value_text(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_value_text, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value_text(v)}" for k, v in value.items()) + "}"
    return str(value)
