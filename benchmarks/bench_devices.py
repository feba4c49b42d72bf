"""Cost of program() and drift(), per seed of a zoo model and per million devices, beside aihwkit's,
and what drift does to the zoo models.

    python -m benchmarks.bench_devices [--sizes 256 512 1024 2048] [--repeats 5] [--skip-accuracy]

One seed: each zoo model (converted, ideal periphery), PCMLikeNoiseModel; median
milliseconds, timed in alternation, one intra-op thread, of ``program`` then
``drift`` to one day, with global compensation and without; of the same with a
deep copy of the whole GraphModule for each (the baseline: what both did before
they copied the arrays alone); and of aihwkit's ``PCMLikeNoiseModel`` (the
reference, if aihwkit is installed: ``pip install --no-deps aihwkit==1.1.0``)
drawing programming noise, drift exponents and the conductances a day later
for the same G+ and G- tensors. aihwkit's figure has no copy (it changes its
tiles in place) and no compensation (which reads its C++ tiles); xbar's without
compensation is the one to compare it with.

Cost: one converted linear layer of N x N weights (2 N^2 devices, G+ and G-),
PCMLikeNoiseModel; median seconds of ``program`` and of ``drift`` to one day
with global compensation (both include copying the arrays), one intra-op thread.

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

from xbar import PCMLikeNoiseModel, accuracy, calibrate, convert, drift, prepare, program
from xbar.compiler.devices.arrays import DriftCompensation, drift_arrays, program_arrays
from xbar.models import DIGIT_CLASSIFIERS, load_digits_split, load_pretrained
from xbar.passes.capture import copy_graph_module
from xbar.passes.numerics.crossbar import crossbar_modules

from benchmarks.common import command_console, interleaved_medians

TIMES = {"10 min": 600.0, "1 day": 86400.0, "1 year": 365 * 86400.0}
DAY = 86400.0


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def converted_zoo(name: str, data):
    prepared = prepare(load_pretrained(name), (data.test_x[:2],))
    calibrate(prepared, data.train_x.split(64))
    return convert(prepared)


def deep_copy_program_drift(converted, model) -> None:
    """The baseline: program and drift as they were, each on a deep copy of the whole GraphModule."""
    programmed = copy_graph_module(converted)
    program_arrays(programmed, model, torch.Generator().manual_seed(0))
    drifted = copy_graph_module(programmed)
    drift_arrays(drifted, model, DAY, torch.Generator().manual_seed(1), DriftCompensation.GLOBAL)


def aihwkit_reference():
    """A function running aihwkit's PCM model on a list of conductance tensors, or None without aihwkit."""
    try:
        from aihwkit.inference.noise.pcm import PCMLikeNoiseModel as AihwkitPCM
    except ImportError:
        return None
    reference = AihwkitPCM(g_max=PCMLikeNoiseModel().g_max)

    def program_and_drift(targets: list[torch.Tensor]) -> None:
        for g_target in targets:
            g_prog = reference.apply_programming_noise_to_conductance(g_target)
            nu = reference.generate_drift_coefficients(g_target)
            reference.apply_drift_noise_to_conductance(g_prog, nu, DAY)
    return program_and_drift


def seed_table(names: list[str], repeats: int, console) -> Table:
    reference = aihwkit_reference()
    if reference is None:
        console.print("aihwkit is not installed: no aihwkit column (pip install --no-deps aihwkit==1.1.0)")
    table = Table(title="One seed: program + drift to 1 day, ms (PCMLikeNoiseModel, 1 thread)")
    columns = ["model", "devices", "xbar", "xbar, no comp.", "deep copies", "deep copies / xbar"]
    columns += ["aihwkit", "xbar no comp. / aihwkit"] if reference is not None else []
    for column in columns:
        table.add_column(column, justify="right")
    data, model = load_digits_split(), PCMLikeNoiseModel()
    for name in names:
        converted = converted_zoo(name, data)
        targets = [g for crossbar in crossbar_modules(converted).values() for g in (crossbar.g_plus, crossbar.g_minus)]
        fns = {"xbar": lambda: drift(program(converted, model, seed=0), DAY, seed=1),
               "no comp.": lambda: drift(program(converted, model, seed=0), DAY, seed=1, compensation=None),
               "deep copies": lambda: deep_copy_program_drift(converted, model)}
        if reference is not None:
            torch.manual_seed(0)
            fns["aihwkit"] = lambda: reference(targets)
        ms = {key: 1e3 * seconds for key, seconds in interleaved_medians(fns, repeats, inner=5).items()}
        cells = [name, f"{sum(g.numel() for g in targets) / 1e3:.1f} k", f"{ms['xbar']:.2f}", f"{ms['no comp.']:.2f}",
                 f"{ms['deep copies']:.2f}", f"{ms['deep copies'] / ms['xbar']:.2f}"]
        if reference is not None:
            cells += [f"{ms['aihwkit']:.2f}", f"{ms['no comp.'] / ms['aihwkit']:.2f}"]
        table.add_row(*cells)
    return table


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
        converted = converted_zoo(name, data)
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
    parser.add_argument("--models", nargs="+", choices=DIGIT_CLASSIFIERS, default=list(DIGIT_CLASSIFIERS))
    parser.add_argument("--skip-accuracy", action="store_true", help="only the cost table")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(1)
    console = command_console("bench_devices", argv)
    console.print(seed_table(args.models, 6 * args.repeats, console))
    console.print(cost_table(args.sizes, args.repeats))
    if not args.skip_accuracy:
        console.print(drift_table(args.models))


if __name__ == "__main__":
    main()
