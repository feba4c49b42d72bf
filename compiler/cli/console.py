"""Where the command line prints: rich consoles for results and progress, one-line
messages on stderr, and quiet library loggers. Imports nothing heavy."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from rich.console import Console

PROGRAM = "xbar"


def launched_by_torchrun() -> bool:
    """Whether this process is one of several that torchrun started (its WORLD_SIZE is above 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_reporting_process() -> bool:
    """Whether this process prints and writes files: the only one, or rank 0 of torchrun's processes."""
    return os.environ.get("RANK", "0") == "0"


def stdout_console() -> Console:
    """Console for results; 160 columns when output is not a terminal and COLUMNS is not set.
    Silent on every torchrun rank but 0."""
    quiet = not is_reporting_process()
    console = Console(quiet=quiet)
    return console if console.is_terminal or "COLUMNS" in os.environ else Console(width=160, quiet=quiet)


def stderr_console() -> Console:
    """Console for progress and notes, so stdout holds only results. Silent on every torchrun rank but 0."""
    return Console(stderr=True, quiet=not is_reporting_process())


def say(console: Console, renderable) -> None:
    """Print text as it is (no markup, no highlighting, one unbroken line however long: a path stays whole), or
    a rich renderable."""
    console.print(renderable, markup=False, highlight=False, soft_wrap=isinstance(renderable, str))


def print_error(message: str, every_rank: bool = False) -> None:
    """One error line on stderr; under torchrun from rank 0 only, unless ``every_rank`` (an error that
    may be this rank's alone), which other ranks then prefix with their rank."""
    if is_reporting_process():
        print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    elif every_rank:
        print(f"{PROGRAM}: error: rank {os.environ['RANK']}: {message}", file=sys.stderr)


def print_warning(message: str) -> None:
    if is_reporting_process():
        print(f"{PROGRAM}: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Silence library loggers that print graphs and tracebacks for errors reported as one line."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
