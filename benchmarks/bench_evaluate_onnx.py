"""The exported file in ONNX Runtime against the PyTorch evaluation of the model it came from.

    python -m benchmarks.bench_evaluate_onnx [--seeds 3] [--times 1s,1y] [--models lenet mlp ...]

Each digit classifier of the zoo at the default preset, calibrated on 64 training images, converted and
exported; on the digits test split: the noise-free accuracy of the converted model (PyTorch) and of its
file (``xbar.evaluate_onnx``), then the mean accuracy over ``--seeds`` programming seeds at each time with
the PCM-like device model and global drift compensation, by ``xbar.accuracy_over_time`` and by
``xbar.onnx_accuracy_over_time`` (the file re-programmed with the same seeds, one ONNX Runtime session), and
the wall time each took (and their ratio). One intra-op thread.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--times", default="1s,1y")
    parser.add_argument("--models", nargs="+")
    args = parser.parse_args()
    torch.set_num_threads(1)

    from xbar import (
        PCMLikeNoiseModel,
        accuracy_over_time,
        calibrate,
        convert,
        evaluate_onnx,
        export_onnx,
        onnx_accuracy_over_time,
        prepare,
        score,
    )
    from xbar.compiler.cli.arguments import parse_times
    from xbar.compiler.metrics import metric
    from xbar.models import DIGIT_CLASSIFIERS, load_digits_split, load_pretrained

    digits = load_digits_split()
    x, y = digits.test_x, digits.test_y
    times = {t.label: t.seconds for t in parse_times(args.times)}
    print("| model | PyTorch | ONNX Runtime | " + " | ".join(f"{label} PyTorch | {label} ORT" for label in times)
          + " | PyTorch s | ORT s | ORT / PyTorch |")
    print("|---" * (6 + 2 * len(times)) + "|")
    for name in args.models or sorted(DIGIT_CLASSIFIERS):
        prepared = prepare(load_pretrained(name), (digits.train_x[:16],))
        calibrate(prepared, [digits.train_x[:64]])
        converted = convert(prepared)
        with tempfile.TemporaryDirectory() as directory:
            path = export_onnx(converted, (x[:16],), Path(directory) / f"{name}.onnx")
            ideal, file_ideal = score(converted, x, y, metric("accuracy")), evaluate_onnx(path, (x, y))
            start = time.perf_counter()
            torch_run = accuracy_over_time(converted, PCMLikeNoiseModel(), times, args.seeds, x, y)
            middle = time.perf_counter()
            ort_run = onnx_accuracy_over_time(path, PCMLikeNoiseModel(), times, args.seeds, (x, y))
            end = time.perf_counter()
        cells = [f"{p.mean:.2%} | {q.mean:.2%}" for p, q in zip(torch_run.points, ort_run.points)]
        print(f"| {name} | {ideal:.2%} | {file_ideal:.2%} | " + " | ".join(cells)
              + f" | {middle - start:.1f} | {end - middle:.1f} | {(end - middle) / (middle - start):.2f} |")


if __name__ == "__main__":
    main()
