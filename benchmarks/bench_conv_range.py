"""What aihwkit's patch rule for a convolution's input range costs a training step.

    python -m benchmarks.bench_conv_range [--models lenet resnet cnn32] [--preset hwa] [--repeats 20]

One training step (forward, backward, Adam; batch 64, ranges learned and
initialised from data, no training noise) of each model compiled for ``--preset``, with the convolutions'
ranges over patch elements (``conv_elements = PATCHES``, the default: the
clipped-element term builds each patch element's gradient after the array)
against over pixels (``PIXELS``, the per-pixel rule), interleaved in one run, one
intra-op thread. ``lenet`` and ``resnet`` are the zoo's (digits, 1x8x8);
``cnn32`` is the benchmarks' CIFAR-shaped CNN (3x32x32, random weights and
inputs). Target: patch at most 1.3x pixels.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from rich.table import Table

from xbar import calibrate, prepare, preset_config
from xbar.models import load_digits_split, load_pretrained

from benchmarks.bench_hwa import NO_NOISE, training_step
from benchmarks.common import BenchCNN, command_console, interleaved_medians

BATCH, COST = 64, 1.3
MODELS = ("lenet", "resnet", "cnn32")
RULES = ("PIXELS", "PATCHES")


def model_and_batch(name: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model and one training batch of 64 (digits for the zoo's, seeded noise for cnn32)."""
    if name == "cnn32":
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        return BenchCNN(), torch.rand(BATCH, 3, 32, 32, generator=generator), torch.randint(
            0, 10, (BATCH,), generator=generator)
    digits = load_digits_split()
    return load_pretrained(name), digits.train_x[:BATCH], digits.train_y[:BATCH]


def cost_table(names: list[str], preset: str, repeats: int) -> tuple[Table, list[tuple[str, bool]]]:
    table = Table(title=f"One training step (batch {BATCH}, Adam, {preset}, no training noise): convolution ranges "
                  "over patches against over pixels, interleaved medians, 1 thread")
    for column in ("model", "pixels ms", "patches ms", "ratio", "target"):
        table.add_column(column, justify="left" if column == "model" else "right")
    verdicts = []
    for name in names:
        model, x, y = model_and_batch(name)
        steps = {}
        for rule in RULES:
            config = preset_config(preset).with_overrides(NO_NOISE | {"pre_post.input_range.conv_elements": rule})
            prepared = prepare(model, (x[:1],), config)
            calibrate(prepared, [x] * config.pre_post.input_range.init_from_data)  # initialised, as fine_tune starts
            prepared.train()
            steps[rule] = training_step(prepared, torch.optim.Adam(prepared.parameters(), lr=1e-6), x, y)
        medians = interleaved_medians(steps, repeats=repeats, inner=3, warmup=3)
        ratio = medians["PATCHES"] / medians["PIXELS"]
        ok = ratio <= COST
        table.add_row(name, f"{1e3 * medians['PIXELS']:.2f}", f"{1e3 * medians['PATCHES']:.2f}", f"{ratio:.2f}x",
                      f"{COST:g}x {'ok' if ok else '**missed**'}")
        verdicts.append((f"{name}: step over patches {ratio:.2f}x <= {COST:g}x", ok))
    return table, verdicts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--preset", default="hwa", help="the hardware compiled for (default: hwa)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    console = command_console("bench_conv_range", argv)
    table, verdicts = cost_table(args.models, args.preset, args.repeats)
    console.print(table)
    for verdict, ok in verdicts:
        console.print(f"{'ok' if ok else 'MISSED'}: {verdict}", highlight=False, markup=False)


if __name__ == "__main__":
    main()
