"""One crossbar array as a backend sees it (:class:`LayerSummary`), read from a converted model in memory.

The ONNX reader and the graph archive give the same rows, so ``xbar inspect``
shows any of them alike.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from torch import fx

from ...passes.numerics.crossbar import Crossbar, CrossbarSettings
from ...passes.plan import tag_of

AT_G_MAX_TOLERANCE = 0.01
"""A device counts as at g_max when within this fraction of (g_max - g_min) of it."""
SETTINGS_FIELDS = tuple(f.name for f in dataclasses.fields(CrossbarSettings))
REQUIRED_SETTINGS = tuple(f.name for f in dataclasses.fields(CrossbarSettings)
                          if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)


@dataclass(frozen=True)
class LayerSummary:
    """One crossbar array; conductances in microsiemens."""

    node: str
    kind: str
    weight_shape: tuple[int, ...]
    settings: CrossbarSettings
    g_plus: np.ndarray = field(repr=False)
    g_minus: np.ndarray = field(repr=False)
    rule: Optional[str] = None
    """The configuration rule that chose the settings, when the file records it."""

    @property
    def conductances(self) -> np.ndarray:
        """Every device of the layer: G+ and G- together."""
        return np.concatenate([self.g_plus.ravel(), self.g_minus.ravel()])

    @property
    def fraction_at_g_max(self) -> float:
        s = self.settings
        tolerance = AT_G_MAX_TOLERANCE * abs(s.g_max - s.g_min)
        return float(np.mean(np.abs(self.conductances - s.g_max) <= tolerance))

    def as_dict(self) -> dict:
        """A JSON-ready dict (no conductance arrays, only their statistics)."""
        g = self.conductances
        return {
            "node": self.node,
            "kind": self.kind,
            "weight_shape": list(self.weight_shape),
            **self.settings.as_dict(),
            "rule": self.rule,
            "conductance_min": float(g.min()),
            "conductance_mean": float(g.mean()),
            "conductance_max": float(g.max()),
            "fraction_at_g_max": self.fraction_at_g_max,
        }


def summarize_converted(converted: fx.GraphModule) -> list[LayerSummary]:
    """The crossbar arrays of a converted GraphModule, in module order."""
    rules = {node.target: tag.plan.rule for node in converted.graph.nodes
             if node.op == "call_module" and (tag := tag_of(node)) is not None}
    return [_summary_of_module(name, module, rules.get(name)) for name, module in converted.named_modules()
            if isinstance(module, Crossbar)]


def _summary_of_module(name: str, module: Crossbar, rule: Optional[str]) -> LayerSummary:
    g_plus, g_minus = module.g_plus.detach().numpy(), module.g_minus.detach().numpy()
    return LayerSummary(name, module.kind.describe(g_plus.ndim), g_plus.shape, module.settings, g_plus, g_minus,
                        rule)


def settings_from(values: dict) -> CrossbarSettings:
    """CrossbarSettings from stored values: str for bytes, tuple for lists (as ONNX and torch.save keep them)."""
    return CrossbarSettings(**{key: _decoded(value) for key, value in values.items()})


def _decoded(value):
    if isinstance(value, bytes):
        return value.decode()
    return tuple(value) if isinstance(value, list) else value
