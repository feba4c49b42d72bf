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
import torch.utils._pytree as pytree
from rich.console import Console
from torch import fx

from ...passes.capture import CAPTURE_METHODS, first_line
from ...passes.errors import CaptureError, ConfigError, DataError, ModelError, UsageError
from ...passes.inputs import check_input_count, forward_parameters, tensors_of
from ..config.hardware import HardwareConfig
from ..config.presets import DEFAULT_PRESET, preset_config
from ..pipeline.distributed import group_in_use, local_share
from ..pipeline.stages import convert, prepare
from .arguments import BUILTIN_DATA, parse_overrides
from .data import Dataset, load_dataset
from .inputs import CLI_INPUTS_HINT, dynamic_spec, example_inputs, in_forward_order, positional, takes_token_ids
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
    example: tuple
    scoring: Optional[Scoring] = None
    per_token: bool = False
    """Whether the labels are a language model's next tokens (fine-tuning's loss then averages every token)."""


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
    data = in_forward_order(load_dataset(dataset), source) if dataset else None
    dtype = model_dtype(source)
    token_ids = takes_token_ids(source.model)
    data = in_dtype(data, dtype, token_ids) if data is not None else None
    test = in_dtype(load_dataset(args.test), dtype, token_ids) if args.test else None
    if labels_for and (data is None or data.labels is None):
        raise UsageError(_labels_needed(labels_for))
    scoring = scoring_data(chosen_metric(args.metric, source), test, data)
    if scoring_for and scoring is None:
        raise UsageError(_labels_needed(scoring_for) + ", or --test DATA")
    example = example_inputs(args.input_shape, args.input_dtype, source, data, dtype)
    check_input_fits(source, example)
    per_token = check_labels_fit(source, data, labels_for) if labels_for else False
    if scoring is not None:
        check_metric_fits(source, scoring)
    return Inputs(source, config, data, example, scoring, per_token)


def _labels_needed(what: str) -> str:
    return (f"{what} needs labelled data: --calib {BUILTIN_DATA[0]}, or a .npz / .pt file with the class indices "
            "under 'y'")


def compile_steps(inputs: Inputs, args: argparse.Namespace, console: Console,
                  check_prepared: Optional[Callable[[fx.GraphModule], None]] = None) -> Compiled:
    """prepare -> calibrate -> fine-tune (with --finetune) -> convert, with progress bars on ``console``;
    ``check_prepared`` runs on the prepared model before calibration (e.g. whether it fits a chip)."""
    prepared = prepare_model(inputs.source, inputs.example, inputs.config, args)
    if check_prepared is not None:
        check_prepared(prepared)
    limit = inputs.config.pre_post.input_range.init_from_data if args.calib_batches is None else args.calib_batches
    calibrated = calibrate_model(prepared, inputs.data, args.batch_size, limit, console, args.calib_method,
                                 args.compile)
    tuned = (fine_tune_model(prepared, inputs.data, args.finetune, args.batch_size, console, args.compile,
                             inputs.per_token)
             if args.finetune else None)
    return Compiled(convert(prepared), calibrated, tuned)


def model_dtype(source: LoadedModel) -> torch.dtype:
    """The float dtype of the model's first floating-point weight (float32 if it has none)."""
    state = source.model.state_dict
    tensors = (state if isinstance(state, dict) else state()).values()  # an ExportedProgram's is a dict
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def in_dtype(data: Dataset, dtype: torch.dtype, token_ids: bool = False) -> Dataset:
    """The samples (and test samples) cast to the model's float ``dtype``, saying so; labels stay, and
    so do integer samples when the model takes ``token_ids`` (it has an embedding) or the data set says
    they are token ids."""
    def needs_cast(x) -> bool:
        return (isinstance(x, torch.Tensor) and x.dtype != dtype
                and (x.is_floating_point() or not (token_ids or data.token_ids)))

    cast = [x for x in tensors_of(data.samples) if needs_cast(x)]
    if not cast:
        return data
    warnings.warn(f"the samples of {data.name} are {_dtype_name(cast[0].dtype)}: cast to "
                  f"{_dtype_name(dtype)}, the model's dtype (scale them as the model was trained, e.g. to [0, 1])",
                  UserWarning, stacklevel=2)
    test = None if data.test is None else (data.test[0].to(dtype), data.test[1])
    samples = pytree.tree_map(lambda x: x.to(dtype) if needs_cast(x) else x, data.samples)
    return dataclasses.replace(data, samples=samples, test=test)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def check_input_fits(source: LoadedModel, example: tuple) -> None:
    """Run the original model once (at batch 2, as captures do), so a wrong input shape is reported
    before any work."""
    check_input_count(forward_parameters(source.model), example, source.name, CLI_INPUTS_HINT)
    try:
        with torch.no_grad():
            source.run(*batch_of_two(example))
    except Exception as exc:  # whatever the user's model raises on a wrong shape
        if "dtype" in str(exc).lower():
            raise ModelError(f"{source.name} does not accept inputs of dtype {_dtypes_text(example)}: "
                             f"{first_line(exc)}; pass samples of the dtype of its weights "
                             f"({_dtype_name(model_dtype(source))})") from exc
        raise ModelError(f"{source.name} does not accept an input of shape {_shapes_text(example)}: "
                         f"{first_line(exc)}; check --input-shape or --calib") from exc


def _shapes_text(example: tuple) -> str:
    return " and ".join(str(list(x.shape)) for x in tensors_of(example))


def _dtypes_text(example: tuple) -> str:
    return " and ".join(_dtype_name(x.dtype) for x in tensors_of(example))


def batch_of_two(example):
    """The first two samples of every tensor of ``example``, the one sample twice if it has only one."""
    return pytree.tree_map(lambda x: (x[:2] if len(x) >= 2 else x.expand(2, *x.shape[1:]))
                           if isinstance(x, torch.Tensor) and x.dim() > 0 else x, example)


def check_labels_fit(source: LoadedModel, data: Dataset, labels_for: str) -> bool:
    """Before any work: ``labels_for`` needs a classifier ([batch, classes] outputs, labels [N]) or a language
    model ([batch, sequence, vocabulary] outputs, next tokens [N, sequence]) whose classes the labels (and
    test labels) index; returns whether they are a language model's next tokens."""
    shape = output_shape(source, data.samples)
    if not (len(shape) == 2 and data.labels.dim() == 1 or is_per_token(shape, data)):
        raise ModelError(f"{labels_for} needs a classifier or a language model: {source.name} outputs shape "
                         f"{shape} for labels of shape {list(data.labels.shape)}, not [batch, classes] for [N] "
                         "or [batch, sequence, vocabulary] for [N, sequence]")
    labels = data.labels if data.test is None else torch.cat([data.labels, data.test[1]])
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= shape[-1]:
        raise DataError(f"{labels_for}: the labels of {data.name} run from {low} to {high}, but {source.name} has "
                        f"{shape[-1]} classes (0 to {shape[-1] - 1}); give class indices")
    return is_per_token(shape, data)


def is_per_token(shape: list[int], data: Dataset) -> bool:
    """Whether outputs of ``shape`` and ``data``'s labels are a language model's logits and next tokens."""
    return len(shape) == 3 and list(data.labels.shape[1:]) == shape[1:2]


def prepare_model(source: LoadedModel, example: tuple, config: HardwareConfig, args: argparse.Namespace):
    """``prepare`` with the command line's options; a capture failure's hint names the other ``--capture``."""
    try:
        return prepare(source.model, example, config, include=args.include, exclude=args.exclude,
                       keep_first_last_digital=args.keep_first_last_digital, capture_method=args.capture,
                       dynamic_shapes=dynamic_spec(args.dynamic, example))
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
    batches = [pytree.tree_map(lambda x: local_share(x, group) if isinstance(x, torch.Tensor) else x, batch)
               for batch in data.batches(batch_size, limit)]
    try:
        return calibrate_ranges(prepared, data, batches, console, method, compile)
    except RuntimeError as exc:
        raise DataError(f"calibration batch of shape {_shapes_text(positional(batches[0]))} from {data.name} "
                        f"does not fit the model: {first_line(exc)}; check --calib") from exc
