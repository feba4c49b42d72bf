"""aihwkit's noise and bound management around one converted crossbar array (its pure-torch MVM's rules).

Both work on the array's normalised input ``x_n`` (``clip(x, -r, r) / r`` with an input range, else ``x``), one
input vector at a time: along the last dimension for a linear layer (a token or sample), one patch for a
convolution (its array's input channels times the kernel taps at one output position, padding zeros included,
as aihwkit's convolutions unfold their input; a transposed convolution's are its equivalent convolution's, the
zeros between pixels included; :class:`~.patches.PatchView`):

* noise management divides each vector by its scale ``nm`` before the DAC and multiplies the ADC's output
  by it after: ``ABS_MAX`` ``nm = max|x_n|``, ``MAX`` ``nm = max x_n`` (both capped at ``nm_thres`` when it
  is > 0), ``CONSTANT`` ``nm = nm_thres`` (1 when it is 0), ``NONE`` 1. A scale <= 0 counts as 1; when every
  vector's scale is 0 the array outputs zeros (aihwkit's short cut, which MAX can take on non-zero input);
* bound management (``ITERATIVE``; aihwkit's torch tile computes ``ITERATIVE_WORST_CASE`` the same way)
  reads the array again with the input divided by 2, 4, 8, ... while any ADC output of the whole call
  (every vector of the batch) clips, i.e. is beyond ``out_bound`` after rounding; it stops after the
  first read past ``max_bm_factor`` or, with a DAC, past ``max_bm_res * dac_steps / 2``, and keeps that read.

Each read is ``q = clamp(DAC(x_n / (nm * reduction)), -1, 1)`` (the clamp acts without a DAC too),
``z = ADC(W q)``, ``y = z * nm * reduction``, in DAC and ADC codes as :mod:`.crossbar` computes; the rounds
are computed in a fixed order and selected with ``where``, so a compiled graph needs no data-dependent branch
(eagerly the loop stops at the first read that does not clip). CONSTANT without bound management never
comes here: it is one scale per array, folded into the array's constants.

A convolution's patch scale is a max-pool of its pixels; with one scale per patch its DAC codes need the
patches themselves (:meth:`~.patches.PatchView.unfold`), while bound management alone scales every patch alike
and reads the pixels.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from ..kinds.base import LayerKind
from .patches import PatchView
from .settings import DYNAMIC_MODES, NOISE_MANAGEMENT_MODES


def noise_management_scale(x_n: Tensor, nm_mode: int, nm_thres: float,
                           patches: Optional[PatchView] = None) -> Union[Tensor, float]:
    """The scale of each input vector (a tensor [..., 1]; of each patch of ``patches``, [batch, 1, *positions])
    or one scale for all (a float)."""
    if nm_mode == NOISE_MANAGEMENT_MODES["CONSTANT"]:
        return nm_thres if nm_thres > 0 else 1.0
    if nm_mode == NOISE_MANAGEMENT_MODES["NONE"]:
        return 1.0
    absolute = nm_mode == NOISE_MANAGEMENT_MODES["ABS_MAX"]
    if patches is not None:
        scale = patches.patch_max(x_n, absolute)
    else:
        scale = (x_n.abs() if absolute else x_n).amax(dim=-1, keepdim=True)
    return scale.clamp(max=nm_thres) if nm_thres > 0 else scale


def _read(mvm: Callable[[Tensor], Tensor], x_scaled: Tensor, c: dict, half_steps: float,
          out_noise: Optional[Callable[[Tensor], Tensor]]) -> Tensor:
    """One read of the array: DAC codes of ``x_scaled`` (normalised; a tensor of this read's own, coded in place:
    a convolution's is its unfolded patches), the mvm, its output noise (if any), the ADC's rounding (no clip)."""
    q = x_scaled
    if half_steps:
        q.mul_(half_steps).round_()
    q.clamp_(-(half_steps or 1.0), half_steps or 1.0)
    z = mvm(q)
    if out_noise is not None:
        z = out_noise(z)
    return z.round_() if c["adc_round"] else z


def managed_codes(kind: LayerKind, x: Tensor, weight: Tensor, settings, geometry: Any,
                  out_noise: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """The array's ADC codes under noise and bound management, rounded, clipped and already multiplied by
    ``nm * reduction``: what ``out_scale`` and the bias then turn into the layer's output. ``out_noise``
    acts on each read (a fresh draw per bound-management round, as aihwkit's)."""
    c = settings.constants
    r = settings.input_range
    x_n = torch.clamp(x, -r, r) / r if r else x
    patches = kind.patches(weight.shape[2:], geometry) if c["nm_mode"] in DYNAMIC_MODES else None
    nm = noise_management_scale(x_n, c["nm_mode"], settings.nm_thres, patches)
    if patches is None:
        def mvm(q: Tensor) -> Tensor:
            return kind.mvm(q, weight, geometry)
    else:  # one scale per patch: the DAC codes each patch on its own
        x_n = patches.unfold(x_n)

        def mvm(q: Tensor) -> Tensor:
            return patches.patch_mvm(q, weight)
    all_zero: Optional[Tensor] = None
    if isinstance(nm, Tensor):
        all_zero = (nm == 0).all()
        nm = torch.where(nm <= 0, torch.ones_like(nm), nm)
    half_steps = settings.dac_steps / 2
    bound = c["adc_clip"]
    result, done = None, None
    for round_index in range(c["bm_rounds"]):
        scale = (1.0 / nm) / float(2 ** round_index)
        z = _read(mvm, x_n * scale, c, half_steps, out_noise)
        passed = (z.abs() <= bound).all() if bound else torch.ones((), dtype=torch.bool)
        if bound:
            z.clamp_(-bound, bound)
        y = z / scale if isinstance(scale, Tensor) or scale != 1.0 else z
        result = y if result is None else torch.where(done, result, y)
        done = passed if done is None else done | passed
        if not torch.compiler.is_compiling() and bool(done):
            break
    return result if all_zero is None else result * (~all_zero)
