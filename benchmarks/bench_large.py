"""Peak memory and time of compile + export of a large MLP, past protobuf's 2 GB limit.

    python -m benchmarks.bench_large [--params 50e6 200e6 500e6] [--layers 8]

Each size runs in a fresh process: an MLP of ``--layers`` square linear layers
(about ``--params`` float32 parameters in all) is built, then ``compile_model``
prepares it, calibrates on one batch of 4, converts and exports it (the
conductances past 1.5 GiB go to ``<name>.onnx.data``). The table shows the
model's FP32 size, the process's peak resident memory (the user's model, torch
itself and everything the compilation held at once) as a multiple of that size
(target at most 5x at 500 million parameters), the seconds of the compile +
export call and the files written; another fresh process then loads the file in
ONNX Runtime and runs one batch. Run by hand: the largest size needs about 10 GB
of memory and minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from .common import command_console


def wide_mlp(params: float, layers: int) -> nn.Sequential:
    width = int(round((params / layers) ** 0.5))
    torch.manual_seed(0)
    blocks = []
    for _ in range(layers):
        linear = nn.Linear(width, width, bias=False)
        nn.init.normal_(linear.weight, std=width ** -0.5)  # faster than the default uniform init at this size
        blocks += [linear, nn.ReLU()]
    return nn.Sequential(*blocks[:-1])


def compile_child(params: float, layers: int, output: Path) -> dict:
    from xbar import compile_model

    model = wide_mlp(params, layers)
    width = model[0].in_features
    x = torch.randn(4, width)
    size = sum(p.numel() for p in model.parameters()) * 4
    start = time.perf_counter()
    result = compile_model(model, (x,), calibration_data=[x], output=output)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del result
    files = sorted(p.name for p in output.parent.iterdir())
    return {"width": width, "fp32_bytes": size, "peak_bytes": peak, "seconds": seconds, "files": files}


def ort_child(output: Path, width: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    start = time.perf_counter()
    session = ort.InferenceSession(str(output))
    y = session.run(None, {session.get_inputs()[0].name: np.ones((2, width), np.float32)})[0]
    return {"ort_seconds": time.perf_counter() - start, "ort_finite": bool(np.isfinite(y).all())}


def _child(*argv: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.bench_large", *argv], capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=float, nargs="+", default=[50e6, 200e6, 500e6])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--child", choices=["compile", "ort"], help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child == "compile":
        print(json.dumps(compile_child(args.params[0], args.layers, args.output)))
        return
    if args.child == "ort":
        print(json.dumps(ort_child(args.output, args.width)))
        return
    console = command_console("bench_large", argv)
    console.print("| parameters | FP32 | peak RSS | peak / FP32 | compile + export | files | ORT load + run |")
    console.print("|---:|---:|---:|---:|---:|---|---:|")
    for params in args.params:
        with tempfile.TemporaryDirectory() as folder:
            output = Path(folder) / "mlp.onnx"
            row = _child("--child", "compile", "--params", str(params), "--layers", str(args.layers),
                         "--output", str(output))
            row |= _child("--child", "ort", "--output", str(output), "--width", str(row["width"]))
        gb = 1e9
        console.print(f"| {row['fp32_bytes'] / 4 / 1e6:.0f} M | {row['fp32_bytes'] / gb:.2f} GB | "
                      f"{row['peak_bytes'] / gb:.2f} GB | {row['peak_bytes'] / row['fp32_bytes']:.2f}x | "
                      f"{row['seconds']:.1f} s | {', '.join(row['files'])} | {row['ort_seconds']:.1f} s"
                      f"{'' if row['ort_finite'] else ' (non-finite output!)'} |", highlight=False, markup=False)


if __name__ == "__main__":
    main()
