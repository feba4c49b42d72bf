"""Chip targets: how long mapping and costing take as models grow, and per-layer estimates on every chip.

    python -m benchmarks.bench_chip [--sizes 1000 2000 5000 10000 20000] [--models lenet resnet18] [--per-layer]

Scale: synthetic models of N arrays (layers of 10 tiles of 256x256 weights, 1 to 64 MVMs each), placed on
hermes with one spare chip so the slowest layers get replicated, costed, and written as the ``xbar.mapping``
record; the median of 3 runs per size, and each size's time per array against the smallest size's
(measured in the same run): a ratio near 1 is linear growth.

Estimates: every zoo model and the torchvision-architecture ResNet-18 and MobileNetV2 (random weights,
3x224x224; torchvision's own when it is installed, else benchmarks/vision.py's copies) compiled at 8 bits
without calibration (the cost does not depend on the ranges), on as many copies of each shipped chip as
hold it; per model and chip: chips, arrays, utilisation, layer-by-layer latency, energy, pipelined
throughput and TOPS/W; with ``--per-layer``, each layer's MVMs, arrays, replicas, latency and energy share.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from typing import Optional

import torch
from rich.table import Table

from xbar import HardwareConfig, convert, prepare
from xbar.compiler.chip.model_work import layer_work
from xbar.compiler.chip.placement import chips_needed, place
from xbar.compiler.chip.record import mapping_record
from xbar.compiler.chip.shipped import CHIPS, HERMES
from xbar.compiler.chip.target import chip_config, map_converted
from xbar.compiler.chip.work import LayerWork, TileWork
from xbar.compiler.inspection.converted import summarize_converted
from xbar.models import ZOO, load_pretrained

from benchmarks.common import EIGHT_BIT, command_console
from benchmarks.vision import vision_models

TILES_PER_LAYER = 10


def synthetic_layers(arrays: int, seed: int = 0) -> list[LayerWork]:
    rng = random.Random(seed)
    layers = []
    for index in range(arrays // TILES_PER_LAYER):
        tiles = tuple(TileWork(f"layer{index}_tile{t}", (256 * t, 256 * (t + 1)), (0, 256))
                      for t in range(TILES_PER_LAYER))
        layers.append(LayerWork(f"layer{index}", tiles, mvms=rng.randint(1, 64)))
    return layers


def time_mapping(arrays: int, repeats: int = 3) -> float:
    layers = synthetic_layers(arrays)
    chips = chips_needed(HERMES, layers) + 1
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        json.dumps(mapping_record(place(HERMES, layers, chips)))
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def scale_table(sizes: list[int]) -> Table:
    table = Table(title="mapping + costing + the xbar.mapping record, hermes (+1 spare chip)", title_justify="left")
    for column in ("arrays", "layers", "seconds", "us per array", "per array / smallest"):
        table.add_column(column, justify="right")
    base = None
    for size in sizes:
        seconds = time_mapping(size)
        per_array = seconds / size
        base = base or per_array
        table.add_row(str(size), str(size // TILES_PER_LAYER), f"{seconds:.3f}", f"{per_array * 1e6:.1f}",
                      f"{per_array / base:.2f}")
    return table


def model_and_input(name: str, vision: dict) -> tuple[torch.nn.Module, torch.Tensor]:
    if name in vision:
        return vision[name]().eval(), torch.randn(1, 3, 224, 224)
    return load_pretrained(name).eval(), torch.randn(ZOO[name].input_shape)


def estimate(name: str, vision: dict, config: HardwareConfig) -> dict:
    """Mapping per chip of one model, converted once per chip (the tiling follows the chip)."""
    model, x = model_and_input(name, vision)
    results = {}
    for chip in CHIPS.values():
        converted = convert(prepare(model, (x,), chip_config(config, chip)))
        chips = chips_needed(chip, layer_work(converted, summarize_converted(converted), None))
        results[chip.name] = map_converted(converted, (x,), chip, chips)
    return results


def summary_row(name: str, mapping) -> list[str]:
    cost = mapping.cost
    return [name, mapping.chip.name, str(mapping.chips), str(mapping.arrays_used), f"{mapping.utilisation:.1%}",
            f"{cost.latency_ns / 1e3:.3g}", f"{cost.energy_pj / 1e6:.3g}", f"{cost.inferences_per_s:.3g}",
            f"{cost.tops:.3g}", f"{cost.tops_per_watt:.3g}"]


def layer_table(name: str, mapping) -> Table:
    record = mapping_record(mapping)
    table = Table(title=f"{name} on {mapping.chips} x {mapping.chip.name}", title_justify="left")
    for column in ("layer", "MVMs", "arrays", "replicas", "latency us", "energy nJ", "energy share"):
        table.add_column(column, justify="left" if column == "layer" else "right")
    for layer in record["layers"]:
        table.add_row(layer["layer"], str(layer["mvms"]), str(layer["arrays"]), str(layer["replicas"]),
                      f"{layer['latency_ns'] / 1e3:.3g}", f"{layer['energy_pj'] / 1e3:.3g}",
                      f"{layer['energy_share']:.1%}")
    return table


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000, 10000, 20000])
    vision, origin = vision_models()
    parser.add_argument("--models", nargs="+", default=[*ZOO, *vision], choices=[*ZOO, *vision])
    parser.add_argument("--per-layer", action="store_true", help="print each layer's estimates too")
    args = parser.parse_args(argv)
    console = command_console("bench_chip", argv)
    console.print(scale_table(sorted(args.sizes)))
    config = HardwareConfig().with_overrides(EIGHT_BIT | {"pre_post.input_range.enable": True})
    table = Table(title=f"per-model estimates (vision models from {origin})", title_justify="left")
    for column in ("model", "chip", "chips", "arrays", "utilisation", "latency us", "energy uJ", "inferences/s",
                   "TOPS", "TOPS/W"):
        table.add_column(column, justify="left" if column in ("model", "chip") else "right")
    per_layer = []
    for name in args.models:
        for mapping in estimate(name, vision, config).values():
            table.add_row(*summary_row(name, mapping))
            per_layer.append(layer_table(name, mapping))
    console.print(table)
    if args.per_layer:
        for layer in per_layer:
            console.print(layer)


if __name__ == "__main__":
    main()
