"""What unrolling a recurrent layer costs, by sequence length: export time, graph size, ONNX Runtime time.

    python -m benchmarks.bench_recurrent [--steps 4 8 16 32] [--repeats 3]

The model is an LSTM classifier (16 features, 2 layers of 32 hidden units,
batch_first, a linear head on the last step). Its plain side is
``torch.onnx.export(model, (x,), dynamo=True)`` of the float model with a dynamic
batch (one ONNX ``LSTM`` node per layer); the xbar side is ``compile_model`` with
the 8-bit config and 2 calibration batches, whose file has one ``ai.xbar`` node per
weight and step; the scan side compiles the same way and writes the file with
``export_onnx(..., scan_recurrent=True)`` (one ONNX ``Scan`` per layer, one ``ai.xbar``
node per weight in its body, any sequence length). Both run in this process (each once untimed first, so neither
pays the first call's imports), alternating, median of ``--repeats``;
ONNX Runtime's time is the median of 20 runs on a batch of 8, after one warm-up.
The ratios are xbar's over the plain export's, and the scan file's over the unrolled one's
(ORT), measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from rich.table import Table
from torch import nn

from benchmarks.common import EIGHT_BIT, command_console

FEATURES, HIDDEN, LAYERS, BATCH = 16, 32, 2, 8


class LSTMClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(FEATURES, HIDDEN, num_layers=LAYERS, batch_first=True)
        self.head = nn.Linear(HIDDEN, 10)

    def forward(self, x):
        return self.head(self.lstm(x)[0][:, -1])


def _plain(model: nn.Module, x: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch")
    torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=({0: batch},), verbose=False).save(str(path))


def _xbar(model: nn.Module, x: torch.Tensor, path: Path, scan: bool = False) -> None:
    from xbar import HardwareConfig, compile_model, export_onnx

    config = HardwareConfig().with_overrides({**EIGHT_BIT, "pre_post.input_range.enable": True})
    result = compile_model(model, (x,), config, calibration_data=[torch.randn(4, *x.shape[1:]) for _ in range(2)],
                           output=None if scan else path)
    if scan:
        export_onnx(result.converted, (x,), path, scan_recurrent=True)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _ort_seconds(path: Path, x: torch.Tensor) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: x.numpy()}
    session.run(None, feed)
    return statistics.median(_timed(lambda: session.run(None, feed)) for _ in range(20))


def measure(steps: int, repeats: int, folder: Path) -> dict:
    torch.manual_seed(0)
    model = LSTMClassifier().eval()
    x = torch.randn(2, steps, FEATURES)
    paths = {side: folder / f"{side}{steps}.onnx" for side in ("plain", "xbar", "scan")}
    times = {side: [] for side in paths}
    for _ in range(repeats):
        times["plain"].append(_timed(lambda: _plain(model, x, paths["plain"])))
        times["xbar"].append(_timed(lambda: _xbar(model, x, paths["xbar"])))
        times["scan"].append(_timed(lambda: _xbar(model, x, paths["scan"], scan=True)))
    graph = onnx.load(str(paths["xbar"])).graph
    run_input = torch.randn(BATCH, steps, FEATURES)
    return {"export": {side: statistics.median(t) for side, t in times.items()},
            "ort": {side: _ort_seconds(path, run_input) for side, path in paths.items()},
            "arrays": sum(node.domain == "ai.xbar" for node in graph.node), "nodes": len(graph.node)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    console = command_console("bench_recurrent", argv)
    torch.set_num_threads(1)
    table = Table("steps", "ai.xbar nodes", "all nodes", "plain export s", "xbar s", "ratio", "scan s",
                  "ORT plain ms", "ORT xbar ms", "ratio", "ORT scan ms", "scan / xbar")
    with tempfile.TemporaryDirectory() as folder:
        measure(min(args.steps), 1, Path(folder))  # warm-up
        for steps in args.steps:
            m = measure(steps, args.repeats, Path(folder))
            export, run = m["export"], m["ort"]
            table.add_row(str(steps), str(m["arrays"]), str(m["nodes"]), f"{export['plain']:.2f}",
                          f"{export['xbar']:.2f}", f"{export['xbar'] / export['plain']:.2f}x", f"{export['scan']:.2f}",
                          f"{run['plain'] * 1e3:.3f}", f"{run['xbar'] * 1e3:.3f}", f"{run['xbar'] / run['plain']:.1f}x",
                          f"{run['scan'] * 1e3:.3f}", f"{run['scan'] / run['xbar']:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
