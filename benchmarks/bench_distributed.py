"""Samples per second of calibration and fine-tuning on two processes against one.

    python -m benchmarks.bench_distributed [--steps 20] [--repeats 3]

The benchmarks' CNN (:class:`benchmarks.common.BenchCNN`, 3x32x32 inputs, four
convolutions) with the 8-bit periphery, global batch 64: one process of one
thread runs as users run xbar without torch.distributed; two processes of one
thread each (gloo on localhost, started with torch.multiprocessing) each take
half of every batch. Calibration is the reference rule over ``--steps`` batches
(every batch initialises the ranges from data, so every step pays its
all-reduces); fine-tuning is :func:`xbar.fine_tune`'s recipe for ``--steps``
steps (DistributedDataParallel for two processes). Each run warms up first;
one and two processes alternate ``--repeats`` times and the table shows the
median samples per second and the ratio of two to one (targets: 1.8x for
calibration, 1.6x for fine-tuning). Both processes share the machine's cores
with whatever else runs: on a busy machine the ratios drop.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from .common import EIGHT_BIT, BenchCNN, command_console

BATCH = 64


def _measure(rank: int, world: int, port: int, steps: int, output: str) -> None:
    from xbar import FineTuning, HardwareConfig, calibrate, fine_tune, prepare

    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH * steps, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (BATCH * steps,), generator=generator)
    config = HardwareConfig().with_overrides(EIGHT_BIT | {"pre_post.input_range.init_from_data": 10 ** 6})
    torch.manual_seed(0)
    model = BenchCNN()
    shares = [batch.tensor_split(world)[rank] for batch in images.split(BATCH)]
    recipe = FineTuning(epochs=1, batch_size=BATCH)

    def timed(run) -> float:
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        run()
        if world > 1:
            dist.barrier()
        return time.perf_counter() - start

    prepared = prepare(model, (images[:2],), config)
    calibrate(prepared, shares[:2])  # warm-up
    fine_tune(prepared, images[: 2 * BATCH], labels[: 2 * BATCH], recipe)
    prepared = prepare(model, (images[:2],), config)
    calibration = timed(lambda: calibrate(prepared, shares))
    prepared = prepare(model, (images[:2],), config)
    tuning = timed(lambda: fine_tune(prepared, images, labels, recipe))
    if rank == 0:
        Path(output).write_text(json.dumps({"calibrate": BATCH * steps / calibration,
                                            "fine_tune": BATCH * steps / tuning}))
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def samples_per_second(world: int, steps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "result.json")
        mp.start_processes(_measure, args=(world, _free_port(), steps, output), nprocs=world, start_method="spawn")
        return json.loads(Path(output).read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    console = command_console("bench_distributed", argv)
    runs = {1: [], 2: []}
    for _ in range(args.repeats):
        for world in runs:
            runs[world].append(samples_per_second(world, args.steps))
    console.print("| step | 1 process x 1 thread | 2 processes x 1 thread | ratio | target |")
    console.print("|---|---:|---:|---:|---:|")
    for task, target in (("calibrate", 1.8), ("fine_tune", 1.6)):
        one, two = (statistics.median(run[task] for run in runs[world]) for world in (1, 2))
        console.print(f"| {task} | {one:.0f} samples/s | {two:.0f} samples/s | {two / one:.2f}x | {target}x |",
                      highlight=False, markup=False)


if __name__ == "__main__":
    main()
