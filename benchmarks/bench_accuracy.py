"""Digits test accuracy of every zoo model, original against compiled.

    python -m benchmarks.bench_accuracy [--models lenet mlp] [--seeds 3] [--epochs 5]

Columns, all on the 450-image test split (one image = 0.22 points):

* original: the trained checkpoint in PyTorch;
* ideal: compiled with DAC and ADC off (xbar's default ``HardwareConfig()``:
  learned input ranges only), ranges calibrated from data;
* 8-bit calibrated: ``forward.inp_res = out_res = 254``, ``out_bound = 10``,
  ranges calibrated from data, no training;
* 8-bit tuned: the same after the recipe below, in PyTorch (mean and worst over
  seeds), and the first seed's model exported to ONNX and run in ONNX Runtime
  (ORT seed 0);
* worst - original: the target is >= -0.5 points.

Calibration runs ``init_from_data`` (100) batches of 64 from the shuffled
training split (cycling through it), the number of batches the reference rule
averages over, so the ranges are fully initialised before training starts
(otherwise the first training steps keep replacing the learned range with the
running average).

Fine-tuning: :func:`xbar.xbar.fine_tune` with its default recipe
(:class:`xbar.xbar.FineTuning`): Adam, the input ranges at lr 3e-2 and every
other parameter (weights, biases, norm affines) at lr 3e-4, cosine annealing of
both to 0 over 5 epochs of the training split in shuffled batches of 64,
cross-entropy loss. Models captured with ``torch.export`` keep their batch norm
in eval behaviour while training. The seed sets the calibration order and the
training shuffle.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import onnxruntime
import torch
from rich.table import Table

from xbar import FineTuning, HardwareConfig, accuracy, calibrate, convert, export_onnx, fine_tune, prepare
from xbar.models import DIGIT_CLASSIFIERS, load_digits_split, load_pretrained
from xbar.models.data import DigitsSplit

from benchmarks.common import EIGHT_BIT, command_console

TARGET_LOSS = 0.5
"""Percentage points the fine-tuned 8-bit model may lose against the original."""


def shuffled_batches(x: torch.Tensor, count: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """``count`` batches from shuffled passes over ``x``."""
    generator = torch.Generator().manual_seed(seed)
    passes = math.ceil(count * batch_size / len(x)) + 1
    batches = [x[torch.randperm(len(x), generator=generator)].split(batch_size) for _ in range(passes)]
    return [b for pass_ in batches for b in pass_][:count]


def calibrated(name: str, config: HardwareConfig, data: DigitsSplit, seed: int, batch_size: int):
    """The zoo model prepared for ``config``, input ranges calibrated from the training split."""
    prepared = prepare(load_pretrained(name), (data.train_x[:2],), config)
    count = config.pre_post.input_range.init_from_data
    calibrate(prepared, shuffled_batches(data.train_x, count, batch_size, seed))
    return prepared


def onnx_accuracy(converted, data: DigitsSplit) -> float:
    """Export ``converted`` and score the file in ONNX Runtime."""
    with tempfile.TemporaryDirectory() as directory:
        path = export_onnx(converted, (data.test_x[:1],), Path(directory) / "model.onnx")
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        logits = session.run(None, {session.get_inputs()[0].name: data.test_x.numpy()})[0]
    return float((torch.from_numpy(logits).argmax(1) == data.test_y).float().mean())


def measure(name: str, data: DigitsSplit, recipe: FineTuning, seeds: int) -> dict:
    """Every column of one model's row, in percent."""
    test = (data.test_x, data.test_y)

    def percent(model):
        return 100 * accuracy(model, *test)

    row = {"original": percent(load_pretrained(name))}
    row["ideal"] = percent(convert(calibrated(name, HardwareConfig(), data, 0, recipe.batch_size)))
    eight_bit = HardwareConfig().with_overrides(EIGHT_BIT)
    calibrated_only, tuned = [], []
    for seed in range(seeds):
        prepared = calibrated(name, eight_bit, data, seed, recipe.batch_size)
        calibrated_only.append(percent(convert(prepared)))
        fine_tune(prepared, data.train_x, data.train_y, replace(recipe, seed=seed))
        converted = convert(prepared)
        tuned.append(percent(converted))
        if seed == 0:
            row["tuned_onnx"] = 100 * onnx_accuracy(converted, data)
    row["calibrated"] = statistics.mean(calibrated_only)
    row["tuned_mean"], row["tuned_worst"] = statistics.mean(tuned), min(tuned)
    return row


def results_table(rows: dict[str, dict], seeds: int) -> Table:
    table = Table(title="digits test accuracy (%), 450 images", title_justify="left")
    headers = ("model", "original", "ideal", "8-bit calibrated", f"8-bit tuned, PyTorch mean of {seeds}",
               "8-bit tuned, PyTorch worst", "8-bit tuned, ORT seed 0", "worst - original", "seconds")
    for header in headers:
        table.add_column(header, justify="left" if header == "model" else "right")
    for name, row in rows.items():
        change = row["tuned_worst"] - row["original"]
        colour = "green" if change >= -TARGET_LOSS else "red"
        table.add_row(name, *(f"{row[k]:.2f}" for k in ("original", "ideal", "calibrated", "tuned_mean",
                                                         "tuned_worst", "tuned_onnx")),
                      f"[{colour}]{change:+.2f}[/{colour}]", f"{row['seconds']:.0f}")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=DIGIT_CLASSIFIERS, default=list(DIGIT_CLASSIFIERS))
    parser.add_argument("--seeds", type=int, default=3, help="fine-tuning runs per model (default 3)")
    parser.add_argument("--epochs", type=int, default=FineTuning.epochs, help="fine-tuning epochs (default 5)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch internals when deep-copying exported graphs
    recipe = FineTuning(epochs=args.epochs)
    console = command_console("bench_accuracy", argv)
    console.print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}; recipe: {recipe}",
                  highlight=False)
    data = load_digits_split()
    rows = {}
    for name in args.models:
        start = time.perf_counter()
        with console.status(f"{name}: calibrating and fine-tuning"):
            rows[name] = measure(name, data, recipe, args.seeds)
        rows[name]["seconds"] = time.perf_counter() - start
    console.print(results_table(rows, args.seeds))
    console.print(f"target: the worst fine-tuned 8-bit seed within {TARGET_LOSS} points of the original")


if __name__ == "__main__":
    main()
