"""Device models: what the conductances a crossbar is programmed to become.

A device model answers three questions about one tensor of devices (every
device on its own: G+ and G- of a pair are two devices, conductances in
microsiemens, times in seconds):

* :meth:`~BaseNoiseModel.apply_programming_noise_to_conductance`: the
  conductances a program-and-verify cycle leaves for these targets;
* :meth:`~BaseNoiseModel.generate_drift_coefficients`: the per-device drift
  parameters, drawn once at programming from the *targets*;
* :meth:`~BaseNoiseModel.apply_drift_noise_to_conductance`: the conductances
  read ``t_inference`` seconds after programming ended, from the programmed
  conductances and the drift parameters, with fresh read noise.

The shipped models reproduce aihwkit's inference noise models of the same
names, their parameters and defaults (aihwkit converts weights with its own
conductance converter; here the arrays are already conductances, so a model's
``g_max`` must match the arrays' converter). Every random number comes from the
``torch.Generator`` the caller passes, so a seed fixes every draw.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from ...passes.errors import UserError

G_REL_FLOOR = 1e-7
"""Smallest relative conductance the PCM drift fit is evaluated at (a device at 0 uS drifts like 1e-7 g_max)."""


def standard_normal(like: Tensor, generator: torch.Generator) -> Tensor:
    """N(0, 1) samples shaped like ``like``, drawn from ``generator``."""
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def polynomial(coefficients: Sequence[float], x: Tensor) -> Tensor:
    """``c0 + c1 x + c2 x^2 + ...``, with the powers of ``x`` built up term by term."""
    total = torch.full_like(x, coefficients[0])
    power = None
    for c in coefficients[1:]:
        power = x if power is None else power * x
        total += power * c
    return total


def _json_ready(value):
    if isinstance(value, dict):
        return {str(float(k)) if isinstance(k, (int, float)) else str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


class BaseNoiseModel:
    """Subclass this to describe your own devices; see the module docstring.

    Implement :meth:`apply_programming_noise_to_conductance` and
    :meth:`apply_drift_noise_to_conductance` (and
    :meth:`generate_drift_coefficients` if your devices drift). Draw every
    random number from the ``generator`` argument (e.g. with
    :func:`standard_normal`), return new tensors shaped like the input and never
    modify the inputs. Give the model a ``g_max`` attribute and
    :func:`xbar.program` checks it against the arrays' converter.
    :meth:`to_dict` describes a dataclass model (or any model's public
    attributes) as JSON-ready data.
    """

    def apply_programming_noise_to_conductance(self, g_target: Tensor, generator: torch.Generator) -> Tensor:
        """The conductances programming leaves for the targets ``g_target``."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply_programming_noise_to_conductance")

    def generate_drift_coefficients(self, g_target: Tensor, generator: torch.Generator) -> Optional[Tensor]:
        """Per-device drift parameters, drawn once at programming; None: the devices do not drift."""
        return None

    def apply_drift_noise_to_conductance(self, g_prog: Tensor, drift_noise_param: Optional[Tensor],
                                         t_inference: float, generator: torch.Generator) -> Tensor:
        """The conductances read ``t_inference`` seconds after programming ended."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply_drift_noise_to_conductance")

    def to_dict(self) -> dict:
        """``{"model": class name, "parameters": {...}}``, JSON-ready (tuples as lists, keys as strings)."""
        if dataclasses.is_dataclass(self):
            parameters = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        else:
            parameters = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        return {"model": type(self).__name__, "parameters": _json_ready(parameters)}


def _require(condition: bool, model: str, message: str) -> None:
    if not condition:
        raise UserError(f"{model}: {message}")


def _check_common(model, fields_positive: Sequence[str], fields_non_negative: Sequence[str]) -> None:
    name = type(model).__name__
    for f in fields_positive:
        value = getattr(model, f)
        _require(math.isfinite(value) and value > 0, name, f"{f} must be a positive number, got {value!r}")
    for f in fields_non_negative:
        value = getattr(model, f)
        _require(math.isfinite(value) and value >= 0, name, f"{f} must be >= 0, got {value!r}")


def _read_noise_time_factor(t: float, t_read: float) -> float:
    """``sqrt(ln((t + t_read) / (2 t_read)))``: the accumulated 1/f noise at time ``t`` (t counted from t_0 = 0)."""
    return math.sqrt(math.log((t + t_read) / (2 * t_read)))


def _power_law_drift(g_prog: Tensor, nu: Tensor, t: float, t_0: float) -> Tensor:
    """``g_prog (t / t_0)^-nu`` once ``t`` is past ``t_0``, else ``g_prog``."""
    return g_prog * torch.pow(t / t_0, -nu) if t > t_0 else g_prog


PCM_PROG_COEFF = (0.26348, 1.9650, -1.1731)
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
        _require(len(coefficients) > 0, type(self).__name__, "prog_coeff needs at least one coefficient")
        object.__setattr__(self, "prog_coeff", coefficients)
        if self.prog_coeff_g_max_reference is None:
            default = coefficients == PCM_PROG_COEFF
            object.__setattr__(self, "prog_coeff_g_max_reference", PCM_PROG_COEFF_G_MAX if default else self.g_max)
        _check_common(self, ("g_max", "t_read", "t_0", "prog_coeff_g_max_reference"),
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
        return q_s * _read_noise_time_factor(t_inference + self.t_0, self.t_read)

    def apply_drift_noise_to_conductance(self, g_prog: Tensor, drift_noise_param: Tensor, t_inference: float,
                                         generator: torch.Generator) -> Tensor:
        g_drift = _power_law_drift(g_prog, drift_noise_param, t_inference + self.t_0, self.t_0)
        noise = standard_normal(g_prog, generator).mul_(self.read_noise_sigma(g_prog, t_inference))
        return (g_drift + torch.abs(g_drift) * self.read_noise_scale * noise).clamp_(min=0.0)


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
        _require(len(self.prog_coeff) > 0, type(self).__name__, "prog_coeff needs at least one coefficient")
        _check_common(self, ("g_max", "t_read", "t_0"),
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
        g_drift = _power_law_drift(g_prog, drift_noise_param, t, self.t_0)
        sigma = torch.abs(g_drift / self.g_max) * (self.read_noise_scale * _read_noise_time_factor(t, self.t_read))
        return (g_drift + sigma * standard_normal(g_prog, generator)).clamp_(min=0.0)


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
        _require(isinstance(self.coeff_dic, dict) and len(self.coeff_dic) > 0, name,
                 "coeff_dic must map times in seconds to polynomial coefficients")
        table = {float(t): tuple(float(c) for c in coeffs) for t, coeffs in self.coeff_dic.items()}
        _require(all(t >= 0 and len(c) > 0 for t, c in table.items()), name,
                 "coeff_dic needs times >= 0, each with at least one coefficient")
        object.__setattr__(self, "coeff_dic", table)
        if self.coeff_g_max_reference is None:
            object.__setattr__(self, "coeff_g_max_reference", self.g_max)
        _check_common(self, ("g_max", "coeff_g_max_reference"), ("noise_scale",))

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
