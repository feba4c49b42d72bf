"""aihwkit's PCM-like device model: programming noise, drift and 1/f read noise fitted on PCM devices."""

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
"""Smallest relative conductance the PCM drift fit is evaluated at (a device at 0 uS drifts like 1e-7 g_max)."""
PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)
"""The default programming-noise fit: sigma (uS at 25 uS g_max) as a polynomial in g_target / g_max, c0 first."""
PCM_PROG_COEFF_G_MAX = 25.0
"""The g_max (uS) the default PCM programming-noise fit was measured at."""


@dataclass(frozen=True)
class PCMLikeNoiseModel(BaseNoiseModel):
    """aihwkit's ``PCMLikeNoiseModel``: programming noise, drift and 1/f read noise fitted on PCM devices.

    With ``x = g_target / g_max``:

    * programming: ``sigma = (c0 + c1 x + c2 x^2) g_max / prog_coeff_g_max_reference``,
      ``g_prog = max(g_target + prog_noise_scale sigma N, 0)``;
    * drift exponent, from the target: ``g_rel = max(|x|, 1e-7)``,
      ``mu = clamp(-0.0155 ln g_rel + 0.0244, 0.049, 0.1)``,
      ``sigma_nu = clamp(-0.0125 ln g_rel - 0.0059, 0.008, 0.045)``,
      ``nu = |mu + sigma_nu N| drift_scale``;
    * at ``t_inference``: ``t = t_inference + t_0``, ``g_drift = g_prog (t / t_0)^-nu``
      (``g_prog`` at ``t = t_0``), ``q_s = min(0.0088 / max((|g_prog| / g_max)^0.65, 1e-3), 0.2)``,
      ``g = max(g_drift + |g_drift| read_noise_scale q_s sqrt(ln((t + t_read) / (2 t_read))) N, 0)``.

    ``prog_coeff_g_max_reference`` left None becomes 25 uS with the default
    ``prog_coeff`` (the g_max they were fitted at) and ``g_max`` with your own
    coefficients, as in aihwkit; a value you give is used as it is.
    """

    prog_coeff: tuple[float, ...] = PCM_PROG_COEFF
    g_max: float = 25.0
    t_read: float = 250.0e-9
    t_0: float = 20.0
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    prog_coeff_g_max_reference: Optional[float] = None

    def __post_init__(self) -> None:
        coefficients = tuple(float(c) for c in self.prog_coeff)
        require(len(coefficients) > 0, type(self).__name__, "prog_coeff needs at least one coefficient")
        object.__setattr__(self, "prog_coeff", coefficients)
        if self.prog_coeff_g_max_reference is None:
            default = coefficients == PCM_PROG_COEFF
            object.__setattr__(self, "prog_coeff_g_max_reference", PCM_PROG_COEFF_G_MAX if default else self.g_max)
        check_fields(self, ("g_max", "t_read", "t_0", "prog_coeff_g_max_reference"),
                      ("prog_noise_scale", "read_noise_scale", "drift_scale"))

    def programming_sigma(self, g_target: Tensor) -> Tensor:
        """The standard deviation (uS) of the programming noise at ``g_target``, before ``prog_noise_scale``."""
        return polynomial(self.prog_coeff, g_target / self.g_max) * (self.g_max / self.prog_coeff_g_max_reference)

    def apply_programming_noise_to_conductance(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        noise = standard_normal(g_target, generator).mul_(self.programming_sigma(g_target))
        return (g_target + self.prog_noise_scale * noise).clamp_(min=0.0)

    def drift_mean_std(self, g_target: Tensor) -> tuple[Tensor, Tensor]:
        """``mu`` and ``sigma_nu`` of the drift exponent at ``g_target`` (before ``drift_scale``)."""
        log_g = torch.log(torch.clamp(torch.abs(g_target / self.g_max), min=G_REL_FLOOR))
        mu = (-0.0155 * log_g + 0.0244).clamp_(min=0.049, max=0.1)
        sigma = (-0.0125 * log_g - 0.0059).clamp_(min=0.008, max=0.045)
        return mu, sigma

    def generate_drift_coefficients(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        mu, sigma = self.drift_mean_std(g_target)
        return (mu + sigma * standard_normal(g_target, generator)).abs_().mul_(self.drift_scale)

    def read_noise_sigma(self, g_prog: Tensor, t_inference: float) -> Tensor:
        """The relative read-noise standard deviation at ``t_inference`` (before ``read_noise_scale``)."""
        q_s = torch.clamp(0.0088 / torch.clamp((torch.abs(g_prog) / self.g_max) ** 0.65, min=1e-3), max=0.2)
        return q_s * read_noise_time_factor(t_inference + self.t_0, self.t_read)

    def apply_drift_noise_to_conductance(self, g_prog: Tensor, drift_noise_param: Tensor, t_inference: float,
                                         generator: torch.Generator) -> Tensor:
        g_drift = power_law_drift(g_prog, drift_noise_param, t_inference + self.t_0, self.t_0)
        noise = standard_normal(g_prog, generator).mul_(self.read_noise_sigma(g_prog, t_inference))
        return (g_drift + torch.abs(g_drift) * self.read_noise_scale * noise).clamp_(min=0.0)
