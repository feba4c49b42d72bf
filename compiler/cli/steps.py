"""The steps ``xbar compile`` and ``xbar evaluate`` share: read the hardware config,
load and check the model and its data, then prepare, calibrate, fine-tune and convert.

:func:`load_inputs` runs every check that needs no computation (the config, the
model, the data, the example input against the model, the labels), so a mistake
is reported before minutes of work; :func:`compile_steps` does the work.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from rich.console import Console
from torch import fx

from ...passes.capture import CAPTURE_METHODS, first_line
from ...passes.errors import CaptureError, ConfigError, DataError, ModelError, UsageError
from ..config.hardware import HardwareConfig
from ..config.presets import DEFAULT_PRESET, preset_config
from ..pipeline.distributed import group_in_use, local_share
from ..pipeline.stages import convert, prepare
from .arguments import BUILTIN_DATA, parse_overrides
from .data import Dataset, load_dataset
from .model_loading import LoadedModel, load_model
from .preflight import check_config_file
from .report import calibrate_ranges, fine_tune_model, output_shape
from .scoring import Scoring, check_metric_fits, chosen_metric, scoring_data

NOISE_SECTION = "noise"
"""The config file's section for ``xbar evaluate``'s device model; the hardware config ignores it."""


@dataclass(frozen=True)
class ConfigFile:
    """A ``--config`` file: the hardware, and its ``[noise]`` section if it has one."""

    hardware: HardwareConfig
    noise: Optional[dict]


@dataclass(frozen=True)
class Inputs:
    """What the compile steps start from, every part checked; ``scoring`` is None without labelled data."""

    source: LoadedModel
    config: HardwareConfig
    data: Optional[Dataset]
    example: torch.Tensor
    scoring: Optional[Scoring] = None


@dataclass(frozen=True)
class Compiled:
    """What the compile steps produced: the converted model and what to say about how."""

    converted: fx.GraphModule
    calibration_batches: int
    fine_tuning: Optional[str]


def hardware_config(args: argparse.Namespace) -> HardwareConfig:
    """The preset (default: :data:`DEFAULT_PRESET`), then the --config file on top, then each --set."""
    base = preset_config(args.preset or DEFAULT_PRESET)
    if args.config:
        base = read_config_file(Path(args.config), base).hardware
    return base.with_overrides(parse_overrides(args.set)) if args.set else base


def hardware_origin(args: argparse.Namespace) -> str:
    """Where the hardware came from, as the summary says it: ``"8bit preset, then hw.toml, then --set"``."""
    parts = [f"{args.preset or DEFAULT_PRESET} preset"] + ([args.config] if args.config else [])
    return ", then ".join(parts + (["--set"] if args.set else []))


def read_config_file(path: Path, base: Optional[HardwareConfig] = None) -> ConfigFile:
    """A TOML or JSON file shaped like ``HardwareConfig.to_dict()`` (any part of it), applied on top of
    ``base`` (default: the :data:`DEFAULT_PRESET` preset), plus an optional ``noise`` section."""
    check_config_file(path)
    parse, decode_error = _toml_reader() if path.suffix == ".toml" else (json.loads, json.JSONDecodeError)
    try:
        data = parse(path.read_text())
    except decode_error as exc:
        raise ConfigError(f"--config {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    noise = data.pop(NOISE_SECTION, None) if isinstance(data, dict) else None
    if noise is not None and not isinstance(noise, dict):
        raise ConfigError(f"--config {path}: {NOISE_SECTION} must be a table of a noise model's fields, "
                          f"e.g. {{\"model\": \"pcm\"}}")
    base = preset_config(DEFAULT_PRESET) if base is None else base
    try:
        return ConfigFile(HardwareConfig.from_dict(merged(base.to_dict(), data)), noise)
    except ConfigError as exc:
        raise ConfigError(f"--config {path}: {exc}") from exc


def merged(base: dict, changes) -> dict:
    """``base`` with the tables of ``changes`` merged in key by key; other values (lists too) replace."""
    if not isinstance(changes, dict):
        return changes
    return base | {key: merged(base[key], value) if isinstance(base.get(key), dict) else value
                   for key, value in changes.items()}


def _toml_reader() -> tuple[Callable, type]:
    try:
        import tomllib  # lazy: Python 3.10 has none, and only TOML configs need it
    except ModuleNotFoundError:
        raise ConfigError("TOML config files need Python 3.11 or later (tomllib); use a .json file") from None
    return tomllib.loads, tomllib.TOMLDecodeError


def load_inputs(args: argparse.Namespace, config: HardwareConfig, labels_for: Optional[str],
                scoring_for: Optional[str] = None) -> Inputs:
    """Load the model and its data (and its --test data, cast as the calibration samples are) and check that
    they fit; ``labels_for`` names what needs labelled calibration data (if any), ``scoring_for`` what needs
    labelled data to score on."""
    source = load_model(args.model, args.weights)
    dataset = args.calib or source.dataset
    data = load_dataset(dataset) if dataset else None
    dtype = model_dtype(source)
    data = in_dtype(data, dtype) if data is not None else None
    test = in_dtype(load_dataset(args.test), dtype if data is None else data.samples.dtype) if args.test else None
    if labels_for and (data is None or data.labels is None):
        raise UsageError(_labels_needed(labels_for))
    scoring = scoring_data(chosen_metric(args.metric, source), test, data)
    if scoring_for and scoring is None:
        raise UsageError(_labels_needed(scoring_for) + ", or --test DATA")
    example = example_input(args.input_shape, source, data, dtype)
    check_input_fits(source, example)
    if labels_for:
        check_labels_fit(source, data, labels_for)
    if scoring is not None:
        check_metric_fits(source, scoring)
    return Inputs(source, config, data, example, scoring)


def _labels_needed(what: str) -> str:
    return (f"{what} needs labelled data: --calib {BUILTIN_DATA[0]}, or a .npz / .pt file with the class indices "
            "under 'y'")


def compile_steps(inputs: Inputs, args: argparse.Namespace, console: Console) -> Compiled:
    """prepare -> calibrate -> fine-tune (with --finetune) -> convert, with progress bars on ``console``."""
    prepared = prepare_model(inputs.source, inputs.example, inputs.config, args)
    limit = inputs.config.pre_post.input_range.init_from_data if args.calib_batches is None else args.calib_batches
    calibrated = calibrate_model(prepared, inputs.data, args.batch_size, limit, console, args.calib_method,
                                 args.compile)
    tuned = (fine_tune_model(prepared, inputs.data, args.finetune, args.batch_size, console, args.compile)
             if args.finetune else None)
    return Compiled(convert(prepared), calibrated, tuned)


def model_dtype(source: LoadedModel) -> torch.dtype:
    """The float dtype of the model's first floating-point weight (float32 if it has none)."""
    state = source.model.state_dict
    tensors = (state if isinstance(state, dict) else state()).values()  # an ExportedProgram's is a dict
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def in_dtype(data: Dataset, dtype: torch.dtype) -> Dataset:
    """The samples (and test samples) cast to the model's float ``dtype``, saying so; labels and token ids stay."""
    if data.samples.dtype == dtype or data.token_ids:
        return data
    warnings.warn(f"the samples of {data.name} are {_dtype_name(data.samples.dtype)}: cast to "
                  f"{_dtype_name(dtype)}, the model's dtype (scale them as the model was trained, e.g. to [0, 1])",
                  UserWarning, stacklevel=2)
    test = None if data.test is None else (data.test[0].to(dtype), data.test[1])
    return dataclasses.replace(data, samples=data.samples.to(dtype), test=test)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def example_input(shape: Optional[tuple[int, ...]], source: LoadedModel, data: Optional[Dataset],
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
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
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


def check_input_fits(source: LoadedModel, example: torch.Tensor) -> None:
    """Run the original model once (at batch 2, as captures do), so a wrong input shape is reported
    before any work."""
    try:
        with torch.no_grad():
            source.run(batch_of_two(example))
    except Exception as exc:  # whatever the user's model raises on a wrong shape
        if "dtype" in str(exc).lower():
            raise ModelError(f"{source.name} does not accept inputs of dtype {_dtype_name(example.dtype)}: "
                             f"{first_line(exc)}; pass samples of the dtype of its weights "
                             f"({_dtype_name(model_dtype(source))})") from exc
        raise ModelError(f"{source.name} does not accept an input of shape {list(example.shape)}: "
                         f"{first_line(exc)}; check --input-shape or --calib") from exc


def batch_of_two(example: torch.Tensor) -> torch.Tensor:
    """The first two samples of ``example``, the one sample twice if it has only one."""
    return example[:2] if len(example) >= 2 else example.expand(2, *example.shape[1:])


def check_labels_fit(source: LoadedModel, data: Dataset, labels_for: str) -> None:
    """Before any work: ``labels_for`` needs a classifier whose classes the labels (and test labels) index."""
    shape = output_shape(source, data.samples)
    if len(shape) != 2:
        raise ModelError(f"{labels_for} needs a classifier: {source.name} outputs shape {shape}, "
                         "not [batch, classes]")
    labels = data.labels if data.test is None else torch.cat([data.labels, data.test[1]])
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= shape[1]:
        raise DataError(f"{labels_for}: the labels of {data.name} run from {low} to {high}, but {source.name} has "
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
                    method: str, compile: bool = False) -> int:
    """Calibrate on up to ``limit`` batches of ``data`` (none: 0); a batch the model rejects is a DataError.

    Under torchrun each process calibrates on its share of every batch, which gives the ranges one process gets.
    """
    if data is None or limit == 0:
        return 0
    group = group_in_use()
    batches = [local_share(batch, group) for batch in data.batches(batch_size, limit)]
    try:
        return calibrate_ranges(prepared, data, batches, console, method, compile)
    except RuntimeError as exc:
        raise DataError(f"calibration batch of shape {list(batches[0].shape)} from {data.name} does not fit "
                        f"the model: {first_line(exc)}; check --calib") from exc
