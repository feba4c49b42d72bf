"""What :func:`xbar.prepare` decided, kept on the GraphModules it and :func:`xbar.convert` return.

The record travels in ``graph_module.meta`` under one key; :func:`record_of` is
the only way to read it, and it tells a user who passed some other module what
to pass instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Optional

from torch import fx

from ...passes.digital_layer import DigitalLayer
from ...passes.errors import UserError
from ...passes.plan import LayerPlan
from ..config.hardware import HardwareConfig

RECORD_KEY = "xbar"


class Stage(Enum):
    """How far a GraphModule went through the pipeline; the value names the call that made it."""

    PREPARED = "prepare()"
    CONVERTED = "convert()"


@dataclass(frozen=True)
class CompileRecord:
    """The validated configuration, one plan per crossbar layer, the layers with a weight that stay
    digital (and why), the stage reached, what calibration found (input-range module name -> the
    method that set the range and on how many batches, e.g. ``"MovingStd(std_alpha=3.0; batches=4)"``) and
    the dynamic shapes the model was captured with (torch.export's form, one entry per positional input),
    which the compiled path and the ONNX export keep; ``shares_weights``: prepared with ``share_weights``
    (:func:`~xbar.compiler.pipeline.stages.prepare`)."""

    config: HardwareConfig
    plans: tuple[LayerPlan, ...]
    digital: tuple[DigitalLayer, ...] = ()
    stage: Stage = Stage.PREPARED
    calibration: dict[str, str] = field(default_factory=dict)
    dynamic_shapes: Optional[tuple] = None
    shares_weights: bool = False

    def __deepcopy__(self, memo) -> "CompileRecord":
        """Records are never mutated: a copied GraphModule shares its record."""
        return self

    def converted(self) -> "CompileRecord":
        return replace(self, stage=Stage.CONVERTED)


def attach_record(graph_module: fx.GraphModule, record: CompileRecord) -> fx.GraphModule:
    graph_module.meta[RECORD_KEY] = record
    return graph_module


def record_of(graph_module, caller: str, stage: Stage) -> CompileRecord:
    """The record of a GraphModule at ``stage``; :class:`UserError` says what ``caller`` expects instead."""
    meta = getattr(graph_module, "meta", None)
    record = meta.get(RECORD_KEY) if isinstance(graph_module, fx.GraphModule) and meta else None
    if not isinstance(record, CompileRecord):
        raise UserError(f"{caller} expects the GraphModule returned by xbar.{stage.value}, got a "
                        f"{type(graph_module).__name__} that did not come from xbar")
    if record.stage != stage:
        if stage == Stage.CONVERTED:
            raise UserError(f"{caller} expects a converted model, but this one is only prepared: "
                            "call xbar.convert() on it first")
        raise UserError(f"{caller} expects a prepared model (xbar.prepare()), but this one is already "
                        "converted to conductances: use the model prepare() returned")
    return record
