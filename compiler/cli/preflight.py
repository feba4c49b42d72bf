"""Checks of the command line's arguments that need no torch, onnx or scikit-learn: the model's
name or file, the weights, data and config files, the output paths.

:func:`check_arguments` runs before a command's module (and torch) is imported, so a
misspelt name or a missing file is reported in a fraction of a second; the loaders run
the same checks again (they are cheap) when called from Python.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from ...passes.errors import (
    ConfigError,
    DataError,
    InspectError,
    ModelError,
    OutputPathError,
    UsageError,
)
from ..chip.shipped import chip_named
from ..files import check_writable, data_file
from ..program_files.paths import check_measured_path, check_output_path
from .arguments import BUILTIN_DATA, ZOO_NAMES, build_parser

DATA_SUFFIXES = (".npz", ".pt")
CONFIG_SUFFIXES = (".toml", ".json")


def check_arguments(args: argparse.Namespace) -> None:
    """Everything about ``args`` that can be checked without importing a heavy library."""
    for option, path in output_paths(args).items():
        check_writable(path, option)
    if args.command == "evaluate" and is_onnx_file(args.model):
        check_onnx_evaluation(args)
    elif args.command in ("compile", "evaluate"):
        model_kind(args.model, args.weights)
        if args.weights:
            check_weights_file(Path(args.weights))
        for spec, what in ((args.calib, "calibration data"), (args.test, "test data")):
            if spec:
                check_data_spec(spec, what)
        if args.config:
            check_config_file(Path(args.config))
    if getattr(args, "chip", None):
        chip_named(args.chip)  # a name or a valid chip file; torch-free
    if args.command in ("inspect", "program-file", "import-measured") and not Path(args.file).is_file():
        raise InspectError(f"{args.file}: no such file")
    if args.command == "program-file":
        check_output_path(Path(args.output), args.format)
    if args.command == "import-measured":
        check_measured_path(Path(args.measured), args.format)


COMPILING_OPTIONS = ("weights", "input_shape", "input_dtype", "dynamic", "calib", "preset", "config", "set",
                     "include", "exclude", "keep_first_last_digital", "capture", "calib_batches", "calib_method",
                     "finetune", "compile", "chip", "chips", "recalibrate")
"""`xbar evaluate` options that change how a model is compiled or recalibrated: none applies to an exported file."""


def is_onnx_file(spec: str) -> bool:
    return spec.endswith(".onnx")


def check_onnx_evaluation(args: argparse.Namespace) -> None:
    """`xbar evaluate FILE.onnx`: the file exists and no option asks to compile (or recalibrate) it again."""
    if not Path(args.model).is_file():
        raise InspectError(f"{args.model}: no such file")
    defaults = vars(build_parser().parse_args(["evaluate"]))
    for dest in COMPILING_OPTIONS:
        if dest in defaults and getattr(args, dest) != defaults[dest]:
            option = "--" + dest.replace("_", "-")
            raise UsageError(f"{option} does not apply to {args.model}, which is compiled already: drop it, or "
                             "evaluate the PyTorch model to compile (or recalibrate) it with that option")
    if args.plot and not {"times", "seeds"} & getattr(args, "given", frozenset()):
        raise UsageError(f"--plot draws the metric over time: give --times or --seeds to re-program {args.model}")
    if args.test:
        check_data_spec(args.test, "test data")


def output_paths(args: argparse.Namespace) -> dict[str, Path]:
    """The files a command will write, by option; two options naming one file are refused."""
    paths = {}
    if args.command == "compile":
        output = Path(args.output if args.output is not None else default_output_name(args.weights, args.model))
        paths["-o"] = output
        paths["-o (its external data)"] = data_file(output)
        if args.save_graph is not None:
            paths["--save-graph"] = Path(args.save_graph)
    if args.command == "import-measured":
        paths["-o"] = Path(args.output)
    if getattr(args, "plot", None) is not None:
        paths["--plot"] = Path(args.plot)
    _refuse_shared_paths(paths)
    return {option: path for option, path in paths.items() if "(" not in option or args.external_data}


def _refuse_shared_paths(paths: dict[str, Path]) -> None:
    seen: dict[Path, str] = {}
    for option, path in paths.items():
        where = path.absolute().resolve()
        if where in seen:
            raise OutputPathError(f"{seen[where]} and {option} both name {path}; give each output its own file")
        seen[where] = option


def default_output_name(weights: Optional[str], spec: str) -> str:
    """``<weights stem>.onnx`` when weights are given, else ``<model file stem or zoo name>.onnx``."""
    return f"{Path(weights).stem if weights else model_name(spec)}.onnx"


def model_name(spec: str) -> str:
    """The name a model spec gives its outputs: the zoo name, or the model file's stem."""
    return Path(spec.partition(":")[0]).stem

TORCH_FILE_SUFFIXES = (".pt", ".pth", ".ckpt")
"""Suffixes of torch.save files."""


def model_kind(spec: str, weights: Optional[str]) -> str:
    """``"zoo"``, ``"factory"`` (FILE.py:FACTORY), ``"program"`` (FILE.pt2) or ``"torch_file"`` (a ``torch.save``
    file, which is no model: the loader reads it to say what it is); :class:`ModelError` otherwise."""
    if spec in ZOO_NAMES:
        return "zoo"
    file_text, _, factory = spec.partition(":")
    path = Path(file_text)
    if not path.is_file():
        raise ModelError(f"model {spec!r} is neither a file nor a zoo model ({', '.join(ZOO_NAMES)}); "
                         "give FILE.py:FACTORY or FILE.pt2")
    if path.suffix == ".py":
        if not factory:
            raise ModelError(f"name the factory that builds the model: {path}:NAME")
        return "factory"
    if path.suffix == ".pt2" and not factory:
        if weights:
            raise ModelError(f"--weights does not apply to {path}: a .pt2 program carries its own weights")
        return "program"
    if path.suffix in TORCH_FILE_SUFFIXES and not factory:
        return "torch_file"  # a weights file or a graph archive: the loader reads it to say which
    raise ModelError(f"{spec} is not a model: give FILE.py:FACTORY, a torch.export .pt2 file or a zoo name")


def check_weights_file(path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"weights file {path} not found")


def check_data_spec(spec: str, what: str = "calibration data") -> None:
    """A built-in data set's name, or an existing .npz / .pt file; ``what`` names the data in the message."""
    if spec in BUILTIN_DATA:
        return
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{what} {spec!r} is neither a file nor a built-in data set; "
                        f"built-in: {', '.join(BUILTIN_DATA)}; files: .npz or .pt")
    if path.suffix not in DATA_SUFFIXES:
        raise DataError(f"{path}: unknown data format {path.suffix!r}; give a .npz or .pt file of input tensors")


def check_config_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    if path.suffix not in CONFIG_SUFFIXES:
        raise ConfigError(f"--config {path}: use a .toml or .json file")
