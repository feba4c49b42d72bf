"""``xbar inspect``: the crossbar layers of an ONNX file or a graph archive, as tables, JSON or a plot."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ...files import check_writable, reporting_write_errors
from ...inspection.read import load_inspection
from ..console import say, stderr_console, stdout_console
from ..inspection_view import plot_layers, print_inspection
from ..mapping_plot import plot_mapping
from ..mapping_view import mapping_record_of, print_mapping


def run(args: argparse.Namespace) -> int:
    plot_path = check_writable(Path(args.plot), "--plot") if args.plot else None
    inspection = load_inspection(args.file)
    if args.mapping:
        record = mapping_record_of(inspection)
        if plot_path is not None:
            with reporting_write_errors(plot_path, "--plot"):
                plot_mapping(record, inspection.metadata["xbar.chip"], plot_path, str(inspection.path))
        if args.json:
            print(json.dumps(record, indent=2, allow_nan=False))
        else:
            print_mapping(stdout_console(), inspection)
        if plot_path is not None:
            say(stderr_console(), f"wrote {plot_path}")
        return 0
    if plot_path is not None:
        with reporting_write_errors(plot_path, "--plot"):
            plot_layers(inspection.layers, plot_path, str(inspection.path))
    if args.json:
        print(json.dumps(inspection.as_dict(with_graph=args.graph), indent=2, allow_nan=False))
    else:
        print_inspection(stdout_console(), inspection, args.graph)
    if plot_path is not None:
        say(stderr_console(), f"wrote {plot_path}")
    return 0
