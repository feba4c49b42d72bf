"""Recalibration: correct a programmed (drifted, measured) model's digital periphery from a few input batches.

No labels: the reference is the converted model's noise-free outputs, array by
array. Every array (each tile of a tiled layer on its own; a convolution's
columns are its output channels) is fitted against its *target* array (the
conductances the converted model programs) on the same inputs: the inputs the
array sees in the model being recalibrated, with every array before it already
corrected. The batches are concatenated and run once through the model, so the
arrays are fitted in execution order; an array called at several sites (a shared
layer) accumulates its statistics over every call and is fitted on all of them.
Everything is deterministic: least squares in float64, no random draws.

Methods (:class:`RecalibrationMethod`):

* ``affine``: a gain and an offset per output column that undo the least-squares fit
  of the array's output ``y`` as an affine of its target's ``t``, ``y = a t + b``
  (``a = cov(y, t) / var(t)``): ``y' = g y + o`` with ``g = 1 / a``, ``o = mean(t) - g mean(y)``.
  Fitting ``y`` on the exact ``t`` (not ``t`` on the noisy ``y``) estimates the drift's
  gain without shrinking the outputs towards their mean; a column whose target does
  not vary, or that reads nothing like it (``a <= 0``), keeps ``g = 1``. It is the
  correction a digital periphery applies after the ADC. The gains are the arrays'
  ``column_drift_gains``, the offsets their ``column_offsets``.
* ``column_gain``: a gain per output column, ``1 / a`` of the fit ``y = a t``
  through zero (``a = sum(y t) / sum(t t)``): the per-column drift gain xbar's
  ``drift()`` sets from one-hot readouts, fitted on the data instead.
* ``global_gain``: one gain per array, the same fit over all its columns: the global drift gain, fitted on the
  data.
* ``batch_norm``: the arrays as they are (their drift compensation kept); each
  digital batch norm's running mean and (unbiased) variance re-estimated from its
  inputs, in execution order.

Every array method replaces the array's drift compensation (its fitted gains take
the place of ``drift_gain`` / ``column_drift_gains``).
"""

from __future__ import annotations

import dataclasses
import math
from enum import Enum
from typing import Any, Iterable, Optional

import torch
from torch import Tensor, fx

from ...passes.errors import UserError
from ...passes.numerics.crossbar import Crossbar, crossbar_modules, run_crossbar
from ...passes.numerics.settings import CrossbarSettings, f32
from ..pipeline.record import Stage, record_of
from .arrays import array_copy
from .programming import PROGRAMMING_KEY, programming_of


class RecalibrationMethod(str, Enum):
    """What :func:`recalibrate` fits; see the module docstring."""

    AFFINE = "affine"
    COLUMN_GAIN = "column_gain"
    GLOBAL_GAIN = "global_gain"
    BATCH_NORM = "batch_norm"


BATCH_NORM_OP = torch.ops.aten.batch_norm.default


def _method(method) -> RecalibrationMethod:
    try:
        return RecalibrationMethod(method)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in RecalibrationMethod)
        raise UserError(f"recalibrate() takes method= as one of {choices}, got {method!r}") from None


def _joined(batches) -> tuple[Tensor, ...]:
    """The batches (tensors, or tuples of the model's inputs) concatenated along dim 0, as the model's inputs."""
    if isinstance(batches, Tensor):
        raise UserError("recalibrate() takes batches as a list of input batches (e.g. x.split(64)[:4]), "
                        "not one tensor")
    groups = [tuple(b) if isinstance(b, (tuple, list)) else (b,) for b in batches]
    if not groups:
        raise UserError("recalibrate() needs at least one batch of inputs")
    if any(len(g) != len(groups[0]) or not all(isinstance(t, Tensor) for t in g) for g in groups):
        raise UserError("recalibrate() takes batches as tensors (or tuples of the model's input tensors), "
                        "all with the same number of inputs")
    return tuple(torch.cat(parts) for parts in zip(*groups))


def _channels_last(y: Tensor, channel_dim: int) -> Tensor:
    """``y`` as [samples, columns] in float64 (a convolution's channels are its columns)."""
    if channel_dim != -1:
        y = y.movedim(channel_dim, -1)
    return y.reshape(-1, y.shape[-1]).double()


class _ColumnStatistics:
    """Sums over every sample of one array's output ``y`` and its target's output ``t``, per column."""

    def __init__(self):
        self.n = 0
        self.sums: Optional[dict[str, Tensor]] = None

    def add(self, y: Tensor, t: Tensor) -> None:
        terms = {"y": y.sum(0), "t": t.sum(0), "tt": (t * t).sum(0), "yt": (y * t).sum(0)}
        self.sums = terms if self.sums is None else {k: self.sums[k] + v for k, v in terms.items()}
        self.n += y.shape[0]

    def fit(self, method: RecalibrationMethod) -> tuple[list[float], list[float]]:
        """(gains, offsets) per column that undo the fit ``y = a t + b`` (one ``a`` for ``global_gain``, ``b = 0``
        but for ``affine``): ``g = 1 / a``, ``o = -b / a``."""
        s = self.sums
        if method == RecalibrationMethod.GLOBAL_GAIN:
            return [_ratio(float(s["tt"].sum()), float(s["yt"].sum()))], []
        if method == RecalibrationMethod.COLUMN_GAIN:
            return [_ratio(float(a), float(b)) for a, b in zip(s["tt"], s["yt"])], []
        variance = s["tt"] - s["t"] * s["t"] / self.n
        covariance = s["yt"] - s["y"] * s["t"] / self.n
        gains = [_ratio(float(v), float(c)) if v > 1e-12 * float(tt) else 1.0
                 for v, c, tt in zip(variance, covariance, s["tt"])]
        offsets = [(float(t) - g * float(y)) / self.n for g, t, y in zip(gains, s["t"], s["y"])]
        return gains, offsets


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator`` where that is a finite positive gain, else 1 (a column that reads nothing, or
    nothing like its target, keeps its output as it is)."""
    ratio = numerator / denominator if denominator else math.inf
    return ratio if math.isfinite(ratio) and ratio > 0 else 1.0


def uncorrected(settings: CrossbarSettings) -> CrossbarSettings:
    """``settings`` without drift gains or offsets: the array's plain output."""
    return dataclasses.replace(settings, drift_gain=1.0, column_drift_gains=(), column_offsets=())


def corrected(settings: CrossbarSettings, gains: list[float], offsets: list[float]) -> CrossbarSettings:
    """``settings`` with the fitted correction as its drift gains and offsets (float32 values, as a file holds)."""
    plain = uncorrected(settings)
    if len(gains) == 1:
        return dataclasses.replace(plain, drift_gain=gains[0])
    return dataclasses.replace(plain, column_drift_gains=tuple(gains), column_offsets=tuple(f32(o) for o in offsets))


def array_output(crossbar: Crossbar, x: Tensor, settings: CrossbarSettings) -> Tensor:
    """What ``crossbar`` outputs for ``x`` with ``settings`` (its own conductances), without its bias."""
    weight = crossbar.adc_weight()
    return run_crossbar(crossbar.kind, x, weight, None, settings, crossbar.geometry,
                        ir_drop_offset=crossbar.ir_drop_offset)


class _Recalibration(fx.Interpreter):
    """Runs the model once, fitting each array at its call (see the module docstring) or re-estimating each batch
    norm's statistics at its call, so what comes after sees the corrected outputs."""

    def __init__(self, model: fx.GraphModule, targets: dict[str, Crossbar], method: RecalibrationMethod):
        super().__init__(model)
        self.targets, self.method = targets, method
        self.statistics: dict[str, _ColumnStatistics] = {}
        self.node: Optional[fx.Node] = None  # the node being run

    def run_node(self, n: fx.Node) -> Any:
        self.node = n
        return super().run_node(n)

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        module = self.fetch_attr(target)
        if not isinstance(module, Crossbar) or self.method == RecalibrationMethod.BATCH_NORM:
            return super().call_module(target, args, kwargs)
        x = args[0]
        channel_dim = module.kind.channel_dim
        y = _channels_last(array_output(module, x, uncorrected(module.settings)), channel_dim)
        t = _channels_last(array_output(self.targets[target], x, uncorrected(self.targets[target].settings)),
                           channel_dim)
        statistics = self.statistics.setdefault(target, _ColumnStatistics())
        statistics.add(y, t)
        module.settings = corrected(module.settings, *statistics.fit(self.method))
        module.sync_compiled_state()
        return module(x)

    def call_function(self, target, args: tuple, kwargs: dict) -> Any:
        if target is BATCH_NORM_OP and self.method == RecalibrationMethod.BATCH_NORM:
            args = (*args[:3], *self._re_estimated(self.node, args[0]), *args[5:])
        return super().call_function(target, args, kwargs)

    def _re_estimated(self, node: fx.Node, x: Tensor) -> tuple[Tensor, Tensor]:
        """The channel mean and unbiased variance of ``x`` (channels on dim 1), now the running statistics of the
        batch norm ``node``."""
        dims = [d for d in range(x.dim()) if d != 1]
        statistics = (x.mean(dims), x.var(dims, unbiased=True))
        for source, value in zip(node.args[3:5], statistics):
            if not isinstance(source, fx.Node) or source.op != "get_attr":
                raise UserError(f"recalibrate(method='batch_norm'): the batch norm {node.name} does not read "
                                f"its statistics from buffers; use method='affine'")
            owner, _, name = source.target.rpartition(".")
            self.module.get_submodule(owner).register_buffer(name, value)
        return statistics


def _batch_norms(model: fx.GraphModule) -> list[fx.Node]:
    return [n for n in model.graph.nodes if n.op == "call_function" and n.target is BATCH_NORM_OP]


@torch.no_grad()
def recalibrate(model: fx.GraphModule, batches: Iterable, method: str = "affine") -> fx.GraphModule:
    """``model`` (programmed, drifted or measured: what :func:`xbar.program`, :func:`xbar.drift` or
    :func:`xbar.load_conductances` returns) with its digital periphery recalibrated on ``batches`` (a few batches
    of inputs, no labels) against the converted model's noise-free outputs; ``method`` is ``"affine"`` (default),
    ``"column_gain"``, ``"global_gain"`` or ``"batch_norm"`` (module docstring). Returns a new GraphModule
    (its arrays and batch norm statistics its own); ``model`` is not modified."""
    record_of(model, "recalibrate()", Stage.CONVERTED)
    programming = programming_of(model)
    if programming is None or programming.converted is None:
        raise UserError("recalibrate() expects a programmed model: call xbar.program(converted, noise_model, "
                        "seed=...) (and xbar.drift) first and recalibrate what it returns")
    method = _method(method)
    inputs = _joined(batches)
    if method == RecalibrationMethod.BATCH_NORM and not _batch_norms(model):
        raise UserError("recalibrate(method='batch_norm'): the model has no digital batch norm; use "
                        "method='affine'")
    result = array_copy(model)
    _Recalibration(result, crossbar_modules(programming.converted), method).run(*inputs)
    result.meta[PROGRAMMING_KEY] = dataclasses.replace(programming, recalibration=method.value)
    return result
