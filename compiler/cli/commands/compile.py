"""``xbar compile``: load a model, prepare, calibrate (and fine-tune), convert, export ONNX, report (the
metric of the original, compiled and ONNX models when there is labelled data).

The output paths are checked first, then everything :func:`~.cli_steps.load_inputs`
checks, so a mistake is reported before minutes of work, and nothing is written
unless everything worked. Under torchrun every process calibrates and fine-tunes
on its share of the data; rank 0 alone exports and reports.
"""

from __future__ import annotations

import argparse

from ...files import check_writable, reporting_write_errors
from ...inspection.archive import save_graph
from ...inspection.summary import summarize
from ...onnx.export import export_onnx_files
from ..console import is_reporting_process, quiet_loggers, say, stderr_console, stdout_console
from ..inspection_view import count_text, describe_config, print_layers
from ..preflight import output_paths
from ..report import calibration_note, metric_report
from ..steps import compile_steps, hardware_config, hardware_origin, load_inputs


def run(args: argparse.Namespace) -> int:
    out, err = stdout_console(), stderr_console()
    paths = output_paths(args)
    for option, path in paths.items():
        check_writable(path, option)
    output, graph_path = paths["-o"], paths.get("--save-graph")
    inputs = load_inputs(args, hardware_config(args), "--finetune" if args.finetune else None)
    compiled = compile_steps(inputs, args, err)
    if not is_reporting_process():
        return 0
    converted, source, data = compiled.converted, inputs.source, inputs.data
    with err.status(f"exporting ONNX to {output}"), quiet_loggers("torch.onnx"), reporting_write_errors(output, "-o"):
        written = export_onnx_files(converted, (inputs.example,), output, args.external_data or None)
    if graph_path is not None:
        with reporting_write_errors(graph_path, "--save-graph"):
            save_graph(converted, graph_path)
    summary = summarize(converted)
    print_layers(out, summary.arrays, f"{source.name}: {count_text(summary.arrays)}", summary.digital)
    say(out, f"hardware: {hardware_origin(args)}: {describe_config(inputs.config.to_dict())}")
    say(out, calibration_note(compiled.calibration_batches, data, args.batch_size))
    if compiled.fine_tuning:
        say(out, compiled.fine_tuning)
    if inputs.scoring is not None:
        say(out, metric_report(source, converted, output, inputs.scoring, args.batch_size))
    say(out, f"wrote {' and '.join(map(str, written + ([graph_path] if graph_path else [])))}")
    return 0

