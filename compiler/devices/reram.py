"""aihwkit's ReRAM device model fitted on Wan et al. (Nature 2022): Gaussian deviations from the target,
fitted at a few times after programming."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from ...passes.errors import UserError
from .base import BaseNoiseModel, check_fields, polynomial, require, standard_normal

RERAM_WAN2022_COEFFS = {
    1.0: (0.348, 16.030, -43.853, 45.393, -16.815),
    86400.0: (0.701, 22.086, -50.773, 47.095, -16.458),
    172800.0: (0.782, 20.274, -43.507, 37.062, -11.934),
}
"""Standard deviation (uS) from the target, a polynomial in g_target / g_max (c0 first),
1 s, 1 day and 2 days after programming."""


@dataclass(frozen=True)
class ReRamWan2022NoiseModel(BaseNoiseModel):
    """aihwkit's ``ReRamWan2022NoiseModel``: ReRAM deviations fitted on Wan et al. (Nature 2022).

    The deviation from the target is Gaussian with a standard deviation given, for
    each of a few times after programming (``coeff_dic``: seconds -> coefficients,
    c0 first), by a 4th-order polynomial in ``x = g_target / g_max``, scaled by
    ``g_max / coeff_g_max_reference`` and ``noise_scale``, clamped at 0. Programming
    uses the earliest time's fit; at ``t_inference`` (which must be one of the
    fitted times) the devices are drawn afresh around their targets with that
    time's fit (the programmed state does not carry over), so the drift
    parameter of each device is its target. ``coeff_g_max_reference`` left None
    is ``g_max``, which is what aihwkit's code computes with.
    """

    coeff_dic: dict = field(default_factory=lambda: dict(RERAM_WAN2022_COEFFS))
    g_max: float = 25.0
    noise_scale: float = 1.0
    coeff_g_max_reference: Optional[float] = None

    def __post_init__(self) -> None:
        name = type(self).__name__
        require(isinstance(self.coeff_dic, dict) and len(self.coeff_dic) > 0, name,
                 "coeff_dic must map times in seconds to polynomial coefficients")
        table = {float(t): tuple(float(c) for c in coeffs) for t, coeffs in self.coeff_dic.items()}
        require(all(t >= 0 and len(c) > 0 for t, c in table.items()), name,
                 "coeff_dic needs times >= 0, each with at least one coefficient")
        object.__setattr__(self, "coeff_dic", table)
        if self.coeff_g_max_reference is None:
            object.__setattr__(self, "coeff_g_max_reference", self.g_max)
        check_fields(self, ("g_max", "coeff_g_max_reference"), ("noise_scale",))

    def _deviate(self, g_target: Tensor, coefficients: Sequence[float], generator: torch.Generator) -> Tensor:
        sigma = polynomial(coefficients, g_target / self.g_max) * (self.g_max / self.coeff_g_max_reference)
        noise = standard_normal(g_target, generator).mul_(sigma)
        return (g_target + self.noise_scale * noise).clamp_(min=0.0)

    def apply_programming_noise_to_conductance(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        return self._deviate(g_target, self.coeff_dic[min(self.coeff_dic)], generator)

    def generate_drift_coefficients(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        return g_target.clone()

    def apply_drift_noise_to_conductance(self, g_prog: Tensor, drift_noise_param: Tensor, t_inference: float,
                                         generator: torch.Generator) -> Tensor:
        coefficients = self.coeff_dic.get(float(t_inference))
        if coefficients is None:
            times = ", ".join(f"{t:g}" for t in sorted(self.coeff_dic))
            raise UserError(f"{type(self).__name__} is fitted at t_inference = {times} s only; "
                            f"drift to one of those times, not {t_inference:g} s")
        return self._deviate(drift_noise_param, coefficients, generator)
