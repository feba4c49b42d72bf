"""``xbar program-file``: the target conductances of an ONNX file as programming files (or a Fusion CSV),
torch-free."""

from __future__ import annotations

import argparse

from ...program_files.formats import write_format
from ...program_files.onnx_file import onnx_source
from ..console import say, stderr_console


def run(args: argparse.Namespace) -> int:
    directory = write_format(onnx_source(args.file), args.output, args.format)
    say(stderr_console(), f"wrote {directory}")
    return 0
