"""``xbar program-file``: the target conductances of an ONNX file as programming files, torch-free."""

from __future__ import annotations

import argparse

from ...program_files.onnx_file import onnx_source
from ...program_files.write import write_source
from ..console import say, stderr_console


def run(args: argparse.Namespace) -> int:
    directory = write_source(onnx_source(args.file), args.output)
    say(stderr_console(), f"wrote {directory}")
    return 0
