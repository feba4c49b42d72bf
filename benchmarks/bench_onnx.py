"""ONNX Runtime latency of the annotated ONNX file vs the plain FP32 export, and export time.

Run by hand:  python -m benchmarks.bench_onnx [--repeats 7]

For an MLP 784-1024-1024-10 and a 4-layer CNN on 3x32x32 inputs, 8-bit DAC and
ADC (inp_res = out_res = 254, out_bound = 10): the annotated file from
``compile_model(..., output=...)`` against ``torch.onnx.export(model, dynamo=True)``
of the original model, both run by ONNX Runtime with the same session options
(default graph optimisation level, ORT_ENABLE_ALL; ``--threads`` intra-op threads
for ONNX Runtime and torch, 1 by default: steadier on a shared machine).
Repetitions are interleaved and the median taken, so the ratios come from the
same run under the same machine load. The "round only" column is the floor of
any standard-op body: the plain export with nothing but a ``Round`` before and
after each Conv / Gemm / MatMul (the least an 8-bit DAC and ADC add), against
the plain export. Export time: ``compile_model`` (prepare, calibrate on one
example batch of 8, convert, export) against the plain export. Prints one table.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import torch
from torch import nn

from xbar import HardwareConfig, compile_model

from benchmarks.common import EIGHT_BIT, BenchCNN, BenchMLP

BATCHES = (1, 32)
TARGETS = {1: 1.3, 32: 1.15}
EXPORT_TARGET = 1.5
FLOOR_TARGET = 1.15
"""xbar against the round-only floor, at every batch size."""
MODELS = {"mlp 784-1024-1024-10": (BenchMLP, (784,)), "cnn 3x32x32, 4 conv": (BenchCNN, (3, 32, 32))}


def export_plain(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},), verbose=False).save(path)


def export_annotated(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    config = HardwareConfig().with_overrides(EIGHT_BIT)
    compile_model(model, (example,), config, calibration_data=[example], output=path)


def export_round_only(plain: Path, path: Path) -> None:
    """The plain file with a Round on the input and the output of every Conv, Gemm and MatMul."""
    model = ir.load(plain)
    for node in [n for n in model.graph if n.op_type in ("Conv", "Gemm", "MatMul")]:
        round_in = ir.Node("", "Round", [node.inputs[0]], name=f"{node.name}_round_in")
        model.graph.insert_before(node, round_in)
        node.replace_input_with(0, round_in.outputs[0])
        output = node.outputs[0]
        round_out = ir.Node("", "Round", [output], name=f"{node.name}_round_out")
        model.graph.insert_after(node, round_out)
        output.replace_all_uses_with(round_out.outputs[0], replace_graph_outputs=True)
        round_out.replace_input_with(0, output)
    ir.save(model, path)


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def per_run_seconds(session: ort.InferenceSession, feed: dict, runs: int) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    return (time.perf_counter() - start) / runs


def latencies(paths: dict[str, Path], shape: tuple, repeats: int, threads: int, seconds: float = 0.1) -> dict:
    """(name, batch) -> median seconds per run, the two files interleaved."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in paths.items()}
    result = {}
    for batch in BATCHES:
        feed = {next(iter(sessions.values())).get_inputs()[0].name:
                np.random.default_rng(0).standard_normal((batch, *shape), dtype=np.float32)}
        for session in sessions.values():  # warm up, and size a repetition to ~`seconds`
            session.run(None, feed)
        runs = max(10, int(seconds / per_run_seconds(sessions["plain"], feed, 20)))
        samples = {name: [] for name in sessions}
        for _ in range(repeats):
            for name, session in sessions.items():
                samples[name].append(per_run_seconds(session, feed, runs))
        for name in sessions:
            result[name, batch] = statistics.median(samples[name])
    return result


def export_times(factory, shape: tuple, directory: Path, repeats: int) -> dict:
    """Median seconds of the plain export and of compile_model + export, interleaved."""
    example = torch.randn(8, *shape)
    samples = {"plain": [], "annotated": []}
    for _ in range(repeats):
        samples["plain"].append(timed(export_plain, factory().eval(), example, directory / "p.onnx"))
        samples["annotated"].append(timed(export_annotated, factory().eval(), example, directory / "a.onnx"))
    return {name: statistics.median(times) for name, times in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="interleaved repetitions per measurement")
    parser.add_argument("--export-repeats", type=int, default=5, help="repetitions of each export")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of ONNX Runtime and torch (0: their defaults)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for title, (factory, shape) in MODELS.items():
            model = factory().eval()
            example = torch.randn(32, *shape)
            paths = {name: directory / f"{name}.onnx" for name in ("plain", "annotated", "round only")}
            export_plain(model, example, paths["plain"])
            export_annotated(model, example, paths["annotated"])
            export_round_only(paths["plain"], paths["round only"])
            times = latencies(paths, shape, args.repeats, args.threads)
            for batch in BATCHES:
                plain, annotated = times["plain", batch], times["annotated", batch]
                floor = times["round only", batch]
                rows.append((title, f"latency, batch {batch}", plain * 1e3, annotated * 1e3, annotated / plain,
                             TARGETS[batch], (floor / plain, annotated / floor)))
            export = export_times(factory, shape, directory, args.export_repeats)
            rows.append((title, "export time", export["plain"] * 1e3, export["annotated"] * 1e3,
                         export["annotated"] / export["plain"], EXPORT_TARGET, None))
    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, {args.repeats} interleaved repeats, "
          f"{args.threads or 'default'} intra-op thread(s), graph optimisation level ORT_ENABLE_ALL")
    print(f"{'model':<22} {'measure':<18} {'plain ms':>10} {'xbar ms':>10} {'ratio':>7} {'target':>7}"
          f"        {'round only':>10} {'xbar / round only':>18}")
    for title, measure, plain, annotated, ratio, target, floor in rows:
        verdict = "ok" if ratio <= target else "MISSED"
        floor_text = ""
        if floor:
            floor_verdict = "ok" if floor[1] <= FLOOR_TARGET else "MISSED"
            floor_text = f"{floor[0]:>9.3f}x {floor[1]:>9.3f}x <= {FLOOR_TARGET}x {floor_verdict}"
        print(f"{title:<22} {measure:<18} {plain:>10.3f} {annotated:>10.3f} {ratio:>7.3f} {target:>6.2f}x {verdict:<6}"
              f" {floor_text}")


if __name__ == "__main__":
    main()
