"""Cost of program() and drift() per million devices, and what drift does to the zoo models.

    python -m benchmarks.bench_devices [--sizes 256 512 1024 2048] [--repeats 5] [--skip-accuracy]

Cost: one converted linear layer of N x N weights (2 N^2 devices, G+ and G-),
PCMLikeNoiseModel; median seconds of ``program`` and of ``drift`` to one day
with global compensation (both include copying the model), one intra-op thread.

Drift: each zoo model (ideal periphery, calibrated on the digits), programmed
with the full PCM model (seed 0) and read after 10 minutes, 1 day and 1 year
(seed 1): test accuracy and the mean |logit| relative to the programmed model,
with global compensation and without.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from rich.table import Table
from torch import nn

from xbar import PCMLikeNoiseModel, calibrate, convert, drift, prepare, program
from xbar.models import ZOO, accuracy, load_digits_split, load_pretrained

from benchmarks.common import command_console

TIMES = {"10 min": 600.0, "1 day": 86400.0, "1 year": 365 * 86400.0}


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def cost_table(sizes: list[int], repeats: int) -> Table:
    table = Table(title="program() and drift() cost (PCMLikeNoiseModel, one linear array, 1 thread)")
    for column in ("weights", "devices", "program ms", "drift ms", "program ms / M devices",
                   "drift ms / M devices"):
        table.add_column(column, justify="right")
    model = PCMLikeNoiseModel()
    for n in sizes:
        layer = nn.Linear(n, n).eval()
        converted = convert(prepare(layer, (torch.randn(2, n),)))
        programmed = program(converted, model, seed=0)
        t_program = median_seconds(lambda: program(converted, model, seed=0), repeats)
        t_drift = median_seconds(lambda: drift(programmed, 86400.0, seed=1), repeats)
        devices = 2 * n * n / 1e6
        table.add_row(f"{n} x {n}", f"{devices:.2f} M", f"{1e3 * t_program:.1f}", f"{1e3 * t_drift:.1f}",
                      f"{1e3 * t_program / devices:.1f}", f"{1e3 * t_drift / devices:.1f}")
    return table


def drift_table(names: list[str]) -> Table:
    data = load_digits_split()
    table = Table(title="Digits test accuracy % (mean |logit| vs programmed) under PCM drift, seed 0/1")
    table.add_column("model")
    table.add_column("converted", justify="right")
    table.add_column("programmed", justify="right")
    for label in TIMES:
        for compensation in ("global", "none"):
            table.add_column(f"{label}, {compensation}", justify="right")
    for name in names:
        prepared = prepare(load_pretrained(name), (data.test_x[:2],))
        calibrate(prepared, data.train_x.split(64))
        converted = convert(prepared)
        programmed = program(converted, PCMLikeNoiseModel(), seed=0)
        magnitude = programmed(data.test_x).abs().mean().item()
        cells = [f"{100 * accuracy(converted, data.test_x, data.test_y):.2f}",
                 f"{100 * accuracy(programmed, data.test_x, data.test_y):.2f}"]
        for t in TIMES.values():
            for compensation in ("global", None):
                drifted = drift(programmed, t, seed=1, compensation=compensation)
                ratio = drifted(data.test_x).abs().mean().item() / magnitude
                cells.append(f"{100 * accuracy(drifted, data.test_x, data.test_y):.2f} ({ratio:.3f})")
        table.add_row(name, *cells)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 1024, 2048])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", choices=list(ZOO), default=list(ZOO))
    parser.add_argument("--skip-accuracy", action="store_true", help="only the cost table")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(1)
    console = command_console("bench_devices", argv)
    console.print(cost_table(args.sizes, args.repeats))
    if not args.skip_accuracy:
        console.print(drift_table(args.models))


if __name__ == "__main__":
    main()
