"""Speed of the simulated crossbar model against the original, as ratios in one run.

    python -m benchmarks.bench_pipeline [--threads N]

* eval forward, converted vs original (8-bit DAC/ADC): MLP batch 256, CNN batch 32;
* one training step (forward, backward, Adam), prepared vs original;
* prepare + convert time for 10 / 100 / 1000-layer MLPs (should grow linearly).
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from xbar import HardwareConfig, calibrate, convert, prepare

from benchmarks.common import EIGHT_BIT, BenchCNN, BenchMLP, interleaved_medians


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer) -> None:
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def forward_and_training(name: str, model: nn.Module, x: torch.Tensor) -> list[tuple]:
    config = HardwareConfig().with_overrides(EIGHT_BIT)
    prepared = prepare(model, (x[:2],), config)
    calibrate(prepared, [x] * config.pre_post.input_range.init_from_data)  # steady state: ranges initialised
    converted = convert(prepared)
    with torch.no_grad():
        times = interleaved_medians({"original": lambda: model(x), "converted": lambda: converted(x)})
    rows = [(f"{name} eval forward, batch {len(x)}", times["original"], times["converted"], 1.25)]
    y = torch.randint(0, 10, (len(x),))
    model.train(), prepared.train()
    opt_model = torch.optim.Adam(model.parameters(), lr=1e-5)
    opt_prepared = torch.optim.Adam(prepared.parameters(), lr=1e-5)
    times = interleaved_medians({"original": lambda: train_step(model, x, y, opt_model),
                                 "prepared": lambda: train_step(prepared, x, y, opt_prepared)},
                                repeats=15, inner=2)
    rows.append((f"{name} training step, batch {len(x)}", times["original"], times["prepared"], 1.5))
    model.eval()
    return rows


def deep_mlp(layers: int) -> nn.Module:
    blocks = []
    for _ in range(layers):
        blocks += [nn.Linear(16, 16), nn.ReLU()]
    return nn.Sequential(*blocks).eval()


def prepare_convert_seconds(layers: int) -> float:
    model, x = deep_mlp(layers), torch.randn(2, 16)
    start = time.perf_counter()
    convert(prepare(model, (x,), HardwareConfig().with_overrides(EIGHT_BIT)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads (default 1: steadier on a shared machine)")
    torch.set_num_threads(parser.parse_args().threads)
    torch.manual_seed(0)
    warnings.simplefilter("ignore")
    console = Console()
    table = Table(title="simulated crossbar vs original (ratios measured in one run)")
    for column in ("measurement", "original ms", "xbar ms", "ratio", "target"):
        table.add_column(column)
    rows = forward_and_training("MLP 784-1024-1024-10", BenchMLP().eval(), torch.randn(256, 784))
    rows += forward_and_training("CNN 3x32x32", BenchCNN().eval(), torch.randn(32, 3, 32, 32))
    for label, base, ours, target in rows:
        ratio = ours / base
        verdict = "ok" if ratio <= target else "MISSED"
        table.add_row(label, f"{base * 1e3:.2f}", f"{ours * 1e3:.2f}", f"{ratio:.2f}x", f"<= {target}x {verdict}")
    console.print(table)

    scaling = Table(title="prepare + convert time vs depth (linear growth expected)")
    for column in ("layers", "seconds", "ms per layer"):
        scaling.add_column(column)
    for layers in (10, 100, 1000):
        seconds = prepare_convert_seconds(layers)
        scaling.add_row(str(layers), f"{seconds:.2f}", f"{seconds / layers * 1e3:.1f}")
    console.print(scaling)


if __name__ == "__main__":
    main()
