"""The record of one layer that stays digital: plain data, no torch, so files and views read it back anywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class DigitalLayer:
    """A layer whose weights stay digital: its name, the ops that read them, the weights and why."""

    name: str
    ops: tuple[str, ...]
    weights: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    reason: str

    def as_dict(self) -> dict:
        """A JSON-ready dict, as files record it."""
        return {"layer": self.name, "ops": list(self.ops), "weights": list(self.weights),
                "shapes": [list(shape) for shape in self.shapes], "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping) -> "DigitalLayer":
        return cls(data["layer"], tuple(data["ops"]), tuple(data["weights"]),
                   tuple(tuple(shape) for shape in data["shapes"]), data["reason"])
