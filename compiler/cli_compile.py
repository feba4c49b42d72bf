"""``xbar compile``: load a model, prepare, calibrate (and fine-tune), convert, export ONNX, report.

Every check that needs no computation runs first (the output paths, the
hardware config, the data, the example input against the model), so a mistake
is reported before minutes of work, and nothing is written unless everything worked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, Optional

import torch

from ..passes.capture import CAPTURE_METHODS, CaptureError, first_line
from .cli_arguments import BUILTIN_DATA, UsageError, parse_overrides
from .cli_console import quiet_loggers, say, stderr_console, stdout_console
from .cli_report import (
    accuracy_report,
    calibrate_ranges,
    calibration_note,
    fine_tune_model,
    output_shape,
    print_layers,
)
from .config import ConfigError, HardwareConfig
from .data import DataError, Dataset, load_dataset
from .export import export_onnx
from .files import check_writable, reporting_write_errors
from .graph_archive import save_graph
from .inspection_view import count_text, describe_config
from .layer_summary import summarize_converted
from .model_loading import LoadedModel, ModelError, load_model, model_name
from .pipeline import convert, prepare
from .presets import DEFAULT_PRESET, preset_config

"""Loggers that print a failed capture's graph; the CaptureError says it in one line."""


def run(args: argparse.Namespace) -> int:
    out, err = stdout_console(), stderr_console()
    output = check_writable(Path(args.output or default_output_name(args.weights, args.model)), "-o")
    graph_path = check_writable(Path(args.save_graph), "--save-graph") if args.save_graph else None
    config = hardware_config(args)
    source = load_model(args.model, args.weights)
    dataset = args.calib or source.dataset
    data = load_dataset(dataset) if dataset else None
    if args.finetune and (data is None or data.labels is None):
        raise UsageError(f"--finetune needs labelled data: --calib {' or '.join(BUILTIN_DATA)}, or a .npz / .pt "
                         "file with the class indices under 'y'")
    example = example_input(args.input_shape, source, data)
    check_input_fits(source, example)
    if args.finetune:
        check_labels_fit(source, data)
    prepared = prepare_model(source, example, config, args)
    limit = config.pre_post.input_range.init_from_data if args.calib_batches is None else args.calib_batches
    calibrated = calibrate_model(prepared, data, args.batch_size, limit, err, args.calib_method)
    tuned = fine_tune_model(prepared, data, args.finetune, args.batch_size, err) if args.finetune else None
    converted = convert(prepared)
    with err.status(f"exporting ONNX to {output}"), quiet_loggers("torch.onnx"), reporting_write_errors(output, "-o"):
        export_onnx(converted, (example,), output)
    if graph_path is not None:
        with reporting_write_errors(graph_path, "--save-graph"):
            save_graph(converted, graph_path)
    layers = summarize_converted(converted)
    print_layers(out, layers, f"{source.name}: {count_text(layers)}")
    say(out, f"hardware: {describe_config(config.to_dict())}")
    say(out, calibration_note(calibrated, data, args.batch_size))
    if tuned:
        say(out, tuned)
    if data is not None and data.test is not None:
        say(out, accuracy_report(source, converted, output, data, args.batch_size))
    say(out, f"wrote {output}" + (f" and {graph_path}" if graph_path else ""))
    return 0


def default_output_name(weights: Optional[str], spec: str) -> str:
    """``<weights stem>.onnx`` when weights are given, else ``<model file stem or zoo name>.onnx``."""
    return f"{Path(weights).stem if weights else model_name(spec)}.onnx"


def hardware_config(args: argparse.Namespace) -> HardwareConfig:
    """The preset, config file or default preset, with the --set overrides applied."""
    if args.config:
        base = read_config_file(Path(args.config))
    else:
        base = preset_config(args.preset or DEFAULT_PRESET)
    return base.with_overrides(parse_overrides(args.set)) if args.set else base


def read_config_file(path: Path) -> HardwareConfig:
    """A HardwareConfig from a TOML or JSON file shaped like ``HardwareConfig.to_dict()``."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    if path.suffix not in (".toml", ".json"):
        raise ConfigError(f"--config {path}: use a .toml or .json file")
    parse, decode_error = _toml_reader() if path.suffix == ".toml" else (json.loads, json.JSONDecodeError)
    try:
        data = parse(path.read_text())
    except decode_error as exc:
        raise ConfigError(f"--config {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    try:
        return HardwareConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from exc


def _toml_reader() -> tuple[Callable, type]:
    try:
        import tomllib  # lazy: Python 3.10 has none, and only TOML configs need it
    except ModuleNotFoundError:
        raise ConfigError("TOML config files need Python 3.11 or later (tomllib); use a .json file") from None
    return tomllib.loads, tomllib.TOMLDecodeError


def example_input(shape: Optional[tuple[int, ...]], source: LoadedModel, data: Optional[Dataset]) -> torch.Tensor:
    """One example input: a calibration sample, else random data of --input-shape or the model's shape."""
    if data is not None:
        if shape is not None and tuple(shape[1:]) != data.sample_shape:
            raise UsageError(f"--input-shape {','.join(map(str, shape))} does not match the samples of "
                             f"{data.name}, shaped {list(data.sample_shape)}")
        return data.samples[:1]
    shape = shape or source.input_shape
    if shape is None:
        raise UsageError("xbar cannot tell the input shape of this model: give --input-shape (e.g. 1,3,32,32) "
                         "or --calib DATA")
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def check_input_fits(source: LoadedModel, example: torch.Tensor) -> None:
    """Run the original model once (at batch 2, as captures do), so a wrong input shape is reported
    before any work."""
    try:
        with torch.no_grad():
            source.run(example.expand(2, *example.shape[1:]))
    except Exception as exc:  # whatever the user's model raises on a wrong shape
        raise ModelError(f"{source.name} does not accept an input of shape {list(example.shape)}: "
                         f"{first_line(exc)}; check --input-shape or --calib") from exc


def check_labels_fit(source: LoadedModel, data: Dataset) -> None:
    """Before any work: --finetune needs a classifier whose classes the labels index."""
    shape = output_shape(source, data.samples)
    if len(shape) != 2:
        raise ModelError(f"--finetune needs a classifier: {source.name} outputs shape {shape}, "
                         "not [batch, classes]")
    low, high = int(data.labels.min()), int(data.labels.max())
    if low < 0 or high >= shape[1]:
        raise DataError(f"--finetune: the labels of {data.name} run from {low} to {high}, but {source.name} has "
                        f"{shape[1]} classes (0 to {shape[1] - 1}); give class indices")


def prepare_model(source: LoadedModel, example: torch.Tensor, config: HardwareConfig, args: argparse.Namespace):
    """``prepare`` with the command line's options; a capture failure's hint names the other ``--capture``."""
    try:
        return prepare(source.model, (example,), config, include=args.include, exclude=args.exclude,
                       keep_first_last_digital=args.keep_first_last_digital, capture_method=args.capture)
    except CaptureError as exc:
        other = next(method for method in CAPTURE_METHODS if method != args.capture)
        raise CaptureError(first_line(exc).replace(f"capture_method={other!r}", f"--capture {other}")) from exc


def calibrate_model(prepared, data: Optional[Dataset], batch_size: int, limit: int, console,
                    method: str) -> int:
    """Calibrate on up to ``limit`` batches of ``data`` (none: 0); a batch the model rejects is a DataError."""
    if data is None or limit == 0:
        return 0
    batches = data.batches(batch_size, limit)
    try:
        return calibrate_ranges(prepared, data, batches, console, method)
    except RuntimeError as exc:
        raise DataError(f"calibration batch of shape {list(batches[0].shape)} from {data.name} does not fit "
                        f"the model: {first_line(exc)}; check --calib") from exc
