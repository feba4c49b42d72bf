"""Device realism for a converted model: program its arrays, then read them at a later time.

``program(converted, noise_model, seed=...)`` returns the model as a chip holds
it right after programming; ``drift(programmed, t_inference, seed=...)`` the
model read ``t_inference`` seconds later, with drift compensation. Both return
new GraphModules and leave their input as it was: each owns its arrays' tensors
and shares the graph, its code and the digital layers' tensors with its input,
read only (:func:`~xbar.compiler.devices.arrays.array_copy`; ``copy.deepcopy`` one
to edit those). What was done is kept on the result as a :class:`ProgrammingRecord`
(``programming_of``), in a form an exporter writes as JSON metadata.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import fx

from ...passes.errors import UserError
from ...passes.numerics.crossbar import crossbar_modules
from ..pipeline.record import Stage, record_of
from .arrays import DriftCompensation, array_copy, drift_arrays, program_arrays
from .base import BaseNoiseModel

PROGRAMMING_KEY = "xbar.programming"
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class ProgrammingRecord:
    """How a model's arrays were programmed and, once drifted, read.

    ``noise_model`` is the model's :meth:`~xbar.compiler.devices.base.BaseNoiseModel.to_dict`
    at programming time; ``t_inference`` (seconds after programming), ``drift_seed``
    and ``compensation`` are None until :func:`drift`; ``recalibration`` (the method) until
    :func:`~xbar.compiler.devices.recalibration.recalibrate`.
    """

    noise_model: dict
    seed: int
    t_inference: Optional[float] = None
    drift_seed: Optional[int] = None
    compensation: Optional[str] = None
    recalibration: Optional[str] = None
    model: Optional[BaseNoiseModel] = None  # the device model itself (a private copy), for drift()
    converted: Optional[fx.GraphModule] = None  # the converted model programmed (the targets), for recalibrate()

    def __deepcopy__(self, memo) -> "ProgrammingRecord":
        """Records are never mutated: a copied GraphModule shares its record."""
        return self

    def as_dict(self) -> dict:
        """Everything but the model objects, JSON-ready."""
        return {"noise_model": self.noise_model, "seed": self.seed, "t_inference": self.t_inference,
                "drift_seed": self.drift_seed, "compensation": self.compensation,
                "recalibration": self.recalibration}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True, allow_nan=False)


def programming_of(graph_module: fx.GraphModule) -> Optional[ProgrammingRecord]:
    """The programming record of a GraphModule, or None if :func:`program` did not make it."""
    record = getattr(graph_module, "meta", {}).get(PROGRAMMING_KEY)
    return record if isinstance(record, ProgrammingRecord) else None


def _seed(seed, caller: str) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"{caller} takes seed= as an int from 0 to 2**63 - 1, got {seed!r}")
    return int(seed)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def check_device_range(model: BaseNoiseModel, converted: fx.GraphModule) -> None:
    """A model with a ``g_max`` (and a ``g_min``) describes devices of that range: the arrays must use the same."""
    for bound in ("g_max", "g_min"):
        value = getattr(model, bound, None)
        if not isinstance(value, numbers.Real):
            continue
        for name, crossbar in crossbar_modules(converted).items():
            theirs = getattr(crossbar.settings, bound)
            if not math.isclose(theirs, value, rel_tol=1e-6):
                raise UserError(f"{type(model).__name__}({bound}={value:g}) describes devices of {bound} "
                                f"{value:g} uS, but {name} was converted with {bound} = {theirs:g} uS; give the "
                                f"noise model {bound}={theirs:g} or convert with converter.{bound}={value:g}")


def program(converted: fx.GraphModule, noise_model: BaseNoiseModel, *, seed: int) -> fx.GraphModule:
    """The converted model as programmed: each array's G+ and G- through ``noise_model``'s programming noise.

    Every device (both of each pair) is programmed on its own and draws its
    drift parameters from its target; ``seed`` fixes every draw. Returns a new
    GraphModule; ``converted`` is not modified.
    """
    record_of(converted, "program()", Stage.CONVERTED)
    if programming_of(converted) is not None:
        raise UserError("program() expects the model xbar.convert() returned, but this one is already "
                        "programmed: program the converted model again with another seed or noise model")
    if not isinstance(noise_model, BaseNoiseModel):
        raise UserError(f"program() takes a device model such as xbar.PCMLikeNoiseModel() (a subclass of "
                        f"xbar.BaseNoiseModel), got a {type(noise_model).__name__}")
    return _programmed_copy(converted, noise_model, seed, "program()")


def program_measured(converted: fx.GraphModule, measured: dict, noise_model: BaseNoiseModel, *,
                     seed: int) -> fx.GraphModule:
    """The converted model as a chip's read-back says it is programmed: ``measured`` (``{array name: (G+, G-)}``
    tensors) is the programmed state, which :func:`drift` drifts with ``noise_model``; ``seed`` draws the drift
    parameters from the targets. Recorded as :func:`program` records (the same ``noise_model`` and ``seed`` give
    the same record)."""
    record_of(converted, "load_conductances()", Stage.CONVERTED)
    if not isinstance(noise_model, BaseNoiseModel):
        raise UserError(f"load_conductances() takes noise_model= as a device model such as xbar.PCMLikeNoiseModel() "
                        f"or None, got a {type(noise_model).__name__}")
    return _programmed_copy(converted, noise_model, seed, "load_conductances()", measured)


def _programmed_copy(converted: fx.GraphModule, noise_model: BaseNoiseModel, seed, caller: str,
                     measured: Optional[dict] = None) -> fx.GraphModule:
    """An :func:`array_copy` of ``converted`` programmed with ``noise_model`` (or holding ``measured`` as its
    programmed state), with its :class:`ProgrammingRecord`."""
    seed = _seed(seed, caller)
    check_device_range(noise_model, converted)
    model = copy.deepcopy(noise_model)
    programmed = array_copy(converted)
    program_arrays(programmed, model, _generator(seed), measured)
    programmed.meta[PROGRAMMING_KEY] = ProgrammingRecord(model.to_dict(), seed, model=model, converted=converted)
    return programmed


def _time(t_inference) -> float:
    if isinstance(t_inference, bool) or not isinstance(t_inference, numbers.Real) \
            or not math.isfinite(t_inference) or t_inference < 0:
        raise UserError(f"drift() takes t_inference as seconds after programming, a finite number >= 0; "
                        f"got {t_inference!r}")
    return float(t_inference)


def compensation_mode(compensation) -> Optional[DriftCompensation]:
    if compensation is None:
        return None
    try:
        return DriftCompensation(compensation)
    except ValueError:
        choices = ", ".join(repr(c.value) for c in DriftCompensation)
        raise UserError(f"drift() takes compensation= as one of {choices} or None, got {compensation!r}") from None


def drift(programmed: fx.GraphModule, t_inference: float, *, seed: int,
          compensation: Optional[str] = "global") -> fx.GraphModule:
    """The programmed model read ``t_inference`` seconds after programming.

    Starts from the programmed state every time (drifting a drifted model does
    not accumulate), with fresh read noise drawn from ``seed``. ``compensation``
    is ``"global"`` (one digital gain per array), ``"per_column"`` (one per
    output column), ``"global_exact_reference"`` (one per array, its reference
    the ideal readout of the targets) or None. Returns a new GraphModule; ``programmed`` is not
    modified.
    """
    record_of(programmed, "drift()", Stage.CONVERTED)
    programming = programming_of(programmed)
    if programming is None:
        raise UserError("drift() expects a programmed model: call xbar.program(converted, noise_model, seed=...) "
                        "first and drift what it returns")
    if programming.recalibration is not None:
        raise UserError("drift() expects a programmed model, but this one is recalibrated: drift the programmed "
                        "model and recalibrate what drift() returns")
    t_inference = _time(t_inference)
    seed = _seed(seed, "drift()")
    mode = compensation_mode(compensation)
    drifted = array_copy(programmed)
    drift_arrays(drifted, programming.model, t_inference, _generator(seed), mode)
    drifted.meta[PROGRAMMING_KEY] = replace(programming, t_inference=t_inference, drift_seed=seed,
                                            compensation=None if mode is None else mode.value)
    return drifted
