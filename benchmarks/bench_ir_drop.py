"""What IR drop costs a read: the converted ``hwa`` model with ``forward.ir_drop`` 1.0 against 0.

    python -m benchmarks.bench_ir_drop [--models mlp lenet resnet transformer] [--repeats 10]

Each zoo model is prepared with the ``hwa`` preset and with the same preset at
``forward.ir_drop = 0``, both calibrated on the same first batches of 64 of the
digits training split (so their ranges are equal), converted, and run on the 450
test images in PyTorch and, exported, in ONNX Runtime (CPU provider, one thread);
interleaved medians, one thread. The ratio is the price of the IR-drop read (its
pulse counts, looked up per DAC code, and the product with ``W_eff``).
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import onnxruntime
import torch
from rich.table import Table

from xbar import calibrate, convert, export_onnx, prepare, preset_config
from xbar.models import DIGIT_CLASSIFIERS, load_digits_split, load_pretrained

from benchmarks.common import command_console, interleaved_medians

BATCH = 64


def converted(name: str, ir_drop: float, train_x: torch.Tensor):
    config = preset_config("hwa").with_overrides({"forward.ir_drop": ir_drop})
    prepared = prepare(load_pretrained(name), (train_x[:1],), config)
    calibrate(prepared, list(train_x.split(BATCH)[:config.pre_post.input_range.init_from_data]))
    return convert(prepared)


def ort_session(model, example: torch.Tensor, path: Path) -> onnxruntime.InferenceSession:
    export_onnx(model, (example,), path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=DIGIT_CLASSIFIERS, default=list(DIGIT_CLASSIFIERS))
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    console = command_console("bench_ir_drop", argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    split = load_digits_split()
    x = split.test_x
    table = Table("model", "PyTorch ms: off", "on", "ratio", "ONNX Runtime ms: off", "on", "ratio")
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        for name in args.models:
            models = {drop: converted(name, drop, split.train_x) for drop in (0.0, 1.0)}
            sessions = {drop: ort_session(m, x[:1], Path(folder) / f"{name}-{drop}.onnx") for drop, m in models.items()}
            feed = {sessions[0.0].get_inputs()[0].name: x.numpy()}
            torch_ms = interleaved_medians({drop: (lambda m=m: m(x)) for drop, m in models.items()},
                                           repeats=args.repeats, inner=1, warmup=1)
            ort_ms = interleaved_medians({drop: (lambda s=s: s.run(None, feed)) for drop, s in sessions.items()},
                                         repeats=args.repeats, inner=1, warmup=1)
            table.add_row(name, *(f"{1e3 * t[d]:.1f}" for t in (torch_ms,) for d in (0.0, 1.0)),
                          f"{torch_ms[1.0] / torch_ms[0.0]:.2f}x",
                          *(f"{1e3 * ort_ms[d]:.1f}" for d in (0.0, 1.0)), f"{ort_ms[1.0] / ort_ms[0.0]:.2f}x")
    console.print(table)


if __name__ == "__main__":
    main()
