"""aihwkit's device model fitted on the PCM devices of IBM's 64-core HERMES chip: programming noise, drift and
1/f read noise, for unit cells of one or two devices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .base import (
    BaseNoiseModel,
    check_fields,
    polynomial,
    power_law_drift,
    read_noise_time_factor,
    require,
    standard_normal,
)

G_REL_FLOOR = 1e-7
"""Smallest relative conductance the drift fit is evaluated at."""


@dataclass(frozen=True)
class HermesFit:
    """The chip's measured fits for one unit cell (one or two devices per conductance)."""

    g_max: float  # the largest conductance characterised (uS)
    t_0: float  # the first read after programming (s)
    prog_coeff: tuple[float, ...]  # programming sigma (uS at g_max), a cubic in g_target / g_max, c0 first
    nu_std_knee: float  # below it sigma_nu = clamp(a ln g + b, lo, hi), above it a quadratic
    nu_std_log: tuple[float, float, float, float]  # a, b, lo, hi
    nu_std_quadratic: tuple[float, float, float]  # c2, c1, c0
    read_knee: float  # below it q_s = clamp(a ln g + b, lo, hi), above it a cubic
    read_log: tuple[float, float, float, float]  # a, b, lo, hi
    read_cubic: tuple[float, float, float, float]  # c3, c2, c1, c0


HERMES_FITS = {
    1: HermesFit(10.35, 200.0, (0.15781817, 2.32443916, -2.16310839, 0.68841818),
                 0.3039, (-0.0120, -0.0023, 0.0124, 0.04), (-0.0165, 0.0116, 0.0104),
                 0.1591, (-0.0078, 0.0038, 0.0179, 0.04), (0.0664, -0.1352, 0.0768, 0.0088)),
    2: HermesFit(20.7, 300.0, (0.16603222, 4.71806468, -8.48101252, 4.68961419),
                 0.3055, (-0.0117, -0.0057, 0.0091, 0.04), (-0.0118, 0.0093, 0.0073),
                 0.16, (-0.0117, -0.0069, 0.015, 0.04), (0.0069, -0.0280, 0.0211, 0.0123)),
}
"""num_devices -> the fits aihwkit's HERMES model uses."""
NU_MEAN_KNEE = 0.0945
"""Below it the drift mean is clamp(-0.0387 ln g - 0.0182, 0.072, 0.13), above it -0.0436 g^2 - 0.0126 g + 0.0736."""


def log_branch(g_rel: Tensor, knee: float, log_fit: tuple, power_fit: tuple) -> Tensor:
    """``clamp(a ln g + b, lo, hi)`` below ``knee``, the polynomial ``power_fit`` (highest power first) from it."""
    a, b, lo, hi = log_fit
    below = (a * torch.log(g_rel) + b).clamp_(min=lo, max=hi)
    return torch.where(g_rel < knee, below, polynomial(power_fit[::-1], g_rel))


@dataclass(frozen=True)
class HermesNoiseModel(BaseNoiseModel):
    """aihwkit's ``HermesNoiseModel``: PCM devices of IBM's HERMES chip, one or two devices per conductance.

    ``num_devices`` (1 or 2, aihwkit's default 2) chooses the measured fits: g_max
    (10.35 or 20.7 uS, the largest characterised; a larger one is refused), t_0 (200
    or 300 s), the programming cubic and the spread of the drift exponent and of the
    read noise. With ``x = g_target / g_max``:

    * programming: ``sigma = (c0 + c1 x + c2 x^2 + c3 x^3) g_max / prog_coeff_g_max_reference``,
      ``g_prog = max(g_target + prog_noise_scale sigma N, 0)``;
    * drift exponent, from the target: ``g_rel = max(|x|, 1e-7)``, ``mu`` and ``sigma_nu``
      piecewise fits in ``g_rel`` (a clamped logarithm below a knee, a polynomial above),
      ``nu = |mu + sigma_nu N| drift_scale``;
    * at ``t_inference``: ``t = t_inference + t_0``, ``g_drift = g_prog (t / t_0)^-nu``,
      ``q_s`` a piecewise fit in ``|g_prog| / g_max``,
      ``g = max(g_drift + |g_drift| read_noise_scale q_s sqrt(ln((t + t_read) / (2 t_read))) N, 0)``.

    Two devices are modelled as aihwkit does: as one conductance of twice the range
    that both devices share, with the two-device fits (no converter with several
    devices per weight is needed). ``g_max``, ``t_0`` and ``prog_coeff`` left None take
    the fit's values; ``prog_coeff_g_max_reference`` left None is the fit's g_max with
    the default coefficients and ``g_max`` with your own, as in aihwkit (a value you
    give is used as it is, where aihwkit ignores it).
    """

    prog_coeff: Optional[tuple[float, ...]] = None
    num_devices: int = 2
    g_max: Optional[float] = None
    t_read: float = 512.0e-9
    t_0: Optional[float] = None
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    prog_coeff_g_max_reference: Optional[float] = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        require(type(self.num_devices) is int and self.num_devices in HERMES_FITS, name,
                f"num_devices must be 1 or 2 (devices per conductance), got {self.num_devices!r}")
        fit = self.fit
        own_coefficients = self.prog_coeff is not None
        coefficients = tuple(float(c) for c in self.prog_coeff) if own_coefficients else fit.prog_coeff
        require(len(coefficients) > 0, name, "prog_coeff needs at least one coefficient")
        g_max = fit.g_max if self.g_max is None else self.g_max
        object.__setattr__(self, "prog_coeff", coefficients)
        defaults = {"g_max": g_max, "t_0": fit.t_0,
                    "prog_coeff_g_max_reference": g_max if own_coefficients else fit.g_max}
        for field_name, value in defaults.items():
            if getattr(self, field_name) is None:
                object.__setattr__(self, field_name, value)
        check_fields(self, ("g_max", "t_read", "t_0", "prog_coeff_g_max_reference"),
                     ("prog_noise_scale", "read_noise_scale", "drift_scale"))
        require(self.g_max <= fit.g_max, name,
                f"g_max={self.g_max:g} is beyond the {fit.g_max:g} uS the chip was characterised up to with "
                f"num_devices={self.num_devices}; convert with converter.g_max={fit.g_max:g} (or less)")

    @property
    def fit(self) -> HermesFit:
        """The measured fits of this unit cell."""
        return HERMES_FITS[self.num_devices]

    def programming_sigma(self, g_target: Tensor) -> Tensor:
        """The standard deviation (uS) of the programming noise at ``g_target``, before ``prog_noise_scale``."""
        return polynomial(self.prog_coeff, g_target / self.g_max) * (self.g_max / self.prog_coeff_g_max_reference)

    def apply_programming_noise_to_conductance(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        noise = standard_normal(g_target, generator).mul_(self.programming_sigma(g_target))
        return (g_target + self.prog_noise_scale * noise).clamp_(min=0.0)

    def drift_mean_std(self, g_target: Tensor) -> tuple[Tensor, Tensor]:
        """``mu`` and ``sigma_nu`` of the drift exponent at ``g_target`` (before ``drift_scale``)."""
        g_rel = torch.clamp(torch.abs(g_target / self.g_max), min=G_REL_FLOOR)
        mu = log_branch(g_rel, NU_MEAN_KNEE, (-0.0387, -0.0182, 0.0720, 0.13), (-0.0436, -0.0126, 0.0736))
        fit = self.fit
        return mu, log_branch(g_rel, fit.nu_std_knee, fit.nu_std_log, fit.nu_std_quadratic)

    def generate_drift_coefficients(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        mu, sigma = self.drift_mean_std(g_target)
        return (mu + sigma * standard_normal(g_target, generator)).abs_().mul_(self.drift_scale)

    def read_noise_sigma(self, g_prog: Tensor, t_inference: float) -> Tensor:
        """The relative read-noise standard deviation at ``t_inference`` (before ``read_noise_scale``)."""
        fit = self.fit
        q_s = log_branch(torch.abs(g_prog) / self.g_max, fit.read_knee, fit.read_log, fit.read_cubic)
        return q_s * read_noise_time_factor(t_inference + self.t_0, self.t_read)

    def apply_drift_noise_to_conductance(self, g_prog: Tensor, drift_noise_param: Tensor, t_inference: float,
                                         generator: torch.Generator) -> Tensor:
        g_drift = power_law_drift(g_prog, drift_noise_param, t_inference + self.t_0, self.t_0)
        noise = standard_normal(g_prog, generator).mul_(self.read_noise_sigma(g_prog, t_inference))
        return (g_drift + torch.abs(g_drift) * self.read_noise_scale * noise).clamp_(min=0.0)
