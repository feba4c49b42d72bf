"""``xbar import-measured``: an ONNX file with the measured conductances in place of its targets, torch-free."""

from __future__ import annotations

import argparse

from ...program_files.onnx_file import import_measured
from ..console import say, stderr_console


def run(args: argparse.Namespace) -> int:
    output = import_measured(args.file, args.measured, args.output, args.format)
    say(stderr_console(), f"wrote {output}")
    return 0
