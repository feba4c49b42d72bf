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
calibration, 1.6x for fine-tuning). Two more columns bound what two
processes can reach here: two independent one-process runs at once (no process
group: the machine's own ceiling) and the median time of a 3-value gloo
all-gather and all-reduce between two processes (500 calls after warm-up). Both
processes share the machine's cores with whatever else runs: on a busy machine
the ratios drop.
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


def _independent(index: int, steps: int, folder: str) -> None:
    _measure(0, 1, 0, steps, os.path.join(folder, f"{index}.json"))


def independent_samples_per_second(steps: int) -> dict[str, float]:
    """Two one-process runs at once, without a process group: their summed samples per second."""
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_independent, args=(steps, folder), nprocs=2, start_method="spawn")
        runs = [json.loads(Path(folder, f"{index}.json").read_text()) for index in range(2)]
    return {task: sum(run[task] for run in runs) for task in runs[0]}


def _latency(rank: int, port: int, output: str, calls: int = 500) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    values, parts = torch.zeros(3), [torch.empty(3) for _ in range(2)]
    timings = {}
    for name, collective in (("all_gather", lambda: dist.all_gather(parts, values)),
                             ("all_reduce", lambda: dist.all_reduce(values))):
        for _ in range(50):
            collective()
        start = time.perf_counter()
        for _ in range(calls):
            collective()
        timings[name] = (time.perf_counter() - start) / calls
    if rank == 0:
        Path(output).write_text(json.dumps(timings))
    dist.destroy_process_group()


def collective_latency() -> dict[str, float]:
    """Seconds per 3-value all-gather and all-reduce between two gloo processes on localhost."""
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "latency.json")
        mp.start_processes(_latency, args=(_free_port(), output), nprocs=2, start_method="spawn")
        return json.loads(Path(output).read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    console = command_console("bench_distributed", argv)
    runs = {1: [], 2: [], "independent": []}
    for _ in range(args.repeats):
        runs[1].append(samples_per_second(1, args.steps))
        runs[2].append(samples_per_second(2, args.steps))
        runs["independent"].append(independent_samples_per_second(args.steps))
    console.print("| step | 1 process x 1 thread | 2 processes x 1 thread | ratio | target "
                  "| 2 independent processes (ceiling) |")
    console.print("|---|---:|---:|---:|---:|---:|")
    for task, target in (("calibrate", 1.8), ("fine_tune", 1.6)):
        one, two, ceiling = (statistics.median(run[task] for run in runs[key]) for key in (1, 2, "independent"))
        console.print(f"| {task} | {one:.0f} samples/s | {two:.0f} samples/s | {two / one:.2f}x | {target}x "
                      f"| {ceiling / one:.2f}x |", highlight=False, markup=False)
    latency = collective_latency()
    console.print(f"gloo, 2 processes, 3 values: all_gather {1e3 * latency['all_gather']:.2f} ms, "
                  f"all_reduce {1e3 * latency['all_reduce']:.2f} ms per call", highlight=False, markup=False)


if __name__ == "__main__":
    main()
