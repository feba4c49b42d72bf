"""``xbar compile``: load a model, prepare, calibrate (and fine-tune), convert, export ONNX, report (the
metric of the original, compiled and ONNX models when there is labelled data).

The output paths are checked first, then everything :func:`~.cli_steps.load_inputs`
checks, so a mistake is reported before minutes of work, and nothing is written
unless everything worked. Under torchrun every process calibrates and fine-tunes
on its share of the data; rank 0 alone exports and reports.
"""

from __future__ import annotations

import argparse

from ...chip.shipped import chip_named
from ...chip.target import check_capacity, chip_config, map_converted
from ...files import check_writable, reporting_write_errors
from ...inspection.archive import save_graph
from ...inspection.converted import summarize
from ...onnx.export import export_onnx_files, scanned_lengths
from ...pipeline.stages import convert
from ..console import is_reporting_process, quiet_loggers, say, stderr_console, stdout_console
from ..inspection_view import count_text, describe_config, print_layers
from ..preflight import output_paths
from ..report import calibration_note, mapping_note, metric_report
from ..steps import compile_steps, hardware_config, hardware_origin, load_inputs


def run(args: argparse.Namespace) -> int:
    out, err = stdout_console(), stderr_console()
    paths = output_paths(args)
    for option, path in paths.items():
        check_writable(path, option)
    output, graph_path = paths["-o"], paths.get("--save-graph")
    chip = chip_named(args.chip) if args.chip else None
    config = hardware_config(args) if chip is None else chip_config(hardware_config(args), chip)
    inputs = load_inputs(args, config, "--finetune" if args.finetune else None)

    def check_prepared(prepared) -> None:  # before the minutes calibration and fine-tuning may take
        if args.scan_recurrent:
            scanned_lengths(prepared, "--scan-recurrent")
        if chip is not None:
            check_capacity(convert(prepared), chip, args.chips)

    compiled = compile_steps(inputs, args, err, check_prepared)
    if not is_reporting_process():
        return 0
    converted, source, data = compiled.converted, inputs.source, inputs.data
    mapping = None if chip is None else map_converted(converted, inputs.example, chip, args.chips)
    with err.status(f"exporting ONNX to {output}"), quiet_loggers("torch.onnx"), reporting_write_errors(output, "-o"):
        written = export_onnx_files(converted, inputs.example, output, args.external_data or None, args.scan_recurrent)
    if graph_path is not None:
        with reporting_write_errors(graph_path, "--save-graph"):
            save_graph(converted, graph_path)
    summary = summarize(converted)
    print_layers(out, summary.arrays, f"{source.name}: {count_text(summary.arrays)}", summary.digital)
    say(out, f"hardware: {hardware_origin(args)}: {describe_config(inputs.config.to_dict())}")
    if mapping is not None:
        say(out, f"{mapping_note(mapping)} (each layer: xbar inspect {output} --mapping)")
    say(out, calibration_note(compiled.calibration_batches, data, args.batch_size))
    if compiled.fine_tuning:
        say(out, compiled.fine_tuning)
    if inputs.scoring is not None:
        say(out, metric_report(source, converted, output, inputs.scoring, args.batch_size))
    say(out, f"wrote {' and '.join(map(str, written + ([graph_path] if graph_path else [])))}")
    return 0

