"""The ``xbar`` command line's arguments: the parser, its help text and the value parsers.

Imports nothing heavy (no torch, onnx or numpy), so ``xbar --help`` and
``xbar --version`` start at once. The names the help lists that live in
torch-importing modules are spelled out here (``ZOO_NAMES``, ``BUILTIN_DATA``,
``CALIBRATION_METHODS``, ``CAPTURE_METHODS``, ``METRIC_NAMES``, ``PROGRAM_FILE_FORMATS``); the CLI tests
check each against the module that owns it. The device models' names come from their registry, which
imports no torch.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from importlib.metadata import PackageNotFoundError, version
from typing import NamedTuple, Sequence

from ...passes.errors import UsageError
from ..config.presets import DEFAULT_PRESET, PRESETS
from ..config.settings_text import settings_text
from ..devices.registry import NOISE_MODELS
from ..version import __version__

ZOO_NAMES = ("mlp", "lenet", "resnet", "transformer", "charlm")
"""``xbar.models.zoo.ZOO``'s names."""
BUILTIN_DATA = ("digits", "pysource")
"""``xbar.compiler.cli.data.BUILTIN``'s names."""
PROGRAM_FILE_FORMATS = ("xbar", "fusion")
"""``xbar.compiler.program_files.formats.FORMATS``, the default first."""
CALIBRATION_METHODS = ("InitFromData", "MovingStd", "MovingQuantile", "CacheQuantile", "Max")
"""``xbar.passes.numerics.calibration.CalibrationMethod``'s values, the default first."""
CAPTURE_METHODS = ("export", "symbolic_trace")
"""``xbar.passes.capture.CaptureMethod``'s values, the default first."""
METRIC_NAMES = ("accuracy", "next-token-accuracy", "perplexity", "pixel-accuracy", "mean-iou", "mse")
"""``xbar.compiler.metrics.METRICS``'s names, the default first."""

NOISE_MODEL_NAMES = tuple(NOISE_MODELS)
"""The device models ``--noise`` takes, the default first."""
INPUT_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "bool")
"""``--input-dtype``'s choices: torch dtype names."""
COMPENSATIONS = ("global", "per-column", "global-exact-reference", "none")
"""``xbar evaluate --compensation``'s choices, the default first."""
OUT_NOISE_AT_READ = ("every-read", "training-only")
"""``xbar evaluate --out-noise``'s choices (:class:`~xbar.compiler.devices.evaluation.OutNoiseAtRead`), the default
first."""
RECALIBRATIONS = ("affine", "column-gain", "global-gain", "batch-norm")
"""``xbar evaluate --recalibration``'s choices (``xbar.recalibrate``'s methods, with hyphens), the default first."""

DEFAULT_MODEL = "lenet"
DEFAULT_BATCH_SIZE = 64
DEFAULT_TIMES = "1s,1h,1d,1y"
DEFAULT_SEEDS = 10
MAX_SEEDS = 2**63 - 1
"""The most ``--seeds`` takes: seeds 0 .. N-1 are seeds ``xbar.program`` takes (0 to 2**63 - 1), and N a
count a Python ``range`` can hold."""
TIME_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "y": 365 * 86400.0}
"""Seconds per unit of ``--times`` (m is minutes, y is 365 days)."""
_TIME = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)\s*([a-z]*)")


class ArgumentParser(argparse.ArgumentParser):
    """argparse that raises :class:`UsageError` (one line) instead of printing usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message}; see `{self.prog} --help`")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _seed_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"expected a number of seeds from 1 to 2**63 - 1, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return int(text)


def _file_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a file name, got an empty one")
    return text


def parse_input_shape(text: str) -> tuple[int, ...]:
    """``"1,1,8,8"`` (or ``1x1x8x8``) -> ``(1, 1, 8, 8)``; the first number is the batch size."""
    parts = re.split(r"[,x]", text.strip())
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, "
                                         f"batch first (e.g. 1,1,8,8), got {text!r}")
    return tuple(int(p) for p in parts)


def parse_dynamic(text: str) -> tuple[tuple[str, int], ...]:
    """``"batch=0,seq=1"`` -> ``(("batch", 0), ("seq", 1))``: a name and a dimension index per dynamic dimension."""
    dimensions = []
    for item in text.split(","):
        name, sep, index = (part.strip() for part in item.partition("="))
        if not sep or not name.isidentifier() or not index.isdigit():
            raise argparse.ArgumentTypeError(f"cannot read {item.strip()!r}: give NAME=DIM pairs, dimensions "
                                             "numbered from 0 (the batch), e.g. batch=0,seq=1")
        dimensions.append((name, int(index)))
    for what, values in (("name", [n for n, _ in dimensions]), ("dimension", [d for _, d in dimensions])):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise argparse.ArgumentTypeError(f"the {what} {', '.join(repeated)} is given twice; name each "
                                             "dynamic dimension once")
    return tuple(dimensions)


class Time(NamedTuple):
    """One time after programming: as written (with its unit) and in seconds."""

    label: str
    seconds: float


class _NoteGiven(argparse.Action):
    """Store the value and note the option as given in ``args.given``: `xbar evaluate FILE.onnx` re-programs the
    file only when --times or --seeds is given."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def parse_times(text: str) -> tuple[Time, ...]:
    """``"10m,2d,30"`` -> the times in seconds, earliest first; each >= 0, finite, listed once."""
    times = []
    for item in text.split(","):
        item = item.strip()
        match = _TIME.fullmatch(item)
        if match is None or match.group(2) not in ("", *TIME_UNITS):
            raise argparse.ArgumentTypeError(f"cannot read the time {item!r}: give seconds or a number with "
                                             f"one of the units {', '.join(TIME_UNITS)} (e.g. 10m,2d)")
        number, unit = match.groups()
        seconds = float(number) * TIME_UNITS[unit or "s"]
        if not math.isfinite(seconds) or seconds < 0:
            raise argparse.ArgumentTypeError(f"the time {item!r} is not a time after programming: give a "
                                             "finite number >= 0")
        times.append(Time(f"{number}{unit or 's'}", seconds))
    by_seconds = {}
    for time in times:
        if time.seconds in by_seconds:
            raise argparse.ArgumentTypeError(f"{by_seconds[time.seconds].label} and {time.label} are the same "
                                             "time; list each time once")
        by_seconds[time.seconds] = time
    return tuple(sorted(times, key=lambda time: time.seconds))


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


def version_text() -> str:
    """xbar's version and those of the libraries it runs on, read from package metadata (no imports)."""
    return f"xbar {__version__} (" + ", ".join(f"{name} {_installed(name)}"
                                               for name in ("torch", "onnx", "onnxruntime")) + ")"


def _installed(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


def device_models_text() -> str:
    """One line per registered device model: its name, its class and its note."""
    lines = (f"  {name:<19} {', '.join(filter(None, (entry.class_name, entry.note)))}"
             for name, entry in NOISE_MODELS.items())
    return "\n".join(lines)


MODEL_HELP = f"""\
MODEL is one of:
  a zoo name          {', '.join(ZOO_NAMES[:-1])} (shipped weights; digits data),
                      {ZOO_NAMES[-1]} (a byte-level language model; pysource data: Python's own source)
  FILE.py:FACTORY     FACTORY() builds the nn.Module; --weights loads a state_dict into it
                      (without --weights the factory's initial weights are compiled)
  FILE.pt2            a program saved by torch.export.save (with a dynamic batch dimension)

Hardware: the --preset (default: {DEFAULT_PRESET}), then the --config file's keys on top,
then each --set in order. The preset {DEFAULT_PRESET} sets:
  {settings_text(PRESETS[DEFAULT_PRESET].overrides)}
"""

COMPILE_EPILOG = MODEL_HELP + f"""
Layers: --include / --exclude take layer-name globs ('encoder.*') or module types
(Linear, Conv2d; nn.Linear and torch.nn.Linear work too).

Capture: torch.export by default; --capture symbolic_trace for models it cannot trace.
Dynamic dimensions (--dynamic NAME=DIM,...) stay free in the capture and keep their
names in the ONNX file; by default the batch (dimension 0) and, for token ids
[batch, seq] or [batch, seq, features] into a model of linear layers, seq (dimension 1)
when the model takes every length. A model of several inputs takes one --input-shape
(and --input-dtype) per input, in forward's order.

Calibration data: a built-in set ({', '.join(BUILTIN_DATA)}), a .npz file (its only array,
or the arrays named x and, optionally, y, or one array per input named after forward's
parameters, and y) or a .pt file (a tensor, or a dict with
tensors under "x" and, optionally, "y"), samples along the first dimension, labels y
as class indices; NaN and infinite samples are refused. A zoo model calibrates on
digits unless --calib says otherwise.
Calibration runs at most --calib-batches batches of --batch-size samples (default:
pre_post.input_range.init_from_data, the number the range rule averages over).
--finetune N then trains the input ranges and weights together for N epochs on the
labelled samples (xbar.fine_tune's recipe, cross-entropy), with the training noise
the hardware config sets (modifier, forward.out_noise, forward.w_noise; e.g.
--preset hwa) in every training step and none in the compiled model (xbar evaluate
reads forward.out_noise at every analog read, as aihwkit does: --out-noise). With labelled
data (--test DATA, a built-in data set's test split, else labelled --calib samples,
which the output then names as the calibration samples) the --metric (default: the
zoo model's, else top-1 accuracy) of the original, the compiled PyTorch model and the
ONNX file (in ONNX Runtime) is printed. Labels: class indices [N] for a classifier,
[N, ...] per token or pixel, floats for mse.

Conductances past protobuf's 2 GB limit go to FILE.onnx.data next to the ONNX
file (ONNX external data; keep the two together); --external-data asks for that
at any size. ONNX Runtime and `xbar inspect` read the pair.

--save-graph writes the converted graph as a torch.save archive of tensors and
text (loadable with torch.load(weights_only=True)); `xbar inspect` reads it.

Under torchrun (torchrun --nproc-per-node 2 -m xbar.compiler.cli compile ...) every
process calibrates and fine-tunes on its share of the data; rank 0 reports and writes.

examples:
  xbar compile                                   # LeNet -> lenet.onnx, with accuracies
  xbar compile --finetune 5                      # ... fine-tuned for the 8-bit periphery first
  xbar compile mlp --preset 6bit-256x256 -o mlp6.onnx
  xbar compile net.py:make_net --weights net.pt --calib inputs.npz
  xbar compile model.pt2 --calib images.npz --set forward.out_bound=20
  xbar compile gpt.py:make_gpt --input-shape 1,16 --input-dtype int64 --dynamic batch=0,seq=1
  xbar compile two.py:make_net --calib inputs.npz     # arrays named after forward's parameters
  xbar compile charlm                            # the language model, with perplexities
  xbar compile resnet --exclude 'layer2.*' --keep-first-last-digital --save-graph resnet.graph.pt
  xbar compile resnet --chip hermes              # placed on IBM HERMES, with latency and energy
"""

EVALUATE_EPILOG = MODEL_HELP + f"""
Layers, capture, calibration data and --finetune work as in `xbar compile --help`.
The model is compiled once; each seed 0..N-1 programs its arrays (xbar.program),
and each time reads them from that programmed state (xbar.drift) with its own
read seed, derived from the seed and the time. The --metric (default: the zoo
model's, else top-1 accuracy) is measured on --test DATA, else on the labelled
test split of a built-in data set, else on the labelled samples of --calib (the
calibration samples themselves: an optimistic figure, and the output says so). Under torchrun
the processes share the seeds out; rank 0 reports the whole evaluation.
Every analog read adds the arrays' forward.out_noise (e.g. 0.04 with --preset hwa) as
aihwkit's tiles do in evaluation, drawn from a seed of the seed and the time
(--out-noise every-read, the default); --out-noise training-only reads without it
(output noise as training noise only). --compile takes training-only.

Devices: --noise MODEL, with the model's defaults and the converter's g_max:
{device_models_text()}
or a [noise] section in the --config file naming the model and any of its fields:
  [noise]
  model = "pcm"
  prog_noise_scale = 0.5

examples:
  xbar evaluate                                  # LeNet, 8-bit, PCM, 10 seeds at 1s,1h,1d,1y
  xbar evaluate mlp --seeds 3 --times 10m,2d --noise state-independent
  xbar evaluate --finetune 5 --compensation per-column --plot lenet-drift.png
  xbar evaluate resnet --finetune 10 --set forward.out_noise=0.04   # hardware-aware fine-tuning
  xbar evaluate resnet --config hw.toml --json > resnet-drift.json
  xbar evaluate lenet --chip hermes              # accuracy over time and cost on IBM HERMES
  xbar evaluate charlm --metric perplexity --seeds 3
  xbar evaluate net.py:make_net --weights net.pt --calib train.npz --test held_out.npz --metric mse

An exported FILE.onnx (`xbar compile -o`, plain, programmed, drifted or from `xbar import-measured`) is run
as it is in ONNX Runtime on --test DATA (default: the digits test split) with --metric (default: top-1).
With --times or --seeds its target conductances are re-programmed with --noise, else the device model of
the chip it was compiled for, and read at each time, in one ONNX Runtime session.
Its reads add forward.out_noise as a PyTorch model's do (--out-noise; seed 0 as it is):
  xbar evaluate lenet.onnx
  xbar evaluate lenet.onnx --seeds 3 --times 1s,1d --noise pcm --json
"""

INSPECT_EPILOG = """\
FILE is an ONNX file from `xbar compile -o` or a graph archive from `--save-graph`.
"at g_max" is the fraction of devices (G+ and G-) within 1% of (g_max - g_min) of g_max.
In a narrow terminal the settings and the conductances are two tables.

examples:
  xbar inspect lenet.onnx
  xbar inspect lenet.onnx --graph
  xbar inspect lenet.onnx --json > lenet.json
  xbar inspect lenet.onnx --plot lenet.png
  xbar inspect lenet.onnx --mapping             # compiled with --chip: per-layer arrays, latency, energy
  xbar inspect lenet.onnx --mapping --plot chip.png
"""

MAIN_EPILOG = """\
examples:
  xbar compile
  xbar evaluate --seeds 3 --times 1h,1y
  xbar inspect lenet.onnx --graph
  xbar presets
  xbar chips

exit status: 0 ok, 1 the work failed, 2 the input needs fixing (command line, model file,
data, config, output path); --debug shows tracebacks"""


def build_parser() -> ArgumentParser:
    """The ``xbar`` parser; each command sets ``command`` to its name."""
    parser = ArgumentParser(prog="xbar", description="Compile trained PyTorch models for analog crossbar "
                            "arrays, evaluate them on noisy devices and inspect the annotated ONNX they "
                            "become.", epilog=MAIN_EPILOG,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_text())
    common = ArgumentParser(add_help=False)
    for accepting_debug in (parser, common):  # main() reads --debug from argv, before parsing can fail
        accepting_debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                     help="show tracebacks and library warnings")
    parser.set_defaults(debug=False)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_compile(commands, common)
    _add_evaluate(commands, common)
    _add_inspect(commands, common)
    _add_program_files(commands, common)
    presets = commands.add_parser("presets", parents=[common], help="list the hardware presets",
                                  description="List the named hardware presets, what they set and "
                                  "where their numbers come from.", epilog="example:\n  xbar presets",
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    presets.set_defaults(command="presets")
    _add_chips(commands, common)
    return parser


def _add_chips(commands, common) -> None:
    chips = commands.add_parser("chips", parents=[common], help="list the chips `--chip` compiles for",
                                description="List the shipped chip targets: their shape, periphery, cost terms and "
                                "the sources of their values.", epilog="examples:\n  xbar chips\n"
                                "  xbar chips --toml hermes > mine.toml",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    chips.add_argument("--toml", metavar="NAME", help="print chip NAME as a TOML chip file instead")
    chips.set_defaults(command="chips")


def _add_compile(commands, common) -> None:
    compile_ = commands.add_parser(
        "compile", parents=[common], help="compile a model to annotated ONNX (default: the shipped LeNet)",
        description="Capture a model, insert the crossbar periphery, calibrate its input ranges, lower the "
        "weights to conductances and write annotated ONNX.",
        epilog=COMPILE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_arguments(compile_)
    compile_.add_argument("-o", "--output", metavar="FILE.onnx", type=_file_name,
                          help="ONNX file to write (default: named after --weights, else the model file or "
                          "zoo name: lenet.onnx)")
    compile_.add_argument("--external-data", action="store_true",
                          help="keep the initializers in FILE.onnx.data next to the ONNX file (automatic past "
                          "protobuf's 2 GB limit)")
    compile_.add_argument("--scan-recurrent", action="store_true",
                          help="write each recurrent layer (nn.LSTM, nn.GRU, nn.RNN) as an ONNX Scan loop, so "
                          "ONNX Runtime runs every sequence length (default: unrolled at the example's length)")
    compile_.add_argument("--save-graph", metavar="PATH", type=_file_name,
                          help="also write the converted graph archive")
    compile_.set_defaults(command="compile")


def _add_evaluate(commands, common) -> None:
    evaluate = commands.add_parser(
        "evaluate", parents=[common], help="test accuracy (or --metric) over time on noisy, drifting devices",
        description="Compile a model as `xbar compile` does, then program its arrays with device noise for "
        "several seeds and read them at several times after programming: the test accuracy's (or the "
        "--metric's) mean and std per time, next to the noise-free converted model's.",
        epilog=EVALUATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_arguments(evaluate)
    evaluate.add_argument("--times", type=parse_times, default=parse_times(DEFAULT_TIMES), metavar="T,T,...",
                          action=_NoteGiven,
                          help=f"times after programming: seconds, or numbers with s, m, h, d or y (365 days) "
                          f"(default: {DEFAULT_TIMES})")
    evaluate.add_argument("--seeds", type=_seed_count, default=DEFAULT_SEEDS, metavar="N", action=_NoteGiven,
                          help=f"programming instances, seeds 0 to N-1 (default: {DEFAULT_SEEDS})")
    evaluate.add_argument("--noise", choices=NOISE_MODEL_NAMES, metavar="MODEL",
                          help=f"device model: {', '.join(NOISE_MODEL_NAMES)} (default: the [noise] section of "
                          f"--config, else {NOISE_MODEL_NAMES[0]})")
    evaluate.add_argument("--compensation", choices=COMPENSATIONS, default=COMPENSATIONS[0],
                          help="drift compensation: one digital gain per array (global, the default), per "
                          "output column, one per array against the ideal targets' readout "
                          "(global-exact-reference), or none")
    evaluate.add_argument("--out-noise", choices=OUT_NOISE_AT_READ, default=OUT_NOISE_AT_READ[0],
                          help="forward.out_noise at every analog read, as aihwkit's tiles read (every-read, the "
                          "default), or in training only (training-only: the arrays read noise-free)")
    evaluate.add_argument("--recalibrate", type=_positive_int, metavar="N",
                          help="also recalibrate every drifted model on the first N batches of the calibration "
                          "data (no labels: against the converted model's noise-free arrays) and show its "
                          "metric beside the drift compensation's")
    evaluate.add_argument("--recalibration", choices=RECALIBRATIONS, default=RECALIBRATIONS[0],
                          help="with --recalibrate: per-column gain and offset (affine, the default), per-column "
                          "or global gain fitted on the data, or re-estimated batch-norm statistics")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of the table")
    evaluate.add_argument("--plot", metavar="IMAGE", type=_file_name,
                          help="save accuracy against time (.png, .svg, .pdf, ...)")
    evaluate.set_defaults(command="evaluate")


def _add_model_arguments(command: argparse.ArgumentParser) -> None:
    """What `xbar compile` and `xbar evaluate` share: the model, its data, the hardware and the compile steps."""
    command.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL",
                         help=f"zoo name, FILE.py:FACTORY or FILE.pt2 (default: {DEFAULT_MODEL}); evaluate: also an "
                         "exported FILE.onnx")
    command.add_argument("--weights", metavar="CHECKPOINT", help="state_dict to load (torch.load weights_only)")
    command.add_argument("--input-shape", type=parse_input_shape, action="append", metavar="N,C,...",
                         help="example input shape, batch first; once per input, in forward's order (default: "
                         "from the data or the model)")
    command.add_argument("--input-dtype", choices=INPUT_DTYPES, action="append", default=[], metavar="DTYPE",
                         help=f"dtype of the example inputs without --calib ({', '.join(INPUT_DTYPES)}): once for "
                         "every input or once per --input-shape (default: the model's float dtype; give int64 "
                         "for token ids)")
    command.add_argument("--dynamic", type=parse_dynamic, metavar="NAME=DIM,...",
                         help="the input dimensions left free in the capture and the ONNX file, named, e.g. "
                         "batch=0,seq=1 (default: batch=0, and seq=1 for token ids [batch, seq] or "
                         "[batch, seq, features] into linear layers)")
    command.add_argument("--calib", metavar="DATA",
                         help=f"calibration data: {', '.join(BUILTIN_DATA)}, or a .npz / .pt file of inputs "
                         "[N, ...] and optional labels")
    command.add_argument("--test", metavar="DATA",
                         help="labelled data to score on, in the forms --calib takes (default: the built-in data "
                         "set's test split, else the labelled calibration samples)")
    command.add_argument("--metric", choices=METRIC_NAMES, metavar="NAME",
                         help=f"what to score: {', '.join(METRIC_NAMES)} (default: the zoo model's, else "
                         f"{METRIC_NAMES[0]}, top-1)")
    command.add_argument("--preset", choices=list(PRESETS), help="named hardware preset (see `xbar presets`; "
                         f"default: {DEFAULT_PRESET})")
    command.add_argument("--config", metavar="FILE", help="hardware config, .toml or .json, shaped like "
                         "HardwareConfig.to_dict(), applied on top of the preset (missing keys: the preset's)")
    command.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override one config field, e.g. forward.inp_res=254 (repeatable)")
    command.add_argument("--include", action="append", default=[], metavar="PATTERN",
                         help="only layers matching this name glob or module type go to crossbars (repeatable)")
    command.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                         help="keep layers matching this name glob or module type digital (repeatable)")
    command.add_argument("--keep-first-last-digital", action="store_true",
                         help="keep the first and the last crossbar layer digital")
    command.add_argument("--capture", choices=CAPTURE_METHODS, default=CAPTURE_METHODS[0],
                         help="how the model becomes a graph: torch.export (default) or torch.fx.symbolic_trace "
                         "(ignored for a .pt2 program, which is captured already)")
    command.add_argument("--calib-batches", type=_count, metavar="N", help="calibrate on at most N batches "
                         "(default: pre_post.input_range.init_from_data; 0: keep init_value)")
    command.add_argument("--calib-method", choices=CALIBRATION_METHODS, default=CALIBRATION_METHODS[0],
                         help="how the input ranges are set from the data (default: InitFromData, the "
                         "reference rule; the others are aihwkit's post-training methods)")
    command.add_argument("--finetune", type=_count, default=0, metavar="EPOCHS",
                         help="after calibration, train ranges and weights for EPOCHS epochs on the labelled "
                         "data (default: 0, no training)")
    command.add_argument("--compile", action="store_true",
                         help="run calibration, fine-tuning and evaluation through torch.compile (eager without "
                         "a C++ compiler, with a warning); the first batch pays the compile time")
    command.add_argument("--chip", metavar="NAME|FILE.toml",
                         help="place the arrays on a chip (see `xbar chips`): its array size sets the tiling; "
                         "reports latency and energy (compile: and records the placement in the file; "
                         "evaluate: with the chip's device model)")
    command.add_argument("--chips", type=_positive_int, default=1, metavar="N",
                         help="with --chip: spread the model over N such chips (default: 1)")
    command.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                         help=f"calibration, fine-tuning and evaluation batch size (default: {DEFAULT_BATCH_SIZE})")


def _add_inspect(commands, common) -> None:
    inspect = commands.add_parser(
        "inspect", parents=[common], help="show the crossbar layers of an exported file",
        description="Show the crossbar layers of an ONNX export or a saved graph: input ranges, scale "
        "ratios, conductance statistics, DAC/ADC settings.",
        epilog=INSPECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    inspect.add_argument("file", metavar="FILE", help="ONNX file or graph archive")
    inspect.add_argument("--graph", action="store_true", help="also print the graph (ONNX: its node list)")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    inspect.add_argument("--mapping", action="store_true",
                         help="show where a chip target's layers sit and what they cost (files from --chip)")
    inspect.add_argument("--plot", metavar="IMAGE", type=_file_name,
                         help="save conductance histograms and input ranges (.png); with --mapping, the chip's "
                         "cores and arrays coloured by layer and each layer's latency and energy")
    inspect.set_defaults(command="inspect")


PROGRAM_FILE_EPILOG = """\
FILE is an ONNX file from `xbar compile -o`. DIR gets manifest.json and, compiled with --chip, one
chip<k>.npz per chip (a G+ and a G- array per physical array), else arrays.npz (G+ and G- per logical
array); target conductances in uS. The format is documented in xbar.compiler.program_files.
With --format fusion, -o (and the measured input) is instead one CSV file laid out as aihwkit's
fusion_export writes it (xbar.compiler.program_files.fusion).

examples:
  xbar program-file lenet.onnx -o prog/
  xbar import-measured lenet.onnx prog-measured/ -o lenet-measured.onnx
  xbar program-file lenet.onnx --format fusion -o lenet.csv
  xbar import-measured lenet.onnx lenet-measured.csv --format fusion -o lenet-measured.onnx
"""


def _add_program_files(commands, common) -> None:
    """``program-file`` (targets out) and ``import-measured`` (measured conductances in)."""
    program_file = commands.add_parser(
        "program-file", parents=[common], help="write the target conductances for a chip's tools",
        description="Write the target conductances of an exported model, per chip and physical array "
        "(or per logical array without a chip target), with a manifest.", epilog=PROGRAM_FILE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    program_file.add_argument("file", metavar="FILE", help="ONNX file from `xbar compile -o`")
    program_file.add_argument("-o", "--output", metavar="DIR", required=True, type=_file_name,
                              help="directory for the programming files (made if missing); the CSV file "
                              "with --format fusion")
    program_file.add_argument("--format", choices=PROGRAM_FILE_FORMATS, default="xbar",
                              help="xbar: .npz files and a manifest (default); fusion: aihwkit's Fusion CSV")
    program_file.set_defaults(command="program-file")
    measured = commands.add_parser(
        "import-measured", parents=[common], help="put measured conductances into an ONNX file",
        description="Write FILE with its G+ / G- replaced by the conductances a chip's tools measured, "
        "read from the programming files of FILE with the measured values in place of the targets.",
        epilog=PROGRAM_FILE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    measured.add_argument("file", metavar="FILE", help="ONNX file from `xbar compile -o`")
    measured.add_argument("measured", metavar="DIR", help="the programming files with the measured conductances "
                          "(the CSV file with --format fusion)")
    measured.add_argument("--format", choices=PROGRAM_FILE_FORMATS, default="xbar",
                          help="xbar: .npz files and a manifest (default); fusion: aihwkit's Fusion CSV")
    measured.add_argument("-o", "--output", metavar="FILE", required=True, type=_file_name,
                          help="the ONNX file to write")
    measured.set_defaults(command="import-measured")
