"""Speed of the compiled path (``torch.compile``, inductor) against the compiled original, as ratios in one run.

    python -m benchmarks.bench_compile [--threads 1 2] [--repeats 20]

For each thread count (every model is compiled anew for it: inductor bakes the
thread count into its kernels), for the MLP (batch 256) and the CNN (batch 32),
8-bit DAC/ADC, ranges initialised:

* eval forward: compiled converted model vs compiled original, and vs the original eager;
* one training step (compiled forward and backward, eager Adam): compiled prepared vs compiled original;
* how many outputs of the compiled converted model differ from its eager run by
  more than half a step of the last ADC (rounding-boundary flips), and the largest difference in steps;
* first-call (compile) time of the converted eval forward for MLPs of 2 to 16 layers (linear growth expected).
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
from rich.table import Table
from torch import nn

from xbar import HardwareConfig, calibrate, convert, prepare
from xbar.passes.numerics.crossbar import Crossbar

from benchmarks.bench_pipeline import deep_mlp, train_step
from benchmarks.common import EIGHT_BIT, BenchCNN, BenchMLP, command_console, interleaved_medians

EVAL_TARGET, TRAIN_TARGET = 1.10, 1.25


def compiled(model: nn.Module) -> nn.Module:
    return torch.compile(model, fullgraph=True)


def built(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, nn.Module]:
    """The prepared model with its ranges initialised, and its conversion."""
    config = HardwareConfig().with_overrides(EIGHT_BIT)
    prepared = prepare(model, (x[:2],), config)
    calibrate(prepared, [x] * config.pre_post.input_range.init_from_data)  # steady state: ranges initialised
    return prepared, convert(prepared)


def flips(eager: nn.Module, fast: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Fraction of outputs more than half a last-ADC step apart, and the largest difference in steps."""
    step = [m for m in eager.modules() if isinstance(m, Crossbar)][-1].settings.constants["out_scale"]
    with torch.no_grad():
        difference = (eager(x) - fast(x)).abs() / step
    return float((difference > 0.5).float().mean()), float(difference.max())


def rows_for(name: str, model: nn.Module, x: torch.Tensor, repeats: int) -> list[tuple]:
    prepared, converted = built(model, x)
    original_c, converted_c = compiled(model), compiled(converted)
    with torch.no_grad():
        original_c(x), converted_c(x)  # compile outside the timing
        times = interleaved_medians({"eager": lambda: model(x), "original": lambda: original_c(x),
                                     "xbar": lambda: converted_c(x)}, repeats=repeats)
    share, largest = flips(converted, converted_c, x)
    rows = [(f"{name} eval forward, batch {len(x)}", times["original"], times["xbar"], EVAL_TARGET,
             f"{times['xbar'] / times['eager']:.2f}x ({times['eager'] * 1e3:.2f} ms)",
             f"{share:.4%}, max {largest:.0f} step")]
    y = torch.randint(0, 10, (len(x),))
    original, prepared = copy.deepcopy(model).train(), prepared.train()
    original_c, prepared_c = compiled(original), compiled(prepared)
    opt_original = torch.optim.Adam(original.parameters(), lr=1e-5)
    opt_prepared = torch.optim.Adam(prepared.parameters(), lr=1e-5)
    train_step(original_c, x, y, opt_original), train_step(prepared_c, x, y, opt_prepared)  # compile
    times = interleaved_medians({"original": lambda: train_step(original_c, x, y, opt_original),
                                 "xbar": lambda: train_step(prepared_c, x, y, opt_prepared)},
                                repeats=max(repeats // 2, 5), inner=2)
    rows.append((f"{name} training step, batch {len(x)}", times["original"], times["xbar"], TRAIN_TARGET, "", ""))
    return rows


def compile_seconds(layers: int) -> tuple[float, float]:
    """First-call time of the compiled original and of the compiled converted model, caches off."""
    model, x = deep_mlp(layers), torch.randn(8, 16)
    converted = convert(prepare(model, (x[:2],), HardwareConfig().with_overrides(EIGHT_BIT)))
    seconds = []
    for subject in (model, converted):
        torch._dynamo.reset()
        start = time.perf_counter()
        with torch.no_grad():
            compiled(subject)(x)
        seconds.append(time.perf_counter() - start)
    return seconds[0], seconds[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts (default 1 2)")
    parser.add_argument("--repeats", type=int, default=20, help="timing rounds per measurement (default 20)")
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4, 8, 16],
                        help="MLP depths for the compile time (default 2 4 8 16)")
    args = parser.parse_args(argv)
    console = command_console("bench_compile", argv)
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    table = Table(title="compiled xbar vs compiled original (ratios measured in one run, interleaved)")
    for column in ("threads", "measurement", "original ms", "xbar ms", "ratio", "target", "vs original eager",
                   "outputs flipped vs eager xbar"):
        table.add_column(column)
    for threads in args.threads:
        torch.set_num_threads(threads)
        torch._dynamo.reset()
        rows = rows_for("MLP 784-1024-1024-10", BenchMLP().eval(), torch.randn(256, 784), args.repeats)
        rows += rows_for("CNN 3x32x32", BenchCNN().eval(), torch.randn(32, 3, 32, 32), args.repeats)
        for label, base, ours, target, versus_eager, flipped in rows:
            ratio = ours / base
            verdict = "ok" if ratio <= target else "MISSED"
            table.add_row(str(threads), label, f"{base * 1e3:.2f}", f"{ours * 1e3:.2f}", f"{ratio:.2f}x",
                          f"<= {target}x {verdict}", versus_eager, flipped)
    console.print(table)

    torch.set_num_threads(args.threads[0])
    torch._inductor.config.force_disable_caches = True  # a cold compile each time
    scaling = Table(title=f"compile (first call) time vs depth, eval forward, {args.threads[0]} thread(s)")
    for column in ("layers", "original s", "xbar s", "xbar s per layer"):
        scaling.add_column(column)
    for layers in args.layers:
        original, ours = compile_seconds(layers)
        scaling.add_row(str(layers), f"{original:.2f}", f"{ours:.2f}", f"{ours / layers:.3f}")
    console.print(scaling)


if __name__ == "__main__":
    main()
