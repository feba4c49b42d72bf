"""aihwkit's weight remapping and clipping of hardware-aware training (``remap``, ``clip``).

Both act on the analog weights ``W' = W / alpha`` of each array (see
:mod:`xbar.passes.numerics.weight_mapping`) after every optimiser step of
``fine_tune``, clip first, as aihwkit's inference tile does after each step, and
when the model is converted unless a step left the weights so, so the programmed
arrays satisfy them (:mod:`xbar.passes.numerics.weight_constraints`). Field names, defaults and
meanings are aihwkit's ``WeightRemapParameter`` and ``WeightClipParameter``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .errors import ConfigError


class WeightRemapType(Enum):
    """How the mapping scales follow the weights (aihwkit's enum; the simulated members)."""

    NONE = "None"
    LAYERWISE_SYMMETRIC = "LayerwiseSymmetric"
    """One scale for the array: ``alpha = max|W| / remapped_wmax`` (every row's, as aihwkit's torch tile)."""
    CHANNELWISE_SYMMETRIC = "ChannelwiseSymmetric"
    """One scale per output row: ``alpha_i = max_j |W_ij| / remapped_wmax`` (an all-zero row keeps its scale)."""


class WeightClipType(Enum):
    """How the analog weights are clipped (aihwkit's enum)."""

    NONE = "None"
    FIXED_VALUE = "FixedValue"
    """Clip ``W'`` to ``[-fixed_value, fixed_value]``."""
    LAYER_GAUSSIAN = "LayerGaussian"
    """Clip ``W'`` at ``sigma`` times its standard deviation (unbiased; at most ``fixed_value`` if > 0)."""
    AVERAGE_CHANNEL_MAX = "AverageChannelMax"
    """Clip ``W'`` at the mean over output rows of ``max_j |W'_ij|`` (at most ``fixed_value`` if > 0)."""


@dataclass
class WeightRemapParameter:
    """Remapping of the mapping scales after each optimiser step (aihwkit's names and defaults).

    ``remapped_wmax`` is the analog weight the largest weight maps to.
    ``max_scale_range > 0`` (channelwise only, with ``remapped_wmax = 1``) bounds each
    new scale to ``max_scale_range`` times the smallest old scale (at least
    ``max_scale_ref`` when that is set), as aihwkit's C++ remapper does.
    """

    type: WeightRemapType = WeightRemapType.NONE
    remapped_wmax: float = 1.0
    max_scale_range: float = 0.0
    max_scale_ref: float = 0.0

    @property
    def active(self) -> bool:
        return self.type != WeightRemapType.NONE

    def __post_init__(self):
        self.validate()  # refused when built, not first when a model is prepared

    def validate(self) -> None:
        if not isinstance(self.type, WeightRemapType):
            raise ConfigError(f"remap.type must be one of {[m.name for m in WeightRemapType]}, got {self.type!r}")
        if not self.remapped_wmax > 0:
            raise ConfigError(f"remap.remapped_wmax must be > 0, got {self.remapped_wmax}")
        for name in ("max_scale_range", "max_scale_ref"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"remap.{name} must be >= 0 (0 = unbounded), got {getattr(self, name)}")
        if self.max_scale_range > 0 and self.remapped_wmax != 1.0:
            raise ConfigError("remap.max_scale_range needs remap.remapped_wmax = 1 (aihwkit's bounded remap)")


@dataclass
class WeightClipParameter:
    """Clipping of the analog weights after each optimiser step (aihwkit's names and defaults)."""

    type: WeightClipType = WeightClipType.NONE
    fixed_value: float = -1.0
    """FIXED_VALUE's bound; if > 0 also the most the other types clip at."""
    sigma: float = 2.5
    """LAYER_GAUSSIAN's multiple of the standard deviation."""

    @property
    def active(self) -> bool:
        return self.type != WeightClipType.NONE

    def __post_init__(self):
        self.validate()  # refused when built, not first when a model is prepared

    def validate(self) -> None:
        if not isinstance(self.type, WeightClipType):
            raise ConfigError(f"clip.type must be one of {[m.name for m in WeightClipType]}, got {self.type!r}")
        if self.type == WeightClipType.FIXED_VALUE and not self.fixed_value > 0:
            raise ConfigError(f"clip.type = FIXED_VALUE needs clip.fixed_value > 0, got {self.fixed_value}")
        if not self.sigma > 0:
            raise ConfigError(f"clip.sigma must be > 0, got {self.sigma}")
