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

The shipped models (one per module: :mod:`.pcm`, :mod:`.state_independent`, :mod:`.hermes`, :mod:`.reram_cmo`,
:mod:`.reram`, found by name through :mod:`.registry`) reproduce aihwkit's
inference noise models of the same names, their parameters and defaults
(aihwkit converts weights with its own conductance converter; here the arrays
are already conductances, so a model's ``g_max`` must match the arrays'
converter). Every random number comes from the ``torch.Generator`` the caller
passes, so a seed fixes every draw. This module holds the base class and the
helpers the models share.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence

import torch
from torch import Tensor

from ...passes.errors import UserError


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
    """``value`` as JSON data: numeric keys as strings of floats, tuples as lists, anything else as its repr."""
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


def require(condition: bool, model: str, message: str) -> None:
    """Refuse a model's parameters with one line that names the model."""
    if not condition:
        raise UserError(f"{model}: {message}")


def check_fields(model, fields_positive: Sequence[str], fields_non_negative: Sequence[str]) -> None:
    """Refuse a model whose ``fields_positive`` are not finite and > 0, or ``fields_non_negative`` not finite
    and >= 0."""
    name = type(model).__name__
    for f in fields_positive:
        value = getattr(model, f)
        require(math.isfinite(value) and value > 0, name, f"{f} must be a positive number, got {value!r}")
    for f in fields_non_negative:
        value = getattr(model, f)
        require(math.isfinite(value) and value >= 0, name, f"{f} must be >= 0, got {value!r}")


def read_noise_time_factor(t: float, t_read: float) -> float:
    """``sqrt(ln((t + t_read) / (2 t_read)))``: the accumulated 1/f noise at time ``t`` (t counted from t_0 = 0)."""
    return math.sqrt(math.log((t + t_read) / (2 * t_read)))


def power_law_drift(g_prog: Tensor, nu: Tensor, t: float, t_0: float) -> Tensor:
    """``g_prog (t / t_0)^-nu`` once ``t`` is past ``t_0``, else ``g_prog``."""
    return g_prog * torch.pow(t / t_0, -nu) if t > t_0 else g_prog
