"""Samples per second of calibration and fine-tuning on two processes against one.

    python -m benchmarks.bench_distributed [--steps 20] [--repeats 3]

The benchmarks' CNN (:class:`benchmarks.common.BenchCNN`, 3x32x32 inputs, four
convolutions) with the 8-bit periphery, global batch 64: one process of one
thread runs as users run xbar without torch.distributed; two processes of one
thread each (gloo on localhost, started with torch.multiprocessing) each take
half of every batch. Calibration is the reference rule over ``--steps`` batches
(every batch initialises the ranges from data, so every step pays a collective
per range); fine-tuning is :func:`xbar.fine_tune`'s recipe for ``--steps``
steps (DistributedDataParallel for two processes) after calibration, as
``xbar compile --finetune`` runs it, and once more with ranges still
initialising from data at every step (the worst case: a collective per range
in every forward). Evaluation is :func:`xbar.accuracy_over_time` of the
converted CNN for ``--steps`` programming seeds read at one day on 64 images
(the ranks share the seeds out). Each run warms up first;
one and two processes alternate ``--repeats`` times and the table shows the
median samples per second and the ratio of two to one (targets: 1.8x for
calibration, 1.6x for fine-tuning). Three more figures bound what two
processes can reach here: two independent one-process runs at once (no process
group: the machine's own ceiling); the same ratio for plain torch doing the
same steps with the collectives they need (for calibration a 3-value
all-gather before each of the five layers, the sync points of the reference
rule on the global batch; for fine-tuning DDP's gradient all-reduce); and the
median time of a 3-value gloo all-gather and all-reduce between two processes
(500 calls after warm-up). Both processes share the machine's cores with
whatever else runs: on a busy machine the ratios drop.
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
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from .common import EIGHT_BIT, BenchCNN, command_console

BATCH = 64
Tasks = dict[str, Callable[[int], Callable[[], object]]]
"""Per task, a set-up taking a number of batches and returning the run to time."""


def _xbar_tasks(rank: int, world: int, images: torch.Tensor, labels: torch.Tensor) -> Tasks:
    from xbar import (
        FineTuning,
        HardwareConfig,
        PCMLikeNoiseModel,
        accuracy_over_time,
        calibrate,
        convert,
        fine_tune,
        prepare,
    )

    torch.manual_seed(0)
    model = BenchCNN()
    shares = [batch.tensor_split(world)[rank] for batch in images.split(BATCH)]
    recipe = FineTuning(epochs=1, batch_size=BATCH)

    def prepared_for(init_batches: int):
        config = HardwareConfig().with_overrides(EIGHT_BIT | {"pre_post.input_range.init_from_data": init_batches})
        return prepare(model, (images[:2],), config)

    def calibration(batches: int):
        prepared = prepared_for(10 ** 6)
        return lambda: calibrate(prepared, shares[:batches])

    def tuning(batches: int, calibrated: bool = True):
        prepared = prepared_for(2 if calibrated else 10 ** 6)
        if calibrated:
            calibrate(prepared, shares[:2])
        return lambda: fine_tune(prepared, images[: batches * BATCH], labels[: batches * BATCH], recipe)

    def evaluation(batches: int):
        converted = convert(prepared_for(1))
        return lambda: accuracy_over_time(converted, PCMLikeNoiseModel(), {"1d": 86400.0}, batches,
                                          images[:BATCH], labels[:BATCH])

    return {"calibrate": calibration, "fine_tune": tuning,
            "fine_tune initialising": lambda batches: tuning(batches, calibrated=False), "evaluate": evaluation}


def _plain_tasks(rank: int, world: int, images: torch.Tensor, labels: torch.Tensor) -> Tasks:
    """The same steps in plain torch with the collectives xbar's steps need: what any exact
    implementation can reach here. Before each of the five layers of a calibration step, and of a
    fine-tuning step while the ranges initialise, the 3-value all-gather of the input's statistics
    (what a range's global std takes); fine-tuning in DistributedDataParallel with Adam."""

    def gathered(values: torch.Tensor) -> None:
        if world > 1:
            dist.all_gather([torch.empty_like(values) for _ in range(world)], values)

    def statistics_of_input(_, args) -> None:
        x = args[0].detach()
        gathered(torch.tensor([x.numel(), float(x.mean()), float(x.var())], dtype=torch.float64))

    def model_gathering(statistics: bool) -> BenchCNN:
        model = BenchCNN()
        for layer in model.modules():
            if statistics and isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)):
                layer.register_forward_pre_hook(statistics_of_input)
        return model

    def calibration(batches: int):
        model = model_gathering(statistics=True)

        @torch.no_grad()
        def run():
            for batch in images[: batches * BATCH].split(BATCH):
                model(batch.tensor_split(world)[rank])
        return run

    def tuning(batches: int, statistics: bool = False):
        model = model_gathering(statistics)
        trained = DistributedDataParallel(model) if world > 1 else model
        optimizer = torch.optim.Adam(model.parameters())

        def run():
            for x, y in zip(images[: batches * BATCH].split(BATCH), labels.split(BATCH)):
                loss = torch.nn.functional.cross_entropy(trained(x.tensor_split(world)[rank]),
                                                         y.tensor_split(world)[rank])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        return run

    return {"calibrate": calibration, "fine_tune": tuning,
            "fine_tune initialising": lambda batches: tuning(batches, statistics=True)}


TASK_SETS = {"xbar": _xbar_tasks, "plain": _plain_tasks}


def _measure(rank: int, world: int, port: int, steps: int, tasks: str, output: str) -> None:
    """Each task of ``TASK_SETS[tasks]`` warmed up on 2 batches, then timed on ``steps``; rank 0 writes
    samples per second."""
    torch.set_num_threads(1)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(BATCH * steps, 3, 32, 32, generator=generator)
    labels = torch.randint(0, 10, (BATCH * steps,), generator=generator)
    setups = TASK_SETS[tasks](rank, world, images, labels)

    def timed(run) -> float:
        if world > 1:
            dist.barrier()
        start = time.perf_counter()
        run()
        if world > 1:
            dist.barrier()
        return time.perf_counter() - start

    for setup in setups.values():
        setup(2)()
    results = {name: BATCH * steps / timed(setup(steps)) for name, setup in setups.items()}
    if rank == 0:
        Path(output).write_text(json.dumps(results))
    if world > 1:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def samples_per_second(world: int, steps: int, tasks: str = "xbar") -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        output = os.path.join(folder, "result.json")
        mp.start_processes(_measure, args=(world, _free_port(), steps, tasks, output), nprocs=world,
                           start_method="spawn")
        return json.loads(Path(output).read_text())


def _independent(index: int, steps: int, folder: str) -> None:
    _measure(0, 1, 0, steps, "xbar", os.path.join(folder, f"{index}.json"))


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
    runs = {key: [] for key in (1, 2, "independent", "plain 1", "plain 2")}
    for _ in range(args.repeats):
        runs[1].append(samples_per_second(1, args.steps))
        runs[2].append(samples_per_second(2, args.steps))
        runs["independent"].append(independent_samples_per_second(args.steps))
        runs["plain 1"].append(samples_per_second(1, args.steps, "plain"))
        runs["plain 2"].append(samples_per_second(2, args.steps, "plain"))

    def median(key, task: str) -> float:
        return statistics.median(run[task] for run in runs[key])

    console.print("| step | 1 process x 1 thread | 2 processes x 1 thread | ratio | target "
                  "| 2 independent processes (ceiling) | plain torch, same collectives |")
    console.print("|---|---:|---:|---:|---:|---:|---:|")
    for task, target in (("calibrate", "1.8x"), ("fine_tune", "1.6x"), ("fine_tune initialising", "1.6x"),
                         ("evaluate", "-")):
        one, two = median(1, task), median(2, task)
        plain = f"{median('plain 2', task) / median('plain 1', task):.2f}x" if task in runs["plain 1"][0] else "-"
        console.print(f"| {task} | {one:.0f} samples/s | {two:.0f} samples/s | {two / one:.2f}x | {target} "
                      f"| {median('independent', task) / one:.2f}x | {plain} |", highlight=False, markup=False)
    latency = collective_latency()
    console.print(f"gloo, 2 processes, 3 values: all_gather {1e3 * latency['all_gather']:.2f} ms, "
                  f"all_reduce {1e3 * latency['all_reduce']:.2f} ms per call", highlight=False, markup=False)


if __name__ == "__main__":
    main()
