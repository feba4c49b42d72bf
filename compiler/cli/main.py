"""The ``xbar`` command line's entry point: parse, run one command, report errors in one line.

Exit status: 0 on success; 2 for any :class:`~xbar.passes.errors.UserError` (the
command line, a model file, data, a config or an output path needs fixing; the
message says what to do); 1 for any other failure (a model that cannot be
captured or exported, or an unexpected error, which asks for ``--debug``);
130 when interrupted. An error is one line on stderr; ``--debug`` adds the traceback.

Under torchrun (``torchrun --nproc-per-node N -m xbar.compiler.cli compile ...``)
every process joins torchrun's process group and runs the command on its share
of the data; only rank 0 prints and writes files.

This module imports nothing heavy: the arguments are checked first (model names,
files, presets, output paths: :mod:`.preflight`), then each command's module is
imported when the command runs, so ``--help``, ``--version``, ``presets`` and a
mistyped argument never load torch, and Ctrl-C while torch loads is reported like
any other interruption.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import traceback
import warnings
from typing import Iterator, Optional, Sequence

from ...passes.errors import UserError, XbarError
from .arguments import build_parser
from .console import launched_by_torchrun, print_error, print_warning
from .preflight import check_arguments, is_onnx_file

RUNNERS = {"compile": "commands.compile", "evaluate": "commands.evaluate", "inspect": "commands.inspect",
           "presets": "commands.presets", "chips": "commands.chips", "program-file": "commands.program_file",
           "import-measured": "commands.import_measured"}
"""Command -> the module (in this package) whose ``run(args)`` carries it out."""
INTERRUPTED = 130
TORCH_INTERNAL_WARNINGS = (r"The tensor attributes .* were assigned during export",  # nn.LSTM's _flat_weights
                           r"Using a non-tuple sequence for multidimensional indexing is deprecated")
"""torch warnings about its own internals that it attributes to other modules; hidden unless --debug."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``xbar`` command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        with _library_warnings(debug):
            args = build_parser().parse_args(argv)
            check_arguments(args)  # before the command's module (and torch) is imported
            runner = importlib.import_module(f"{__package__}.{runner_module(args)}")  # heavy: imported on use
            with _process_group_if_launched():
                return runner.run(args)
    except KeyboardInterrupt:
        print_error("interrupted; no output was written unless reported above")
        return INTERRUPTED
    except Exception as exc:  # every error ends here as one line (and a traceback with --debug)
        if debug:
            traceback.print_exc()
        status, message = describe_error(exc)
        print_error(message, every_rank=not isinstance(exc, UserError))  # user errors fail every rank alike
        return status


def runner_module(args) -> str:
    """The module that runs ``args``: :data:`RUNNERS`'s, but ``commands.evaluate_onnx`` for an exported file."""
    if args.command == "evaluate" and is_onnx_file(args.model):
        return "commands.evaluate_onnx"
    return RUNNERS[args.command]


def describe_error(exc: Exception) -> tuple[int, str]:
    """Exit status and one-line message for an exception: 2 for the user's to fix, else 1."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if isinstance(exc, UserError):
        return 2, first
    if isinstance(exc, XbarError):
        return 1, first
    return 1, f"unexpected {type(exc).__name__}: {first}; rerun with --debug for the traceback and report it"


@contextlib.contextmanager
def _process_group_if_launched() -> Iterator[None]:
    """Under torchrun (several processes), join its process group for the command's lifetime."""
    if not launched_by_torchrun():
        yield
        return
    from ..pipeline.distributed import process_group_from_environment  # heavy: only under torchrun

    with process_group_from_environment():
        yield


@contextlib.contextmanager
def _library_warnings(debug: bool) -> Iterator[None]:
    """Show warnings as one line each; hide torch's own warnings (deprecations, LSTM's ``_flat_weights``,
    indexing) unless debugging: they are about torch's internals, not the user's model."""
    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message).strip().splitlines()
        print_warning(text[0] if text else category.__name__)

    with warnings.catch_warnings():
        if not debug:
            warnings.showwarning = show
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch(\.|$)")
            for message in TORCH_INTERNAL_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
        yield
