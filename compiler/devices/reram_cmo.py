"""aihwkit's device model of IBM's filamentary conductive-metal-oxide (CMO/HfOx) ReRAM: programming noise of a
program-and-verify loop, a relaxation of the conductance that does not depend on it, and 1/f read noise."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .base import BaseNoiseModel, check_fields, polynomial, read_noise_time_factor, require, standard_normal

CMO_PROG_COEFFS = {0.2: (0.00081107, 0.00106879), 2.0: (0.0112185391, 0.01129027418)}
"""Acceptance range of the program-and-verify loop (% of the target) -> programming sigma (uS), a polynomial
in g_target in uS, c0 first."""
CMO_DECAY = {"mean": (-0.08900206,), "std": (0.04201137, 0.41183342)}
"""The relaxation after ``t`` seconds: mean shift ``mean[0] ln t`` and std ``std[0] ln t + std[1]``, in uS."""
CMO_READ = {"K": 0.0277316483, "t_read": 1e-6}
"""The read noise: sigma = K log10(g) sqrt(ln((t + t_read) / (2 t_read))), g in uS, t_read in seconds."""


def _table(value, name: str, model: str) -> dict:
    """``value`` as a dict of tuples of floats (a number alone as a one-element tuple)."""
    require(isinstance(value, dict) and len(value) > 0, model, f"{name} must be a non-empty table")
    return {key: tuple(float(c) for c in (v if isinstance(v, (list, tuple)) else (v,))) for key, v in value.items()}


@dataclass(frozen=True)
class ReRamCMONoiseModel(BaseNoiseModel):
    """aihwkit's ``ReRamCMONoiseModel``: CMO/HfOx ReRAM devices, one device per conductance, g_min to g_max.

    * programming: ``sigma = c0 + c1 g_target + ...`` (uS, ``coeff_dict[acceptance_range]``),
      ``g_prog = g_target + prog_noise_scale sigma N`` (not clamped, as in aihwkit);
    * at ``t_inference`` > 0 (seconds; 0 reads ``g_prog``): the relaxation does not depend on the
      conductance, ``g_drift = g_prog + drift_scale (mean[0] ln t + (std[0] ln t + std[1]) N)``, then
      read noise ``sigma_read = K log10(g_drift) sqrt(ln((t + t_read) / (2 t_read)))``,
      ``g = clamp(g_drift + read_noise_scale sigma_read N, g_min, g_max)``.

    The defaults are aihwkit's: g_max 88.2 and g_min 9 uS (its single-device converter's), the fits of
    :data:`CMO_PROG_COEFFS`, :data:`CMO_DECAY`, :data:`CMO_READ`. The drift parameter of a device is its
    target, which the model does not use. Two choices where aihwkit's behaviour means nothing: its nominal
    default acceptance range, 0.02, has no fit and falls back to the smallest one, 0.2, so 0.2 is the
    default here and a range without a fit is refused; a device that relaxes to 0 uS or below (where
    aihwkit's log10 gives NaN) reads g_min.
    """

    coeff_dict: dict = field(default_factory=lambda: dict(CMO_PROG_COEFFS))
    g_max: float = 88.199997
    g_min: float = 9.0
    prog_noise_scale: float = 1.0
    read_noise_scale: float = 1.0
    drift_scale: float = 1.0
    decay_dict: dict = field(default_factory=lambda: dict(CMO_DECAY))
    read_dict: dict = field(default_factory=lambda: dict(CMO_READ))
    acceptance_range: float = 0.2

    def __post_init__(self) -> None:
        name = type(self).__name__
        coefficients = {float(k): v for k, v in _table(self.coeff_dict, "coeff_dict", name).items()}
        decay = _table(self.decay_dict, "decay_dict", name)
        read = {k: v[0] for k, v in _table(self.read_dict, "read_dict", name).items()}
        require(len(decay.get("mean", ())) >= 1 and len(decay.get("std", ())) >= 2, name,
                "decay_dict needs mean = [m0] and std = [s0, s1] (uS per ln second, and uS)")
        require(set(read) == {"K", "t_read"}, name, "read_dict needs exactly K and t_read")
        object.__setattr__(self, "coeff_dict", coefficients)
        object.__setattr__(self, "decay_dict", decay)
        object.__setattr__(self, "read_dict", read)
        check_fields(self, ("g_max",), ("g_min", "prog_noise_scale", "read_noise_scale", "drift_scale"))
        require(self.g_min < self.g_max, name, f"g_min={self.g_min:g} must be below g_max={self.g_max:g}")
        require(read["t_read"] > 0, name, f"read_dict t_read must be > 0 seconds, got {read['t_read']!r}")
        ranges = ", ".join(f"{r:g}" for r in sorted(coefficients))
        require(float(self.acceptance_range) in coefficients, name,
                f"acceptance_range={self.acceptance_range!r} has no programming fit; choose one of {ranges}")

    def programming_sigma(self, g_target: Tensor) -> Tensor:
        """The standard deviation (uS) of the programming noise at ``g_target``, before ``prog_noise_scale``."""
        return polynomial(self.coeff_dict[float(self.acceptance_range)], g_target)

    def apply_programming_noise_to_conductance(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        noise = standard_normal(g_target, generator).mul_(self.programming_sigma(g_target))
        return g_target + self.prog_noise_scale * noise

    def generate_drift_coefficients(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        return g_target.clone()

    def relaxation_mean_std(self, t_inference: float) -> tuple[float, float]:
        """The mean shift and the std (uS) of the relaxation ``t_inference`` > 0 seconds on, before drift_scale."""
        log_t = math.log(t_inference)
        return self.decay_dict["mean"][0] * log_t, self.decay_dict["std"][0] * log_t + self.decay_dict["std"][1]

    def apply_drift_noise_to_conductance(self, g_prog: Tensor, drift_noise_param: Tensor, t_inference: float,
                                         generator: torch.Generator) -> Tensor:
        if t_inference == 0:
            return g_prog.clone()
        shift, spread = self.relaxation_mean_std(t_inference)
        g_drift = g_prog + self.drift_scale * (shift + spread * standard_normal(g_prog, generator))
        time_factor = read_noise_time_factor(t_inference, self.read_dict["t_read"])
        log_g = torch.log10(g_drift.clamp(min=torch.finfo(g_drift.dtype).tiny))  # finite where g_drift > 0 only
        sigma_read = log_g.mul_(self.read_dict["K"] * time_factor)
        g = g_drift + self.read_noise_scale * sigma_read * standard_normal(g_prog, generator)
        return torch.where(g_drift > 0, g, self.g_min).clamp_(min=self.g_min, max=self.g_max)
