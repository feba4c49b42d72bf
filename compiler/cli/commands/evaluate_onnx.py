"""``xbar evaluate FILE.onnx``: the metric of the exported file itself in ONNX Runtime; with ``--times`` or
``--seeds``, its target conductances re-programmed with a device model and read over time
(:mod:`xbar.compiler.onnx.evaluation`).

Every read adds the arrays' ``forward.out_noise`` as the PyTorch path does (``--out-noise every-read``, the
default; seed 0 for the file as it is, each (seed, time)'s own seed over time); ``--out-noise training-only``
reads without it.

Checked before any work: the file is xbar's and of a version this xbar reads, the data fit its inputs, and
for re-programming the file holds targets and a device model is known (``--noise``, else the device model of
the chip the file was compiled for).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ....passes.errors import UsageError
from ...devices.base import BaseNoiseModel
from ...devices.evaluation import OutNoiseAtRead, check_times
from ...devices.registry import NOISE_MODELS, noise_model
from ...files import check_writable, reporting_write_errors
from ...metrics import metric
from ...onnx.evaluation import (
    check_targets,
    evaluate_onnx,
    file_arrays,
    file_out_noise,
    onnx_accuracy_over_time,
    read_file,
)
from ...program_files.arrays import device_model_name
from ..console import say, stderr_console, stdout_console
from ..data import load_dataset
from ..evaluation_view import accuracy_table, plot_accuracy
from ..figures import image_type
from ..report import progress_bar
from ..scoring import DEFAULT_METRIC, Scoring, scoring_data
from .evaluate import COMPENSATION_TEXT, COMPENSATIONS, OUT_NOISE_TEXT, noise_text

DEFAULT_DATA = "digits"
"""The data scored on without --test: its test split, as `xbar evaluate` scores the digit classifiers."""


def run(args: argparse.Namespace) -> int:
    out, err = stdout_console(), stderr_console()
    reprogram = bool({"times", "seeds"} & getattr(args, "given", frozenset()))
    plot_path = check_writable(Path(args.plot), "--plot") if args.plot else None
    kind = image_type(plot_path) if plot_path else None
    model, where = read_file(args.model)
    scoring = _scoring(args)
    data = (scoring.x, scoring.y)
    name = Path(args.model).name
    out_noise = OutNoiseAtRead(args.out_noise)
    if not reprogram:
        value = evaluate_onnx(model, data, scoring.metric, batch_size=args.batch_size, out_noise=out_noise)
        read = file_out_noise(model, out_noise)
        if args.json:
            out.out(json.dumps({"model": name, "data": _data_record(scoring), "metric": scoring.metric.name,
                                scoring.metric.key: value, "out_noise_at_read": read.value}, indent=2,
                               allow_nan=False), highlight=False)
        else:
            say(out, f"{name} in ONNX Runtime ({_out_noise_text(read)}): {scoring.metric.name} on "
                     f"{scoring.described}: {scoring.metric.text(value)}")
        return 0
    check_targets(model, where)
    devices = file_device_model(args, model, where)
    times = {time.label: time.seconds for time in args.times}
    check_times(devices, times)
    with progress_bar(err) as progress:
        task = progress.add_task(f"programming and reading in ONNX Runtime: {args.seeds} seeds x {len(times)} "
                                 "times", total=args.seeds * len(times))
        evaluation = onnx_accuracy_over_time(model, devices, times, args.seeds, data,
                                             compensation=COMPENSATIONS[args.compensation],
                                             batch_size=args.batch_size, metric=scoring.metric,
                                             on_step=lambda: progress.advance(task), out_noise=out_noise)
    seeds = "1 programming seed" if args.seeds == 1 else f"{args.seeds} programming seeds"
    title = f"{name} in ONNX Runtime: {scoring.metric.name} on {scoring.described}, {seeds}"
    if plot_path is not None:
        with reporting_write_errors(plot_path, "--plot"):
            plot_accuracy(evaluation, plot_path, kind, title, scoring.split)
    if args.json:
        out.out(json.dumps({"model": name, "data": _data_record(scoring), **evaluation.as_dict()}, indent=2,
                           allow_nan=False), highlight=False)
    else:
        say(out, f"devices: {noise_text(evaluation.noise_model)}; {COMPENSATION_TEXT[args.compensation]}; "
                 f"{OUT_NOISE_TEXT[evaluation.out_noise]}")
        say(out, title)
        say(out, accuracy_table(evaluation))
    if plot_path is not None:
        say(err, f"wrote {plot_path}")
    return 0


def _out_noise_text(read: OutNoiseAtRead) -> str:
    return "output noise at every read, seed 0" if read is OutNoiseAtRead.EVERY_READ else OUT_NOISE_TEXT[read]


def _scoring(args: argparse.Namespace) -> Scoring:
    """--test DATA (its test split if built in), else the digits test split; --metric, else top-1 accuracy."""
    chosen = metric(args.metric or DEFAULT_METRIC)
    if args.test:
        return scoring_data(chosen, load_dataset(args.test), None)
    return scoring_data(chosen, None, load_dataset(DEFAULT_DATA))


def _data_record(scoring: Scoring) -> dict:
    return {"name": scoring.name, "split": scoring.split, "samples": len(scoring.y)}


def file_device_model(args: argparse.Namespace, model, where: str) -> BaseNoiseModel:
    """--noise, else the device model of the chip the file was compiled for; g_max (and g_min) the file's."""
    chip = next((json.loads(p.value) for p in model.metadata_props if p.key == "xbar.chip"), None)
    name = args.noise or device_model_name(None, chip)
    if name is None:
        raise UsageError(f"{where} names no device model (it was compiled without --chip): give --noise, one of "
                         f"{', '.join(NOISE_MODELS)}")
    arrays = file_arrays(model)
    if not arrays:
        raise UsageError(f"{where} has no crossbar arrays to program: evaluate it without --times / --seeds")
    first = arrays[0].attributes
    return noise_model(name, None, float(first["g_max"]), "--noise", float(first["g_min"]))
