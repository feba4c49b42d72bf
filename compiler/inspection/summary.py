"""The one per-array summary every file and view reads: :class:`LayerSummary`, and :class:`ModelSummary`.

Plain records (numpy, no torch): :func:`~xbar.compiler.inspection.converted.summarize`
makes them from a converted model in memory, and ``xbar inspect`` reads them back
from a file. The ONNX metadata (``xbar.layers``, ``xbar.digital_layers``), the
graph archive and ``xbar inspect`` all keep :meth:`LayerSummary.description` and
:meth:`~xbar.passes.digital_layer.DigitalLayer.as_dict`, so a new export target
reads the same thing.

An array called from more than one place (one ``nn.Linear`` applied twice, an
unrolled recurrent cell) is one array, programmed once, with several call sites.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from ...passes.digital_layer import DigitalLayer
from ...passes.numerics.settings import CrossbarSettings
from .region import WeightRegion

AT_G_MAX_TOLERANCE = 0.01
"""A device counts as at g_max when within this fraction of (g_max - g_min) of it."""
SETTINGS_FIELDS = tuple(f.name for f in dataclasses.fields(CrossbarSettings))
REQUIRED_SETTINGS = tuple(f.name for f in dataclasses.fields(CrossbarSettings)
                          if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


@dataclass(frozen=True)
class LayerSummary:
    """One crossbar array; conductances in microsiemens: G+ and G-, or (a multi-device converter's array,
    ``g_plus`` and ``g_minus`` None) every device in ``devices``, by name (``g_plus_0``, ..., ``g_device``)."""

    node: str
    kind: str
    weight_shape: tuple[int, ...]
    settings: CrossbarSettings
    g_plus: Optional[np.ndarray] = field(repr=False)
    g_minus: Optional[np.ndarray] = field(repr=False)
    rule: Optional[str] = None
    """The configuration rule that chose the settings, when the file records it."""
    source_weight: Optional[str] = None
    has_bias: Optional[bool] = None
    call_sites: tuple[str, ...] = ()
    """The graph nodes that run this array (more than one: a layer called more than once)."""
    region: Optional[WeightRegion] = None
    """The part of its layer's weight the array holds (:mod:`.region`), when the file records it."""
    devices: Mapping[str, np.ndarray] = field(default_factory=dict, repr=False)
    """A multi-device array's devices (empty for a pair)."""

    @property
    def device_conductances(self) -> Mapping[str, np.ndarray]:
        """Every device tensor by name: ``g_plus`` and ``g_minus``, or :attr:`devices`."""
        return self.devices or {"g_plus": self.g_plus, "g_minus": self.g_minus}

    @property
    def calls(self) -> int:
        return max(1, len(self.call_sites))

    @property
    def conductances(self) -> np.ndarray:
        """Every device of the layer: G+ and G- (or every device of a multi-device array) together."""
        return np.concatenate([g.ravel() for g in self.device_conductances.values()])

    @property
    def fraction_at_g_max(self) -> float:
        s = self.settings
        tolerance = AT_G_MAX_TOLERANCE * abs(s.g_max - s.g_min)
        return float(np.mean(np.abs(self.conductances - s.g_max) <= tolerance))

    def description(self) -> dict:
        """What files record of the array (JSON-ready, settings flat, no conductances)."""
        return {"node": self.node, "kind": self.kind, "weight_shape": list(self.weight_shape),
                "source_weight": self.source_weight, "has_bias": self.has_bias, "rule": self.rule,
                "calls": self.calls, "call_sites": list(self.call_sites), **self.settings.as_dict(),
                **({} if self.region is None else {"region": self.region.as_dict()})}

    @classmethod
    def from_description(cls, data: Mapping, g_plus: np.ndarray, g_minus: np.ndarray) -> "LayerSummary":
        """The summary a file recorded with :meth:`description`, and its conductances."""
        settings = settings_from({key: data[key] for key in SETTINGS_FIELDS if key in data})
        return cls(data["node"], data["kind"], tuple(g_plus.shape), settings, g_plus, g_minus, data.get("rule"),
                   data.get("source_weight"), data.get("has_bias"), tuple(data.get("call_sites", ())),
                   WeightRegion.from_dict(data["region"]) if "region" in data else None)

    def as_dict(self) -> dict:
        """A JSON-ready dict: the description and the conductances' statistics."""
        g = self.conductances
        return self.description() | {
            "conductance_min": float(g.min()),
            "conductance_mean": float(g.mean()),
            "conductance_max": float(g.max()),
            "fraction_at_g_max": self.fraction_at_g_max,
        }


@dataclass(frozen=True)
class ModelSummary:
    """A converted model as a backend and a reader see it: its arrays and its digital layers."""

    arrays: list[LayerSummary]
    digital: tuple[DigitalLayer, ...] = ()


def settings_from(values: dict) -> CrossbarSettings:
    """CrossbarSettings from stored values: str for bytes, tuple for lists (as ONNX and torch.save keep them)."""
    return CrossbarSettings(**{key: _decoded(value) for key, value in values.items()})


def _decoded(value):
    if isinstance(value, bytes):
        return value.decode()
    return tuple(value) if isinstance(value, list) else value
