"""aihwkit's state-independent device model: programming noise, drift and read noise that do not depend
on the conductance."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class StateIndependentNoiseModel(BaseNoiseModel):
    """aihwkit's ``StateIndependentNoiseModel``: noise and drift that do not depend on the conductance.

    * programming: ``sigma = c0 + c1 x + c2 x^2`` in uS (default 0.2 uS flat),
      ``g_prog = max(g_target + prog_noise_scale sigma N, 0)``;
    * drift exponent: ``nu = |drift_nu_mean + drift_nu_std N| drift_scale``;
    * at ``t_inference``: ``t = t_inference + t_0``, ``g_drift = g_prog (t / t_0)^-nu``,
      ``g = max(g_drift + |g_drift / g_max| read_noise_scale sqrt(ln((t + t_read) / (2 t_read))) N, 0)``.
    """

    g_max: float = 25.0
    prog_coeff: tuple[float, ...] = (0.2, 0.0, 0.0)
    prog_noise_scale: float = 1.0
    drift_nu_mean: float = 0.1
    drift_nu_std: float = 0.05
    drift_scale: float = 1.0
    t_0: float = 20.0
    read_noise_scale: float = 1.0
    t_read: float = 250.0e-9

    def __post_init__(self) -> None:
        object.__setattr__(self, "prog_coeff", tuple(float(c) for c in self.prog_coeff))
        require(len(self.prog_coeff) > 0, type(self).__name__, "prog_coeff needs at least one coefficient")
        check_fields(self, ("g_max", "t_read", "t_0"),
                      ("prog_noise_scale", "drift_nu_std", "drift_scale", "read_noise_scale"))

    def apply_programming_noise_to_conductance(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        sigma = polynomial(self.prog_coeff, g_target / self.g_max)
        noise = standard_normal(g_target, generator).mul_(sigma)
        return (g_target + self.prog_noise_scale * noise).clamp_(min=0.0)

    def generate_drift_coefficients(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        nu = self.drift_nu_mean + self.drift_nu_std * standard_normal(g_target, generator)
        return nu.abs_().mul_(self.drift_scale)

    def apply_drift_noise_to_conductance(self, g_prog: Tensor, drift_noise_param: Tensor, t_inference: float,
                                         generator: torch.Generator) -> Tensor:
        t = t_inference + self.t_0
        g_drift = power_law_drift(g_prog, drift_noise_param, t, self.t_0)
        sigma = torch.abs(g_drift / self.g_max) * (self.read_noise_scale * read_noise_time_factor(t, self.t_read))
        return (g_drift + sigma * standard_normal(g_prog, generator)).clamp_(min=0.0)
