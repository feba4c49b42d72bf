"""Program the crossbar arrays of a converted graph, let them drift, compensate.

Works in place on the :class:`~xbar.passes.numerics.crossbar.Crossbar` modules of a
GraphModule; the graph itself never changes, so the caller passes :func:`array_copy`,
which copies the arrays and shares the rest.

* :func:`program_arrays`: each array's G+ and G- (the targets; or every device of a multi-device
  converter's array, ``g_plus_0`` ... or ``g_device``, each on its own) go through the
  device model's programming noise, device by device; the programmed
  conductances and the drift parameters drawn from the targets are kept as
  buffers (``g_plus_programmed``, ``g_minus_programmed``, ``nu_plus``,
  ``nu_minus``), and so is the exact readout of the targets (``readout_exact``,
  see below); ``g_plus`` / ``g_minus`` become the programmed conductances.
* :func:`drift_arrays`: ``g_plus`` / ``g_minus`` become the conductances read
  ``t_inference`` seconds after programming, always from the programmed
  buffers (never from an earlier drift), with fresh read noise; then the
  array's drift gain is set (:func:`drift_readout`).

Compensation (aihwkit's ``GlobalDriftCompensation`` / ``PerColumnDriftCompensation``):
the array is read with one-hot inputs, each a full-scale input on one row,
through the DAC and the ADC as the simulation computes them, once in the
programmed state and once at ``t_inference``; the readout is the mean of the
absolute ADC outputs (as ``I / (g_max - g_min)``, the unit ``out_bound`` is in),
over the whole array or per output column, floored at 1e-4; the gain
``readout_programmed / readout_t`` multiplies the ADC output
(``CrossbarSettings.drift_gain`` / ``column_drift_gains``). A convolution's array is its weight viewed as
[out, in * kernel]: one row per (input channel, kernel position).

aihwkit's ``GlobalDriftCompensationWithExactReference`` keeps the global gain but takes its reference from the
ideal array: the targets (before programming noise) read with exact one-hot inputs, without DAC or ADC, i.e.
``mean |G+ - G-| / (g_max - g_min)`` of the targets, floored at 1e-4. It is computed at programming, as aihwkit
computes its baseline, so the gain also undoes the mean change programming noise made.

"""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Optional, Sequence

import torch
from torch import Tensor, fx, nn

from ...passes.errors import DeviceModelError
from ...passes.numerics.crossbar import Crossbar, _periphery_in, crossbar_modules
from ...passes.numerics.settings import CrossbarSettings
from .base import BaseNoiseModel

READOUT_FLOOR = 1e-4
"""Smallest readout (units of out_bound): an array that reads all zeros gets a finite gain."""


class DriftCompensation(str, Enum):
    """How :func:`drift_arrays` sets each array's digital gain."""

    GLOBAL = "global"
    PER_COLUMN = "per_column"
    GLOBAL_EXACT_REFERENCE = "global_exact_reference"


def array_copy(graph_module: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``graph_module`` that owns its arrays: every module is a new object (its own submodules,
    buffers, hooks, training flag and ``meta``), every tensor of a Crossbar is a clone; the graph, its generated
    code and the tensors of the digital layers are shared, read only.

    A deep copy would also copy and recompile the graph and copy every weight, for a model whose arrays
    alone change.
    """
    return _module_copy(graph_module, {})


def _module_copy(module: nn.Module, memo: dict[int, nn.Module]) -> nn.Module:
    """``module`` as :func:`array_copy` copies it; ``memo`` keeps a module registered twice one module."""
    if id(module) in memo:
        return memo[id(module)]
    clone = memo[id(module)] = object.__new__(type(module))
    clone.__dict__.update({key: value.copy() if isinstance(value, (dict, list, set)) else value
                           for key, value in module.__dict__.items()})
    for name, child in module._modules.items():
        if child is not None:
            clone._modules[name] = _module_copy(child, memo)
    if isinstance(clone, Crossbar):
        for store in (clone.__dict__, clone._buffers, clone._parameters):
            store.update({key: value.clone() for key, value in store.items() if isinstance(value, Tensor)})
    return clone


def _checked(result, like: Tensor, model: BaseNoiseModel, method: str, what: str) -> Tensor:
    """A device model's answer for ``like``: a tensor of its shape and dtype, never ``like``'s memory (a model
    may return its input unchanged, which the array then overwrites)."""
    if not isinstance(result, Tensor) or result.shape != like.shape:
        got = tuple(result.shape) if isinstance(result, Tensor) else type(result).__name__
        raise DeviceModelError(f"{type(model).__name__}.{method} returned {got} for {what} shaped "
                               f"{tuple(like.shape)}; it must return a tensor of the same shape")
    result = result.to(like.dtype)
    return result.clone() if result.untyped_storage().data_ptr() == like.untyped_storage().data_ptr() else result


def _drift_name(device: str) -> str:
    """The drift-coefficient buffer of a device buffer: ``g_plus`` -> ``nu_plus``, ``g_plus_1`` -> ``nu_plus_1``."""
    return "nu" + device.removeprefix("g")


@torch.no_grad()
def program_arrays(graph_module: fx.GraphModule, model: BaseNoiseModel, generator: torch.Generator,
                   measured: Optional[dict[str, tuple[Tensor, ...]]] = None) -> None:
    """Program every array of ``graph_module`` (an :func:`array_copy`) in place (see the module docstring).

    ``measured`` (``{array name: (G+, G-)}``, or every device in the array's ``device_names`` order: a chip's
    read-back): those are the programmed conductances, instead of the device model's programming noise; the
    drift parameters are still drawn from the targets."""
    for name, crossbar in crossbar_modules(graph_module).items():
        for index, device in enumerate(crossbar.device_names):
            target = getattr(crossbar, device)
            programmed = (_checked(model.apply_programming_noise_to_conductance(target, generator), target, model,
                                   "apply_programming_noise_to_conductance", f"{name}.{device}")
                          if measured is None else measured[name][index].to(target.dtype).reshape(target.shape))
            nu = model.generate_drift_coefficients(target, generator)
            if nu is not None:
                nu = _checked(nu, target, model, "generate_drift_coefficients", f"{name}.{device}")
            crossbar.register_buffer(f"{device}_programmed", programmed)
            crossbar.register_buffer(_drift_name(device), nu)
        crossbar.register_buffer("readout_exact", drift_readout(crossbar, crossbar.conductances(), crossbar.settings,
                                                                per_column=False, exact=True))
        for device in crossbar.device_names:  # the copy's own tensors: no aliasing
            getattr(crossbar, device).copy_(getattr(crossbar, f"{device}_programmed"))
        crossbar.sync_compiled_state()


@torch.no_grad()
def drift_arrays(graph_module: fx.GraphModule, model: BaseNoiseModel, t_inference: float,
                 generator: torch.Generator, compensation: Optional[DriftCompensation]) -> None:
    """Set every programmed array of ``graph_module`` (an :func:`array_copy`) to its state at ``t_inference``,
    in place."""
    for name, crossbar in crossbar_modules(graph_module).items():
        drifted, programmed_state = [], []
        for device in crossbar.device_names:
            programmed = getattr(crossbar, f"{device}_programmed")
            g = model.apply_drift_noise_to_conductance(programmed, getattr(crossbar, _drift_name(device)),
                                                       t_inference, generator)
            drifted.append(_checked(g, programmed, model, "apply_drift_noise_to_conductance", f"{name}.{device}"))
            programmed_state.append(programmed)
        settings = dataclasses.replace(crossbar.settings, drift_gain=1.0, column_drift_gains=())
        if compensation is not None:
            per_column = compensation == DriftCompensation.PER_COLUMN
            reference = (crossbar.readout_exact if compensation == DriftCompensation.GLOBAL_EXACT_REFERENCE else
                         drift_readout(crossbar, programmed_state, settings, per_column))
            gain = reference / drift_readout(crossbar, drifted, settings, per_column)
            settings = (dataclasses.replace(settings, column_drift_gains=tuple(gain.tolist())) if per_column
                        else dataclasses.replace(settings, drift_gain=float(gain)))
        for mine, state in zip(crossbar.conductances(), drifted):  # the copy's own tensors, as in program_arrays
            mine.copy_(state)
        crossbar.settings = settings
        crossbar.sync_compiled_state()


def adc_unit(settings: CrossbarSettings) -> float:
    """One ADC code in units of ``out_bound`` (1 without an ADC)."""
    return settings.out_bound / (settings.adc_steps / 2) if settings.adc_steps else 1.0


@torch.no_grad()
def drift_readout(crossbar: Crossbar, conductances: Sequence[Tensor], settings: CrossbarSettings,
                  per_column: bool, exact: bool = False) -> Tensor:
    """The mean absolute ADC output of the array read with one-hot inputs (global, or [out] per column).

    Each one-hot input is a full-scale input (the input range) on one row: the
    DAC turns it into one code, so the array's answer to it is the row of
    ADC-scaled conductances times that code, exactly as the matrix product of
    the simulation computes it, then rounded and clipped by the ADC. ``conductances`` are the array's devices
    (in ``crossbar.device_names`` order) in the state to read. ``exact``:
    the ideal readout, with neither the DAC's nor the ADC's rounding and clipping.
    """
    c = settings.constants
    full_scale = torch.tensor([settings.input_range or 1.0], dtype=torch.float32)
    code = float(full_scale * c["in_scale"]) if exact else float(_periphery_in(full_scale, c))
    weight = crossbar.weight_of(conductances, settings)
    z = weight.reshape(weight.shape[0], -1).t().mul_(code)  # [inputs, outputs]
    if c["adc_round"] and not exact:
        z.round_()
    if c["adc_clip"] and not exact:
        z.clamp_(-c["adc_clip"], c["adc_clip"])
    y = z.abs_().mul_(adc_unit(settings))
    readout = y.mean(dim=0) if per_column else y.mean()
    return readout.clamp_(min=READOUT_FLOOR)
