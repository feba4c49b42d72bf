"""Digits test accuracy by calibration method and weight scaling, at 8 and 6 bits.

    python -m benchmarks.bench_mapping [--models lenet mlp] [--epochs 3]

For every zoo model and DAC/ADC resolution (8-bit: 254 steps, 6-bit: 62 steps,
out_bound 10), the compiled model's accuracy after each input-range
calibration method, before and after :func:`xbar.xbar.fine_tune`'s recipe
(seed 0), and the same for the reference
calibration with one scale ratio per output column
(``mapping.weight_scaling_columnwise``) instead of one per array.
"""

from __future__ import annotations

import argparse
import logging
import warnings

import torch
from rich.table import Table

from xbar import FineTuning, HardwareConfig, accuracy, calibrate, convert, fine_tune, prepare
from xbar.models import DIGIT_CLASSIFIERS, load_digits_split, load_pretrained
from xbar.passes.numerics.calibration import CalibrationMethod

from benchmarks.bench_accuracy import shuffled_batches
from benchmarks.common import command_console

RESOLUTIONS = {"8-bit": 254, "6-bit": 62}
COLUMNWISE = "InitFromData + columnwise"


def config_for(steps: int, columnwise: bool) -> HardwareConfig:
    return HardwareConfig().with_overrides({"forward.inp_res": steps, "forward.out_res": steps,
                                            "forward.out_bound": 10, "mapping.weight_scaling_columnwise": columnwise})


def before_and_after(name: str, config: HardwareConfig, method: CalibrationMethod, data, recipe: FineTuning):
    """Accuracy (%) of the converted model after calibration, then after fine-tuning."""
    prepared = prepare(load_pretrained(name), (data.train_x[:2],), config)
    calibrate(prepared, shuffled_batches(data.train_x, 100, recipe.batch_size, 0), method)
    def score():
        return 100 * accuracy(convert(prepared), data.test_x, data.test_y)

    calibrated = score()
    fine_tune(prepared, data.train_x, data.train_y, recipe)
    return calibrated, score()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=DIGIT_CLASSIFIERS, default=list(DIGIT_CLASSIFIERS))
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs (default 3)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    recipe = FineTuning(epochs=args.epochs)
    console = command_console("bench_mapping", argv)
    data = load_digits_split()
    variants = [(m.value, m, False) for m in CalibrationMethod] + [(COLUMNWISE, CalibrationMethod.INIT_FROM_DATA, True)]
    table = Table(title="digits test accuracy (%): calibrated -> fine-tuned", title_justify="left")
    table.add_column("model")
    table.add_column("original", justify="right")
    table.add_column("bits")
    for label, _, _ in variants:
        table.add_column(label, justify="right")
    for name in args.models:
        original = 100 * accuracy(load_pretrained(name), data.test_x, data.test_y)
        for bits, steps in RESOLUTIONS.items():
            cells = []
            with console.status(f"{name}, {bits}"):
                for _, method, columnwise in variants:
                    before, after = before_and_after(name, config_for(steps, columnwise), method, data, recipe)
                    cells.append(f"{before:.2f} -> {after:.2f}")
            table.add_row(name, f"{original:.2f}", bits, *cells)
    console.print(table)
    console.print(f"fine-tuning: {recipe}; calibration on 100 shuffled training batches of {recipe.batch_size}")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
