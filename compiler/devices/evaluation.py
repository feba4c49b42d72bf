"""Accuracy (or any metric) over time on noisy, drifting devices.

One converted model is programmed once per seed (:func:`~xbar.compiler.devices.programming.program`)
and read at each time from that programmed state (:func:`~xbar.compiler.devices.programming.drift`),
so only conductances change between seeds and times: nothing is recompiled.
With recalibration batches, each drifted model is also recalibrated on them
(:func:`~xbar.compiler.devices.recalibration.recalibrate`) and scored beside it.
Each (seed, time) reads with its own seed, :func:`read_seed`, so adding a time or
a seed leaves every other figure as it was.

Output noise (:class:`OutNoiseAtRead`): by default every analog read adds the
arrays' ``forward.out_noise``, as aihwkit's tiles do in evaluation too (the
reference), drawn from a generator seeded with :func:`out_noise_seed` of the
(seed, time); ``TRAINING_ONLY`` reads without it (xbar's earlier rule: output
noise is training noise). The noise-free figure (``ideal``) never has it.
"""

from __future__ import annotations

import enum
import hashlib
import statistics
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional, Sequence

import torch
from torch import Tensor, fx

from ...passes.errors import UserError
from ...passes.numerics.crossbar import crossbar_modules
from ..metrics import Metric, MetricLike, as_metric, score
from ..metrics.tasks import TOP1_ACCURACY
from ..pipeline.compiled import ArrayReader
from ..pipeline.distributed import gathered, group_in_use, rank_share
from .base import BaseNoiseModel
from .programming import drift, program
from .recalibration import recalibrate


class OutNoiseAtRead(enum.Enum):
    """When the arrays' ``forward.out_noise`` acts in an evaluation over time."""

    EVERY_READ = "every-read"
    """At every analog read, a fresh draw per read (aihwkit's tiles, also in evaluation: the default)."""
    TRAINING_ONLY = "training-only"
    """Never in evaluation: the arrays read noise-free, output noise is training noise only."""


def read_seed(seed: int, seconds: float) -> int:
    """The read seed for arrays programmed with ``seed`` and read ``seconds`` after programming:
    the first 8 bytes of BLAKE2b of ``"<seed>@<float(seconds)!r>"``, big-endian, shifted right by one bit."""
    return _digest_seed(f"{seed}@{float(seconds)!r}")


def out_noise_seed(seed: int, seconds: float) -> int:
    """The seed of the output noise of those reads: as :func:`read_seed`, of ``"<seed>@<float(seconds)!r>/out"``
    (a stream of its own, not the drift's)."""
    return _digest_seed(f"{seed}@{float(seconds)!r}/out")


def _digest_seed(text: str) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def read_out_noise_from(model: fx.GraphModule, generator: Optional[torch.Generator]) -> fx.GraphModule:
    """``model`` with every array adding its ``forward.out_noise`` at every read, drawn from ``generator``
    (None: reading without it); returns ``model``."""
    for array in crossbar_modules(model).values():
        array.read_out_noise_from(generator)
    return model


def _check_out_noise(converted: fx.GraphModule, out_noise: OutNoiseAtRead, compile: bool) -> OutNoiseAtRead:
    if not isinstance(out_noise, OutNoiseAtRead):
        raise UserError(f"out_noise= takes an xbar.OutNoiseAtRead, got {out_noise!r}")
    noisy = any(array.out_noise > 0 for array in crossbar_modules(converted).values())
    if compile and noisy and out_noise is OutNoiseAtRead.EVERY_READ:
        raise UserError("a compiled evaluation reads without output noise: pass out_noise=OutNoiseAtRead."
                        "TRAINING_ONLY (--out-noise training-only) with compile=True (--compile)")
    return out_noise if noisy else OutNoiseAtRead.TRAINING_ONLY


@dataclass(frozen=True)
class TimePoint:
    """The metric's values at one time after programming, one per programming seed."""

    label: str
    seconds: float
    values: tuple[float, ...]
    read_seeds: tuple[int, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds (n - 1); 0 for one seed."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    def as_dict(self, values_key: str = TOP1_ACCURACY.per_seed_key) -> dict:
        return {"label": self.label, "seconds": self.seconds, values_key: list(self.values),
                "read_seeds": list(self.read_seeds), "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class Evaluation:
    """The metric (top-1 accuracy by default) of the noise-free converted model (``ideal``) and at each
    time on programmed devices, read with ``out_noise`` (TRAINING_ONLY too when no array has output noise)."""

    ideal: float
    points: tuple[TimePoint, ...]
    seeds: tuple[int, ...]
    noise_model: dict
    compensation: Optional[str]
    metric: Metric = TOP1_ACCURACY
    out_noise: OutNoiseAtRead = OutNoiseAtRead.EVERY_READ
    recalibration: Optional[str] = None
    recalibrated: tuple[TimePoint, ...] = ()

    def as_dict(self) -> dict:
        """JSON-ready: times in seconds, per-seed values (in the order of ``seeds``), mean and std; the keys
        name the metric (``ideal_accuracy`` and ``accuracies`` for top-1 accuracy, ``ideal_perplexity`` and
        ``perplexities`` for perplexity); with recalibration, its method and ``recalibrated_times`` too."""
        metric = {} if self.metric is TOP1_ACCURACY else {"metric": self.metric.name}
        recalibrated = {} if self.recalibration is None else {
            "recalibration": self.recalibration,
            "recalibrated_times": [point.as_dict(self.metric.per_seed_key) for point in self.recalibrated]}
        return {**metric, f"ideal_{self.metric.key}": self.ideal, "noise_model": self.noise_model,
                "compensation": self.compensation, "out_noise_at_read": self.out_noise.value,
                "seeds": list(self.seeds),
                "times": [point.as_dict(self.metric.per_seed_key) for point in self.points], **recalibrated}


def check_times(noise_model: BaseNoiseModel, times: Mapping[str, float]) -> None:
    """Program and read one pair of devices at every time, so a model that refuses a time (ReRAM's fits)
    says so before any compiling."""
    generator = torch.Generator().manual_seed(0)
    g = torch.tensor([0.0, float(getattr(noise_model, "g_max", 1.0))])
    programmed = noise_model.apply_programming_noise_to_conductance(g, generator)
    nu = noise_model.generate_drift_coefficients(g, generator)
    for seconds in times.values():
        noise_model.apply_drift_noise_to_conductance(programmed, nu, seconds, generator)


def accuracy_over_time(converted: fx.GraphModule, noise_model: BaseNoiseModel, times: Mapping[str, float],
                       seeds: int, x: Tensor, y: Tensor, *, compensation: Optional[str] = "global",
                       batch_size: int = 256, on_step: Optional[Callable[[], None]] = None,
                       compile: bool = False,
                       process_group: Optional[torch.distributed.ProcessGroup] = None,
                       metric: MetricLike = TOP1_ACCURACY,
                       out_noise: OutNoiseAtRead = OutNoiseAtRead.EVERY_READ, recalibration_batches: Sequence = (),
                       recalibration: str = "affine") -> Evaluation:
    """``metric`` (default: top-1 accuracy) on ``(x, y)`` of ``converted`` programmed with seeds
    ``0 .. seeds - 1`` and read at each of ``times`` (label -> seconds after programming); ``on_step``
    is called after each (seed, time) this process runs. ``compile=True`` runs every model through
    one compiled graph (:class:`~xbar.compiler.pipeline.compiled.ArrayReader`). ``out_noise`` says whether
    the arrays' output noise acts at every read (aihwkit's reference, the default; the module docstring).

    In a torch.distributed process group (``process_group``, else the default group when one is
    initialised) the ranks share the seeds out (:func:`~xbar.compiler.pipeline.distributed.rank_share`) and
    every rank returns the whole evaluation, the one a single process gets: each seed's figures
    depend on the seed alone.

    ``recalibration_batches`` (input batches, no labels): every drifted model is also recalibrated on them with
    the method ``recalibration`` and scored (``Evaluation.recalibrated``), always eagerly (a compiled graph
    does not read a recalibration's offsets).
    """
    group = group_in_use(process_group)
    metric = as_metric(metric)
    out_noise = _check_out_noise(converted, out_noise, compile)
    values: dict[tuple[int, str], float] = {}
    recalibrated: dict[tuple[int, str], float] = {}
    reader = None
    for seed in rank_share(seeds, group):
        programmed = program(converted, noise_model, seed=seed)
        for label, seconds in times.items():
            drifted = drift(programmed, seconds, seed=read_seed(seed, seconds), compensation=compensation)
            if out_noise is OutNoiseAtRead.EVERY_READ:
                read_out_noise_from(drifted, torch.Generator().manual_seed(out_noise_seed(seed, seconds)))
            if compile and reader is None:
                reader = ArrayReader(drifted)
            run = drifted if reader is None else reader.reader(drifted)
            values[seed, label] = score(run, x, y, metric, batch_size)
            if recalibration_batches:
                corrected = recalibrate(drifted, recalibration_batches, method=recalibration)
                recalibrated[seed, label] = score(corrected, x, y, metric, batch_size)
            if on_step is not None:
                on_step()
    ideal = score(converted if reader is None else reader.reader(converted), x, y, metric, batch_size)
    evaluation = Evaluation(ideal, _time_points(gathered(values, group), times, seeds), tuple(range(seeds)),
                            noise_model.to_dict(), compensation, metric, out_noise)
    if not recalibration_batches:
        return evaluation
    return replace(evaluation, recalibration=recalibration,
                   recalibrated=_time_points(gathered(recalibrated, group), times, seeds))


def _time_points(values: dict[tuple[int, str], float], times: Mapping[str, float],
                 seeds: int) -> tuple[TimePoint, ...]:
    """``{(seed, label): value}`` as one :class:`TimePoint` per time."""
    return tuple(TimePoint(label, float(seconds), tuple(values[seed, label] for seed in range(seeds)),
                           tuple(read_seed(seed, seconds) for seed in range(seeds)))
                 for label, seconds in times.items())
