"""What ``xbar evaluate`` costs, and the accuracy over time it reports for the zoo.

    python -m benchmarks.bench_evaluate [--repeats 5] [--models mlp lenet resnet transformer] [--skip-accuracy]

Cost: the LeNet on the digits (``8bit`` preset, calibrated as the command line
does), PCM-like devices, global compensation, 10 seeds x 4 times (1s, 1h, 1d,
1y): ``accuracy_over_time`` (program once per seed; drift and a test-set
evaluation per (seed, time); the ideal accuracy once) against one ideal
evaluation (the test accuracy of the converted model). Ratio = evaluate /
(40 x ideal), target at most 3; interleaved medians, one intra-op thread.

Accuracy: ``xbar evaluate MODEL --json`` for each zoo model (8bit preset,
PCM-like defaults, global compensation, 10 seeds, 1s,1h,1d,1y), calibrated only
and with ``--finetune 5`` (xbar.fine_tune's default recipe): mean and std of the
digits test accuracy per time, and the converted model's without noise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import warnings

import torch
from rich.table import Table

from xbar import PCMLikeNoiseModel, accuracy, calibrate, convert, prepare, preset_config
from xbar.compiler.cli.arguments import DEFAULT_BATCH_SIZE, DEFAULT_SEEDS, DEFAULT_TIMES, parse_times
from xbar.compiler.cli.main import main as xbar_main
from xbar.compiler.devices.evaluation import accuracy_over_time
from xbar.models import DIGIT_CLASSIFIERS, load_digits_split, load_pretrained

from benchmarks.common import command_console, interleaved_medians

TARGET = 3.0
TIMES = {time.label: time.seconds for time in parse_times(DEFAULT_TIMES)}


def cost_table(repeats: int) -> Table:
    digits = load_digits_split()
    config = preset_config("8bit")
    prepared = prepare(load_pretrained("lenet"), (digits.train_x[:1],), config)
    calibrate(prepared, digits.train_x.split(DEFAULT_BATCH_SIZE)[:config.pre_post.input_range.init_from_data])
    converted = convert(prepared)
    x, y = digits.test_x, digits.test_y
    pairs = DEFAULT_SEEDS * len(TIMES)
    medians = interleaved_medians({
        "ideal": lambda: accuracy(converted, x, y, DEFAULT_BATCH_SIZE),
        "evaluate": lambda: accuracy_over_time(converted, PCMLikeNoiseModel(), TIMES, DEFAULT_SEEDS, x, y,
                                               batch_size=DEFAULT_BATCH_SIZE),
    }, repeats=repeats, inner=1, warmup=1)
    ratio = medians["evaluate"] / (pairs * medians["ideal"])
    table = Table(title=f"xbar evaluate's cost: LeNet, digits test split ({len(y)} images), batch "
                  f"{DEFAULT_BATCH_SIZE}, 1 thread")
    for column in ("ideal evaluation ms", f"evaluate {DEFAULT_SEEDS} seeds x {len(TIMES)} times s",
                   "per (seed, time) ms", "ratio", "target"):
        table.add_column(column, justify="right")
    verdict = "ok" if ratio <= TARGET else "**missed**"
    table.add_row(f"{1e3 * medians['ideal']:.1f}", f"{medians['evaluate']:.2f}",
                  f"{1e3 * medians['evaluate'] / pairs:.1f}", f"{ratio:.2f}x", f"{TARGET:g}x {verdict}")
    return table


def evaluate_json(*argv: str) -> dict:
    """``xbar evaluate ARGV --json``, run in-process; its JSON."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = xbar_main(["evaluate", *argv, "--json"])
    if status != 0:
        raise SystemExit(f"xbar evaluate {' '.join(argv)} failed with status {status}")
    return json.loads(out.getvalue())


def accuracy_table(names: list[str]) -> Table:
    table = Table(title=f"Digits test accuracy %, mean ± std over {DEFAULT_SEEDS} seeds (8bit, PCM-like, "
                  "global compensation)")
    for column in ("model", "training", "ideal", *TIMES):
        table.add_column(column, justify="left" if column in ("model", "training") else "right")
    for name in names:
        for training, options in (("calibrated", []), ("fine-tuned 5 epochs", ["--finetune", "5"])):
            report = evaluate_json(name, *options)
            cells = [f"{100 * point['mean']:.2f} ± {100 * point['std']:.2f}" for point in report["times"]]
            table.add_row(name, training, f"{100 * report['ideal_accuracy']:.2f}", *cells)
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", choices=DIGIT_CLASSIFIERS, default=list(DIGIT_CLASSIFIERS))
    parser.add_argument("--skip-accuracy", action="store_true", help="only the cost table")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(1)
    console = command_console("bench_evaluate", argv)
    console.print(cost_table(args.repeats))
    if not args.skip_accuracy:
        console.print(accuracy_table(args.models))


if __name__ == "__main__":
    main()
