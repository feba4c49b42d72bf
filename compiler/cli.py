"""The ``xbar`` command line: compile a model, inspect what was written, list presets.

Exit status: 0 on success; 1 when the work fails (the model, its weights, its
data or the output path do not work together); 2 when the command line is wrong
(unknown option or name, missing input file, invalid hardware configuration).
An error is one line on stderr; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import math
import os
import re
import sys
import traceback
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch import nn

from ..models.zoo import ZOO, load_pretrained
from ..passes.calibration import CalibrationMethod
from ..passes.capture import CaptureError, first_line
from ..passes.infra import PassError
from ..passes.matching import MatchError
from .config import ConfigError, HardwareConfig
from .data import BUILTIN, DataError, Dataset, load_dataset, load_plain_torch_file
from .export import ExportError, export_onnx
from .finetune import FineTuning, fine_tune
from .inspection import (
    InspectError,
    Inspection,
    count_text,
    describe_config,
    layer_table,
    load_inspection,
    plot_layers,
    save_graph,
    summarize_converted,
)
from .pipeline import calibrate, convert, prepare
from .presets import PRESETS, preset_config
from .version import __version__

DEFAULT_OVERRIDES = {"forward.inp_res": 254, "forward.out_res": 254, "forward.out_bound": 10}
"""``xbar compile``'s hardware without --preset / --config: 8-bit DAC and ADC, ADC bound 10."""
DEFAULT_MODEL = "lenet"
DEFAULT_BATCH_SIZE = 64
LIBRARY_USAGE_ERRORS = (ConfigError, DataError, InspectError)
LIBRARY_FAILURES = (CaptureError, MatchError, PassError, ExportError)


class CliError(Exception):
    """An expected failure, reported as one line on stderr (exit status 1)."""

    exit_status = 1


class UsageError(CliError):
    """The command line asks for something that cannot be done as written (exit status 2)."""

    exit_status = 2


# -- argument parsing ----------------------------------------------------------------------------

class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (one line) instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1,1,8,8"`` (or ``1x1x8x8``) -> ``(1, 1, 8, 8)``; the first number is the batch size."""
    parts = re.split(r"[,x]", text.strip())
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, "
                                         f"batch first (e.g. 1,1,8,8), got {text!r}")
    return tuple(int(p) for p in parts)


def parse_overrides(items: Sequence[str]) -> dict:
    """``["forward.inp_res=254"]`` -> ``{"forward.inp_res": 254}``; values are JSON scalars when they parse."""
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set forward.inp_res=254")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        overrides[key.strip()] = value if isinstance(value, (int, float, bool, str, type(None))) else text
    return overrides


COMPILE_EPILOG = f"""\
MODEL is one of:
  a zoo name          {', '.join(ZOO)} (shipped weights; digits data)
  FILE.py:FACTORY     FACTORY() builds the nn.Module; --weights loads a state_dict into it
  FILE.pt2            a program saved by torch.export.save (with a dynamic batch dimension)

Hardware: --preset or --config, then each --set in order. Without --preset or
--config the default is an 8-bit periphery without tiling:
  {', '.join(f'{k}={v}' for k, v in DEFAULT_OVERRIDES.items())}

Calibration data: a built-in set ({', '.join(BUILTIN)}), a .npz file (its only array,
or the arrays named x and, optionally, y) or a .pt file (a tensor, or a dict with
tensors under "x" and, optionally, "y"), samples along the first dimension, labels y
as class indices. A zoo model calibrates on digits unless --calib says otherwise.
Calibration runs at most --calib-batches batches of --batch-size samples (default:
pre_post.input_range.init_from_data, the number the range rule averages over).
--finetune N then trains the input ranges and weights together for N epochs on the
labelled samples (xbar.fine_tune's recipe, cross-entropy). With a labelled
built-in data set the test accuracy of the original, the compiled PyTorch model and
the ONNX file (in ONNX Runtime) is printed.

--save-graph writes the converted graph as a torch.save archive of tensors and
text (loadable with torch.load(weights_only=True)); `xbar inspect` reads it.

examples:
  xbar compile                                   # LeNet -> lenet.onnx, with accuracies
  xbar compile --finetune 5                      # ... fine-tuned for the 8-bit periphery first
  xbar compile mlp --preset 6bit-256x256 -o mlp6.onnx
  xbar compile net.py:make_net --weights net.pt --calib inputs.npz
  xbar compile model.pt2 --calib images.npz --set forward.out_bound=20
  xbar compile resnet --exclude 'layer2.*' --keep-first-last-digital --save-graph resnet.graph.pt
"""

INSPECT_EPILOG = """\
FILE is an ONNX file from `xbar compile -o` or a graph archive from `--save-graph`.
"at g_max" is the fraction of devices (G+ and G-) within 1% of (g_max - g_min) of g_max.

examples:
  xbar inspect lenet.onnx
  xbar inspect lenet.onnx --graph
  xbar inspect lenet.onnx --json > lenet.json
  xbar inspect lenet.onnx --plot lenet.png
"""


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="xbar", description="Compile trained PyTorch models for analog crossbar "
                            "arrays and inspect the annotated ONNX they become.",
                            epilog="examples:\n  xbar compile\n  xbar inspect lenet.onnx --graph\n  xbar presets\n\n"
                            "exit status: 0 ok, 1 the work failed, 2 bad command line; --debug shows tracebacks",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version_text())
    common = ArgumentParser(add_help=False)
    for accepting_debug in (parser, common):  # main() reads --debug from argv, before parsing can fail
        accepting_debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                     help="show tracebacks and library warnings")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_compile(commands, common)
    _add_inspect(commands, common)
    presets = commands.add_parser("presets", parents=[common], help="list the hardware presets",
                                  description="List the named hardware presets, what they model and "
                                  "where their numbers come from.", epilog="example:\n  xbar presets",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    presets.set_defaults(run=run_presets)
    return parser


def _add_compile(commands, common) -> None:
    compile_ = commands.add_parser(
        "compile", parents=[common], help="compile a model to annotated ONNX (default: the shipped LeNet)",
        description="Capture a model, insert the crossbar periphery, calibrate its input ranges, lower the "
        "weights to conductances and write annotated ONNX.",
        epilog=COMPILE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    compile_.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL",
                          help=f"zoo name, FILE.py:FACTORY or FILE.pt2 (default: {DEFAULT_MODEL})")
    compile_.add_argument("--weights", metavar="CHECKPOINT", help="state_dict to load (torch.load weights_only)")
    compile_.add_argument("--input-shape", type=parse_input_shape, metavar="N,C,...",
                          help="example input shape, batch first (default: from the data or the model)")
    compile_.add_argument("--calib", metavar="DATA",
                          help=f"calibration data: {', '.join(BUILTIN)}, or a .npz / .pt file of inputs [N, ...] "
                          "and optional labels")
    hardware = compile_.add_mutually_exclusive_group()
    hardware.add_argument("--preset", choices=list(PRESETS), help="named hardware preset (see `xbar presets`)")
    hardware.add_argument("--config", metavar="FILE", help="hardware config, .toml or .json, shaped like "
                          "HardwareConfig.to_dict() (missing keys: HardwareConfig defaults)")
    compile_.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override one config field, e.g. forward.inp_res=254 (repeatable)")
    compile_.add_argument("--include", action="append", default=[], metavar="PATTERN",
                          help="only layers matching this name glob or module type go to crossbars (repeatable)")
    compile_.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                          help="keep layers matching this name glob or module type digital (repeatable)")
    compile_.add_argument("--keep-first-last-digital", action="store_true",
                          help="keep the first and the last crossbar layer digital")
    compile_.add_argument("-o", "--output", metavar="FILE.onnx",
                          help="ONNX file to write (default: named after --weights, else the model file or "
                          "zoo name: lenet.onnx)")
    compile_.add_argument("--save-graph", metavar="PATH", help="also write the converted graph archive")
    compile_.add_argument("--calib-batches", type=_count, metavar="N", help="calibrate on at most N batches "
                          "(default: pre_post.input_range.init_from_data; 0: keep init_value)")
    compile_.add_argument("--calib-method", choices=[m.value for m in CalibrationMethod],
                          default=CalibrationMethod.INIT_FROM_DATA.value,
                          help="how the input ranges are set from the data (default: InitFromData, the "
                          "reference rule; the others are aihwkit's post-training methods)")
    compile_.add_argument("--finetune", type=_count, default=0, metavar="EPOCHS",
                          help="after calibration, train ranges and weights for EPOCHS epochs on the labelled "
                          "data (default: 0, no training)")
    compile_.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                          help=f"calibration, fine-tuning and evaluation batch size (default: {DEFAULT_BATCH_SIZE})")
    compile_.set_defaults(run=run_compile)


def _add_inspect(commands, common) -> None:
    inspect = commands.add_parser(
        "inspect", parents=[common], help="show the crossbar layers of an exported file",
        description="Show the crossbar layers of an ONNX export or a saved graph: input ranges, scale "
        "ratios, conductance statistics, DAC/ADC settings.",
        epilog=INSPECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    inspect.add_argument("file", metavar="FILE", help="ONNX file or graph archive")
    inspect.add_argument("--graph", action="store_true", help="also print the graph (ONNX: its node list)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    inspect.add_argument("--plot", metavar="IMAGE", help="save conductance histograms and input ranges (.png)")
    inspect.set_defaults(run=run_inspect)


def _version_text() -> str:
    import onnx
    import onnxruntime

    return (f"xbar {__version__} (torch {torch.__version__}, onnx {onnx.__version__}, "
            f"onnxruntime {onnxruntime.__version__})")


# -- entry point ---------------------------------------------------------------------------------

def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``xbar`` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        with _library_warnings(debug):
            args = build_parser().parse_args(argv)
            return args.run(args)
    except KeyboardInterrupt:
        _error("interrupted; no output was written unless reported above")
        return 130
    except Exception as exc:  # every error ends here as one line (and a traceback with --debug)
        if debug:
            traceback.print_exc()
        status, message = _describe(exc)
        _error(message)
        return status


def _describe(exc: Exception) -> tuple[int, str]:
    """Exit status and one-line message for an exception."""
    if isinstance(exc, CliError):
        return exc.exit_status, str(exc)
    if isinstance(exc, ConfigError):
        return 2, f"invalid hardware config: {first_line(exc)}"
    if isinstance(exc, LIBRARY_USAGE_ERRORS):
        return 2, first_line(exc)
    if isinstance(exc, LIBRARY_FAILURES):
        return 1, first_line(exc)
    return 1, (f"unexpected {type(exc).__name__}: {first_line(exc)}; "
               "rerun with --debug for the traceback and report it")


def _error(message: str) -> None:
    print(f"xbar: error: {message}", file=sys.stderr)



@contextlib.contextmanager
def _library_warnings(debug: bool) -> Iterator[None]:
    """Show xbar's warnings as one line each; hide torch's internal deprecation noise unless debugging."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines()
        print(f"xbar: warning: {text[0] if text else category.__name__}", file=sys.stderr)

    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = show
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
        yield


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a library logger that prints tracebacks for errors we report ourselves."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _stdout() -> Console:
    """Console for results; 160 columns when output is not a terminal and COLUMNS is not set."""
    console = Console()
    return console if console.is_terminal or "COLUMNS" in os.environ else Console(width=160)


def _stderr() -> Console:
    return Console(stderr=True)


def _say(console: Console, renderable) -> None:
    """Print text as it is (no markup, no highlighting), or a rich renderable."""
    console.print(renderable, markup=False, highlight=False)


# -- xbar compile --------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadedModel:
    """The model named on the command line, and what it tells about its inputs."""

    model: Union[nn.Module, torch.export.ExportedProgram]
    name: str
    run: Callable
    input_shape: Optional[tuple[int, ...]] = None
    dataset: Optional[str] = None


def run_compile(args: argparse.Namespace) -> int:
    out, err = _stdout(), _stderr()
    config = hardware_config(args)
    source = load_model(args.model, args.weights)
    dataset = args.calib or source.dataset
    data = load_dataset(dataset) if dataset else None
    if args.finetune and (data is None or data.labels is None):
        raise UsageError(f"--finetune needs labelled data: --calib {' or '.join(BUILTIN)}, or a .npz / .pt file "
                         "with the class indices under 'y'")
    example = example_input(args.input_shape, source, data)
    output = writable_path(Path(args.output or default_output_name(args.weights, source)), "-o")
    graph_path = writable_path(Path(args.save_graph), "--save-graph") if args.save_graph else None
    check_input_fits(source, example)
    if args.finetune:
        check_labels_fit(source, data)
    prepared = prepare(source.model, (example,), config, include=args.include, exclude=args.exclude,
                       keep_first_last_digital=args.keep_first_last_digital)
    limit = config.pre_post.input_range.init_from_data if args.calib_batches is None else args.calib_batches
    calibrated = calibrate_ranges(prepared, data, args.batch_size, limit, err, args.calib_method)
    tuned = fine_tune_model(prepared, data, args.finetune, args.batch_size, err) if args.finetune else None
    converted = convert(prepared)
    with err.status(f"exporting ONNX to {output}"), _quiet_logger("torch.onnx"):
        _write(output, "-o", lambda: export_onnx(converted, (example,), output))
    if graph_path is not None:
        _write(graph_path, "--save-graph", lambda: save_graph(converted, graph_path))
    layers = summarize_converted(converted)
    _say(out, layer_table(layers, f"{source.name}: {count_text(layers)}"))
    _say(out, f"hardware: {describe_config(config.to_dict())}")
    _say(out, _calibration_note(calibrated, data, args.batch_size))
    if tuned:
        _say(out, tuned)
    if data is not None and data.test is not None:
        _say(out, accuracy_report(source, converted, output, data, args.batch_size))
    _say(out, f"wrote {output}" + (f" and {graph_path}" if graph_path else ""))
    return 0


def default_output_name(weights: Optional[str], source: LoadedModel) -> str:
    """``<weights stem>.onnx`` when weights are given, else ``<model file stem or zoo name>.onnx``."""
    return f"{Path(weights).stem if weights else source.name}.onnx"


def hardware_config(args: argparse.Namespace) -> HardwareConfig:
    """The preset, config file or 8-bit default, with the --set overrides applied."""
    if args.preset:
        base = preset_config(args.preset)
    elif args.config:
        base = read_config_file(Path(args.config))
    else:
        base = HardwareConfig().with_overrides(DEFAULT_OVERRIDES)
    return base.with_overrides(parse_overrides(args.set)) if args.set else base


def read_config_file(path: Path) -> HardwareConfig:
    """A HardwareConfig from a TOML or JSON file shaped like ``HardwareConfig.to_dict()``."""
    if not path.is_file():
        raise UsageError(f"config file {path} not found")
    if path.suffix not in (".toml", ".json"):
        raise UsageError(f"--config {path}: use a .toml or .json file")
    parse, decode_error = _toml_reader() if path.suffix == ".toml" else (json.loads, json.JSONDecodeError)
    try:
        data = parse(path.read_text())
    except decode_error as exc:
        raise UsageError(f"--config {path} is not valid {path.suffix[1:].upper()}: {exc}") from exc
    return HardwareConfig.from_dict(data)


def _toml_reader() -> tuple[Callable, type]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        raise UsageError("TOML config files need Python 3.11 or later (tomllib); use a .json file") from None
    return tomllib.loads, tomllib.TOMLDecodeError


def load_model(spec: str, weights: Optional[str]) -> LoadedModel:
    """A zoo name, ``FILE.py:FACTORY`` (with optional weights) or a ``.pt2`` file."""
    if spec in ZOO:
        return _zoo_model(spec, weights)
    file_text, _, factory = spec.partition(":")
    path = Path(file_text)
    if not path.is_file():
        raise UsageError(f"model {spec!r} is neither a file nor a zoo model ({', '.join(ZOO)}); "
                         "give FILE.py:FACTORY or FILE.pt2")
    if path.suffix == ".py":
        if not factory:
            raise UsageError(f"name the factory that builds the model: {path}:NAME")
        return _factory_model(path, factory, weights)
    if path.suffix == ".pt2" and not factory:
        if weights:
            raise UsageError(f"--weights does not apply to {path}: a .pt2 program carries its own weights")
        return _exported_model(path)
    hint = (f"; to use it as weights: xbar compile FILE.py:FACTORY --weights {path}"
            if path.suffix in (".pt", ".pth", ".ckpt") else "")
    raise UsageError(f"{spec} is not a model: give FILE.py:FACTORY, a torch.export .pt2 file or a zoo name{hint}")


def _zoo_model(name: str, weights: Optional[str]) -> LoadedModel:
    entry = ZOO[name]
    if weights:
        model = load_weights(entry.factory(), Path(weights), name)
    else:
        try:
            model = load_pretrained(name)
        except FileNotFoundError as exc:
            raise CliError(str(exc)) from exc
    return LoadedModel(model.eval(), name, model, entry.input_shape, "digits")


def _factory_model(path: Path, factory_name: str, weights: Optional[str]) -> LoadedModel:
    module = _import_file(path)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        defined = sorted(n for n, v in vars(module).items()
                         if callable(v) and getattr(v, "__module__", None) == module.__name__)
        raise UsageError(f"{path} has no factory {factory_name!r}; "
                         f"it defines: {', '.join(defined) or 'nothing callable'}")
    try:
        model = factory()
    except Exception as exc:  # user code: report whatever it raised
        raise CliError(f"{path}:{factory_name}() raised {type(exc).__name__}: {first_line(exc)}") from exc
    if not isinstance(model, nn.Module):
        raise UsageError(f"{path}:{factory_name}() returned a {type(model).__name__}, not a torch.nn.Module")
    if weights:
        model = load_weights(model, Path(weights), factory_name)
    return LoadedModel(model.eval(), path.stem, model)


def _import_file(path: Path):
    """Import a Python file as a module, with its directory importable while it runs."""
    name = "xbar_user_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # user code: report whatever it raised
        del sys.modules[name]
        raise CliError(f"importing {path} failed with {type(exc).__name__}: {first_line(exc)}; "
                       f"run `python {path}` to see where") from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def load_weights(model: nn.Module, path: Path, model_name: str) -> nn.Module:
    """Load a state_dict (``weights_only``) into ``model``; a mismatch is one line naming the difference."""
    if not path.is_file():
        raise UsageError(f"weights file {path} not found")
    state = load_plain_torch_file(path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"{path} is not a state_dict (a dict of tensors); save one with "
                         "torch.save(model.state_dict(), path)")
    mismatch = _state_dict_mismatch(model.state_dict(), state)
    if mismatch:
        raise CliError(f"{path} does not match {model_name}: {mismatch}; check that the weights belong to this model")
    model.load_state_dict(state)
    return model


def _state_dict_mismatch(expected: dict, found: dict) -> str:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    resized = [f"{k} is {list(found[k].shape)} in the file, {list(v.shape)} in the model"
               for k, v in expected.items() if k in found and found[k].shape != v.shape]
    parts = [f"missing {_few(missing)}" if missing else "", f"unexpected {_few(unexpected)}" if unexpected else "",
             _few(resized) if resized else ""]
    return "; ".join(p for p in parts if p)


def _few(items: list[str], limit: int = 3) -> str:
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _exported_model(path: Path) -> LoadedModel:
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path} is not a torch.export archive; save one with torch.export.save(program, path)")
    try:
        with _quiet_logger("torch.export"):
            program = torch.export.load(path)
    except Exception as exc:  # torch reports a foreign or corrupt archive with many types
        raise UsageError(f"{path} is not a torch.export archive ({first_line(exc)}); "
                         "save one with torch.export.save(program, path)") from exc
    inputs = [n for n in program.graph.nodes if n.op == "placeholder"
              and n.name in program.graph_signature.user_inputs]
    if len(inputs) != 1:
        raise UsageError(f"{path} takes {len(inputs)} inputs; `xbar compile` handles models with one input "
                         "tensor (use xbar.compile_model from Python for more)")
    shape = inputs[0].meta["val"].shape
    if isinstance(shape[0], int):
        raise CliError(f"{path} was exported with a fixed batch size of {shape[0]}; re-export it with a dynamic "
                       "batch: torch.export.export(model, args, dynamic_shapes=({0: torch.export.Dim('batch')},))")
    static_shape = (1, *(int(d) for d in shape[1:]))
    return LoadedModel(program, path.stem, program.module(), static_shape)


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


def writable_path(path: Path, option: str) -> Path:
    """``path`` if a file can be created there (missing parent directories will be made)."""
    if path.is_dir():
        raise CliError(f"{option} {path} is a directory; give a file name inside it")
    ancestor = path.parent.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CliError(f"cannot write {path}: {ancestor} is not a directory; choose another {option} path")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CliError(f"cannot write {path}: no permission to write in {ancestor}; choose another {option} path")
    return path


def _write(path: Path, option: str, write: Callable[[], object]) -> None:
    """Run a writer that creates ``path`` atomically; an OS error becomes one line."""
    try:
        write()
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}; choose another {option} path") from exc


def check_input_fits(source: LoadedModel, example: torch.Tensor) -> None:
    """Run the original model once (at batch 2, as captures do), so a wrong input shape is reported
    before any work."""
    try:
        with torch.no_grad():
            source.run(example.expand(2, *example.shape[1:]))
    except Exception as exc:  # whatever the user's model raises on a wrong shape
        raise CliError(f"{source.name} does not accept an input of shape {list(example.shape)}: "
                       f"{first_line(exc)}; check --input-shape or --calib") from exc


def check_labels_fit(source: LoadedModel, data: Dataset) -> None:
    """Before any work: --finetune needs a classifier whose classes the labels index."""
    shape = _output_shape(source, data.samples)
    if len(shape) != 2:
        raise CliError(f"--finetune needs a classifier: {source.name} outputs shape {shape}, not [batch, classes]")
    low, high = int(data.labels.min()), int(data.labels.max())
    if low < 0 or high >= shape[1]:
        raise CliError(f"--finetune: the labels of {data.name} run from {low} to {high}, but {source.name} has "
                       f"{shape[1]} classes (0 to {shape[1] - 1}); give class indices")


@torch.no_grad()
def _output_shape(source: LoadedModel, samples: torch.Tensor) -> list[int]:
    """The original model's output shape on two samples (a classifier gives [2, classes])."""
    return list(source.run(samples[:2]).shape)


def calibrate_ranges(prepared, data: Optional[Dataset], batch_size: int, limit: int, console: Console,
                     method: str = CalibrationMethod.INIT_FROM_DATA.value) -> int:
    """Set the input ranges from up to ``limit`` batches with ``method``, with a progress bar; returns the count."""
    if data is None or limit == 0:
        return 0
    batches = data.batches(batch_size, limit)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"calibrating input ranges on {data.name}", total=len(batches))
        try:
            return calibrate(prepared, _advancing(batches, progress, task), method)
        except RuntimeError as exc:
            raise CliError(f"calibration batch of shape {list(batches[0].shape)} from {data.name} does not fit "
                           f"the model: {first_line(exc)}; check --calib") from exc


def fine_tune_model(prepared, data: Dataset, epochs: int, batch_size: int, console: Console) -> str:
    """Fine-tune ``prepared`` on the labelled samples, with a progress bar; returns a one-line note."""
    recipe = FineTuning(epochs=epochs, batch_size=batch_size)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("loss {task.fields[loss]:.3f}"))
    with Progress(*columns, console=console) as progress:
        task = progress.add_task(f"fine-tuning on {data.name}", total=recipe.steps(len(data.labels)),
                                 loss=math.nan)
        fine_tune(prepared, data.samples, data.labels, recipe,
                  on_step=lambda loss: progress.update(task, advance=1, loss=loss))
    return f"fine-tuned on {len(data.labels)} labelled samples from {data.name}: {recipe}"


def _advancing(items: Iterable, progress: Progress, task) -> Iterator:
    for item in items:
        yield item
        progress.advance(task)


def _calibration_note(batches: int, data: Optional[Dataset], batch_size: int) -> str:
    if batches == 0:
        hint = "pass --calib DATA" if data is None else "--calib-batches is 0"
        return f"input ranges not calibrated ({hint}): they keep pre_post.input_range.init_value"
    plural = "batch" if batches == 1 else "batches"
    return f"input ranges calibrated on {batches} {plural} of up to {batch_size} samples from {data.name}"


def accuracy_report(source: LoadedModel, converted, onnx_path: Path, data: Dataset,
                    batch_size: int) -> Union[Table, str]:
    """Test accuracy of the original, the converted PyTorch model and the ONNX file, side by side
    (or why there is none: a model that does not output [batch, classes])."""
    x, y = data.test
    shape = _output_shape(source, x)
    if len(shape) != 2:
        return f"no accuracy on {data.name}: the model outputs shape {shape}, not [batch, classes]"
    runners = {
        "original (PyTorch)": source.run,
        "compiled (PyTorch)": converted,
        "compiled (ONNX Runtime)": _onnx_runner(onnx_path),
    }
    table = Table(title=f"test accuracy on {data.name} ({len(y)} samples)", title_justify="left")
    accuracies = []
    for name, run in runners.items():
        table.add_column(name, justify="right")
        accuracies.append(f"{_accuracy(run, x, y, batch_size):.2%}")
    table.add_row(*accuracies)
    return table


def _onnx_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


@torch.no_grad()
def _accuracy(run: Callable, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    correct = 0
    for start in range(0, len(y), batch_size):
        logits = run(x[start:start + batch_size])
        correct += int((logits.argmax(dim=1) == y[start:start + batch_size]).sum())
    return correct / len(y)


# -- xbar inspect --------------------------------------------------------------------------------

def run_inspect(args: argparse.Namespace) -> int:
    out = _stdout()
    inspection = load_inspection(args.file)
    if args.plot:
        plot_path = writable_path(Path(args.plot), "--plot")
        _write(plot_path, "--plot", lambda: plot_layers(inspection.layers, plot_path, str(inspection.path)))
    if args.json:
        print(json.dumps(inspection.as_dict(with_graph=args.graph), indent=2, allow_nan=False))
    else:
        _print_inspection(out, inspection, args.graph)
    if args.plot:
        _say(_stderr(), f"wrote {args.plot}")
    return 0


def _print_inspection(out: Console, inspection: Inspection, with_graph: bool) -> None:
    meta = inspection.metadata
    _say(out, f"{inspection.path} ({inspection.format}, xbar {meta.get('xbar.version', 'unknown')})")
    if "xbar.hardware_config" in meta:
        _say(out, f"hardware: {describe_config(meta['xbar.hardware_config'])}")
    if "xbar.converter" in meta:
        _say(out, f"converter: {meta['xbar.converter']}")
    if not inspection.layers:
        _say(out, "no crossbar layers (no ai.xbar nodes): was this file written by xbar?")
    else:
        _say(out, layer_table(inspection.layers, count_text(inspection.layers)))
    if with_graph:
        _say(out, "graph:")
        for line in inspection.graph_lines:
            out.print(line, markup=False, highlight=False, soft_wrap=True)


# -- xbar presets --------------------------------------------------------------------------------

def run_presets(args: argparse.Namespace) -> int:
    table = Table(title="hardware presets (xbar compile --preset NAME)", title_justify="left", show_lines=True)
    for header in ("name", "description", "source"):
        table.add_column(header, no_wrap=header == "name")
    for preset in PRESETS.values():
        table.add_row(*(escape(text) for text in (preset.name, preset.description, preset.source)))
    out = _stdout()
    _say(out, table)
    _say(out, "without --preset or --config, xbar compile uses: "
         + ", ".join(f"{k}={v}" for k, v in DEFAULT_OVERRIDES.items()))
    return 0
