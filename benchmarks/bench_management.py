"""What per-vector noise and bound management cost a read: the converted ``hwa`` model (CONSTANT) against ABS_MAX,
and ABS_MAX with ITERATIVE bound management.

    python -m benchmarks.bench_management [--models mlp lenet resnet transformer] [--repeats 5]

Each zoo model is prepared with the ``hwa`` preset without IR drop (CONSTANT), with ``forward.noise_management``
ABS_MAX and with ABS_MAX plus ``forward.bound_management`` ITERATIVE, all calibrated on the same first batches of
64 of the digits training split (so their ranges are equal), converted, and run on the 450 test images in PyTorch
and, exported, in ONNX Runtime (CPU provider, one thread); interleaved medians, one thread. A convolution's ABS_MAX
codes every patch with its own scale, so its reads unfold the input; ONNX makes every bound-management read at
once.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import torch
from rich.table import Table

from xbar import calibrate, convert, prepare, preset_config
from xbar.models import DIGIT_CLASSIFIERS, load_digits_split, load_pretrained

from benchmarks.bench_ir_drop import BATCH, ort_session
from benchmarks.common import command_console, interleaved_medians

MODES = {"CONSTANT": {}, "ABS_MAX": {"forward.noise_management": "ABS_MAX"},
         "ABS_MAX+ITERATIVE": {"forward.noise_management": "ABS_MAX", "forward.bound_management": "ITERATIVE"}}
"""Mode -> overrides of the ``hwa`` preset (all at ``forward.ir_drop`` 0, which the management excludes)."""


def converted(name: str, overrides: dict, train_x: torch.Tensor):
    config = preset_config("hwa").with_overrides({"forward.ir_drop": 0.0} | overrides)
    prepared = prepare(load_pretrained(name), (train_x[:1],), config)
    calibrate(prepared, list(train_x.split(BATCH)[:config.pre_post.input_range.init_from_data]))
    return convert(prepared)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=DIGIT_CLASSIFIERS, default=list(DIGIT_CLASSIFIERS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    console = command_console("bench_management", argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    split = load_digits_split()
    x = split.test_x
    table = Table("model", *(f"PyTorch ms: {mode}" for mode in MODES), *(f"ONNX Runtime ms: {mode}" for mode in MODES))
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        for name in args.models:
            models = {mode: converted(name, overrides, split.train_x) for mode, overrides in MODES.items()}
            sessions = {mode: ort_session(m, x[:1], Path(folder) / f"{name}-{mode}.onnx") for mode, m in models.items()}
            feed = {sessions["CONSTANT"].get_inputs()[0].name: x.numpy()}
            torch_ms = interleaved_medians({mode: (lambda m=m: m(x)) for mode, m in models.items()},
                                           repeats=args.repeats, inner=1, warmup=1)
            ort_ms = interleaved_medians({mode: (lambda s=s: s.run(None, feed)) for mode, s in sessions.items()},
                                         repeats=args.repeats, inner=1, warmup=1)
            table.add_row(name, *(f"{1e3 * t[mode]:.1f}" for t in (torch_ms, ort_ms) for mode in MODES))
    console.print(table)


if __name__ == "__main__":
    main()
