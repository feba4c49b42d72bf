"""aihwkit's weight clipping and remapping, on each array's analog weights ``W' = W / alpha``.

After every optimiser step (and at conversion, unless a step left them so) each array whose plan sets
``clip`` or ``remap`` is constrained as aihwkit's inference tile does, clip first:

* clip: ``W' <- clamp(W', -c, c)`` with ``c`` by :class:`~xbar.passes.constraint_parameters.WeightClipType`
  (no clip when ``c <= 0``); the logical weight becomes ``alpha W'``;
* remap: new scales from the (clipped) logical weight, which remapping leaves unchanged:
  LAYERWISE ``max|W| / remapped_wmax`` for every row (aihwkit's torch tile), CHANNELWISE
  ``max_j |W_ij| / remapped_wmax`` per row, a zero max keeping the old scale; with
  ``max_scale_range > 0`` each new scale is at most ``max_scale_range`` times the smallest old
  one (at least ``max_scale_ref``), as aihwkit's C++ remapper does.

The prepared graph trains the logical weight ``W`` and keeps ``alpha`` in the array's
:class:`~xbar.passes.numerics.weight_mapping.WeightScales` (1 for omega 0), which also
remembers whether the weights are still as last constrained: conversion constrains an
array's copy only when they are not (no step constrained them, or they changed since),
so a fine-tuned array is programmed exactly as aihwkit's tile holds it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, fx

from ..constraint_parameters import WeightClipParameter, WeightClipType, WeightRemapParameter, WeightRemapType
from ..plan import Role, retag, tag_of, tagged
from .converter import abs_max_of
from .weight_mapping import WeightScales, analog_weights, weight_block


def clip_bound(analog: Tensor, clip: WeightClipParameter) -> float:
    """The clip level ``c`` of the analog weights (<= 0: no clip)."""
    if clip.type == WeightClipType.FIXED_VALUE:
        return clip.fixed_value
    if clip.type == WeightClipType.LAYER_GAUSSIAN:
        bound = float(analog.std()) * clip.sigma
    elif clip.type == WeightClipType.AVERAGE_CHANNEL_MAX:
        bound = float(analog.abs().flatten(1).amax(dim=1).mean())
    else:
        return 0.0
    return min(bound, clip.fixed_value) if clip.fixed_value > 0 else bound


def clipped(analog: Tensor, clip: WeightClipParameter) -> Tensor:
    """``analog`` clipped to its bound (itself when there is none)."""
    bound = clip_bound(analog, clip)
    return analog.clamp(-bound, bound) if bound > 0 else analog


def remapped_scales(weight: Tensor, scales: Tensor, remap: WeightRemapParameter) -> Tensor:
    """The new scales of ``weight`` (logical, [rows, ...]) remapped from ``scales`` (1-D, one or per row)."""
    if remap.type == WeightRemapType.LAYERWISE_SYMMETRIC:
        new = abs_max_of(weight) / remap.remapped_wmax
        return scales if new <= 0 else new.expand_as(scales).clone()
    row_max = weight.abs().flatten(1).amax(dim=1)
    if remap.max_scale_range <= 0:
        new = row_max / remap.remapped_wmax
        return torch.where(new > 0, new, scales)
    new = torch.where(row_max > 0, row_max, scales)
    smallest = scales.min().clamp(min=0)
    if smallest > 0 and remap.max_scale_ref:
        smallest = smallest.clamp(min=remap.max_scale_ref)
    return new.clamp(max=smallest * remap.max_scale_range) if smallest > 0 else new


def constrain(weight: Tensor, scales: Tensor, clip: WeightClipParameter,
              remap: WeightRemapParameter) -> tuple[Tensor, Tensor]:
    """One array's constrained logical weight and scales (new tensors; clip, then remap)."""
    if clip.active:
        rows = scales.view(-1, *([1] * (weight.dim() - 1)))
        weight = clipped(analog_weights(weight, scales), clip) * rows
    if remap.active:
        scales = remapped_scales(weight, scales, remap)
    return weight, scales


@dataclass(frozen=True)
class ConstrainedArray:
    """One array of a prepared graph that ``clip`` or ``remap`` constrains."""

    weight: Tensor
    """The array's block of its layer's weight parameter (a view)."""
    scales: WeightScales
    clip: WeightClipParameter
    remap: WeightRemapParameter

    @torch.no_grad()
    def apply(self) -> None:
        weight, scales = constrain(self.weight, self.scales.scales, self.clip, self.remap)
        if self.clip.active:
            self.weight.copy_(weight)
        self.scales.scales.copy_(scales)
        self.scales.mark_constrained(self.weight)


def constrained_arrays(graph_module: fx.GraphModule) -> list[ConstrainedArray]:
    """The arrays of a prepared graph whose plans clip or remap, each once (a shared layer's call
    sites are one array)."""
    arrays = {}
    for mvm in tagged(graph_module.graph, Role.MVM):
        tag = tag_of(mvm)
        plan = tag.plan
        key = (plan.layer.weight, tag.tile)
        if key in arrays or not (plan.clip.active or plan.remap.active):
            continue
        scales = graph_module.get_submodule(retag(tag, Role.WEIGHT_SCALES).name)
        arrays[key] = ConstrainedArray(weight_block(graph_module, plan, tag.tile), scales, plan.clip, plan.remap)
    return list(arrays.values())


def constrain_weights(graph_module: fx.GraphModule) -> int:
    """Clip and remap every array of a prepared graph in place (after an optimiser step, as
    aihwkit's ``post_update_step``); returns how many arrays were constrained."""
    arrays = constrained_arrays(graph_module)
    for array in arrays:
        array.apply()
    return len(arrays)
