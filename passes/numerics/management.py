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
(eagerly the loop stops at the first read that does not clip). In the converted array CONSTANT without
bound management never comes here: it is one scale per array, folded into the array's constants.

A convolution's patch scale is a max-pool of its pixels; with one scale per patch its DAC codes need the
patches themselves (:meth:`~.patches.PatchView.unfold`), while bound management alone scales every patch alike
and reads the pixels.

:func:`managed_reads` is the rule, around a read function: the converted array's read (:func:`managed_codes`)
works in DAC and ADC codes, in place; the prepared graph's (:mod:`.managed_training`) is differentiable, as
aihwkit's torch tile is in training. With a gradient to compute, a convolution's scales are taken from its
unfolded patches, so the gradient of each patch's max reaches one element, the first of its maxima.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from ..kinds.base import LayerKind
from .patches import PatchView
from .settings import DYNAMIC_MODES, NOISE_MANAGEMENT_MODES


def noise_management_scale(x_n: Tensor, nm_mode: int, nm_thres: float, patches: Optional[PatchView] = None,
                           dim: int = -1) -> Union[Tensor, float]:
    """The scale of each input vector along ``dim`` (a tensor with ``dim`` of size 1; of each patch of
    ``patches``, [batch, 1, *positions]) or one scale for all (a float). With a gradient to compute, the max of
    a vector passes it to its first maximal element, as aihwkit's ``max`` does (the pooled patch max of a
    no-gradient read has the same value)."""
    if nm_mode == NOISE_MANAGEMENT_MODES["CONSTANT"]:
        return nm_thres if nm_thres > 0 else 1.0
    if nm_mode == NOISE_MANAGEMENT_MODES["NONE"]:
        return 1.0
    absolute = nm_mode == NOISE_MANAGEMENT_MODES["ABS_MAX"]
    if patches is not None:
        scale = patches.patch_max(x_n, absolute)
    else:
        v = x_n.abs() if absolute else x_n
        scale = v.max(dim=dim, keepdim=True).values if v.requires_grad else v.amax(dim=dim, keepdim=True)
    return scale.clamp(max=nm_thres) if nm_thres > 0 else scale


Op = Callable[[Tensor, Tensor], Tensor]
"""An array's op on its (coded) input and a weight: the layer's own on pixels, or :meth:`~.patches.PatchView.patch_mvm`
on unfolded patches."""
Read = Callable[[Tensor, Op], tuple[Tensor, Tensor]]
"""One read of the array: ``read(x_scaled, op)`` codes ``x_scaled`` (the normalised input already divided by
``nm * reduction``), multiplies it with ``op`` and returns the ADC's clipped output and whether nothing clipped
(a bool tensor)."""


def managed_reads(x_n: Tensor, nm_mode: int, nm_thres: float, bm_rounds: int, patches: Optional[PatchView],
                  pixel_op: Op, read: Read, on_patches: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """The management rule of the module docstring around ``read``: the scales of ``x_n`` (one per vector, or
    per patch of ``patches`` when the mode is ABS_MAX / MAX: those reads take the unfolded patches and
    ``patches.patch_mvm``; else the pixels and ``pixel_op``), the bound-management rounds, the read kept and
    the all-zero short cut; each read's output comes back multiplied by ``nm * reduction``. The converted
    array (:func:`managed_codes`) and the prepared graph's training reads (:mod:`.managed_training`) differ
    only in ``read``; the scales are not detached, so autograd differentiates through them as through
    aihwkit's torch tile. ``on_patches`` (a convolution's) unfolds the input in every mode and is applied to
    the patches before anything reads them (a training hook on each patch element's gradient)."""
    dynamic = nm_mode in DYNAMIC_MODES
    op = pixel_op
    if patches is not None and (on_patches is not None or dynamic and x_n.requires_grad):
        # the gradient of each patch's max reaches its first element; on_patches sees every element's gradient
        x_n, op = patches.unfold(x_n), patches.patch_mvm
        if on_patches is not None:
            x_n = on_patches(x_n)
        nm = noise_management_scale(x_n, nm_mode, nm_thres, dim=1)
    else:
        nm = noise_management_scale(x_n, nm_mode, nm_thres, patches if dynamic else None)
        if dynamic and patches is not None:  # one scale per patch: the DAC codes each patch on its own
            x_n, op = patches.unfold(x_n), patches.patch_mvm
    all_zero: Optional[Tensor] = None
    if isinstance(nm, Tensor):
        all_zero = (nm == 0).all()
        nm = torch.where(nm <= 0, torch.ones_like(nm), nm)
    result, done = None, None
    for round_index in range(bm_rounds):
        scale = (1.0 / nm) / float(2 ** round_index)
        z, passed = read(x_n * scale, op)
        y = z / scale if isinstance(scale, Tensor) or scale != 1.0 else z
        result = y if result is None else torch.where(done, result, y)
        done = passed if done is None else done | passed
        if not torch.compiler.is_compiling() and bool(done):
            break
    return result if all_zero is None else result * (~all_zero)


def managed_codes(kind: LayerKind, x: Tensor, weight: Tensor, settings, geometry: Any,
                  out_noise: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
    """The array's ADC codes under noise and bound management, rounded, clipped and already multiplied by
    ``nm * reduction``: what ``out_scale`` and the bias then turn into the layer's output. ``out_noise``
    acts on each read (a fresh draw per bound-management round, as aihwkit's)."""
    c = settings.constants
    r = settings.input_range
    x_n = torch.clamp(x, -r, r) / r if r else x
    half_steps = settings.dac_steps / 2
    bound = c["adc_clip"]

    def read(x_scaled: Tensor, op: Op) -> tuple[Tensor, Tensor]:
        """DAC codes of ``x_scaled`` (a tensor of this read's own, coded in place), the mvm, its output noise
        (if any), the ADC's rounding and clip."""
        q = x_scaled
        if half_steps:
            q.mul_(half_steps).round_()
        q.clamp_(-(half_steps or 1.0), half_steps or 1.0)
        z = op(q, weight)
        if out_noise is not None:
            z = out_noise(z)
        if c["adc_round"]:
            z = z.round_()
        if not bound:
            return z, torch.ones((), dtype=torch.bool)
        passed = (z.abs() <= bound).all()
        return z.clamp_(-bound, bound), passed

    return managed_reads(x_n, c["nm_mode"], settings.nm_thres, c["bm_rounds"], kind.patches(weight.shape[2:], geometry),
                         lambda q, w: kind.mvm(q, w, geometry), read)


def management_changes_reads(io, input_range: bool) -> bool:
    """Whether an array's noise or bound management (``io``, its :class:`~xbar.passes.parameters.IOParameters`)
    changes what it computes, with (``input_range``) or without an input range: any per-vector scale or
    bound management does; CONSTANT does unless its scale is 1 under an input range (the normalised input is
    inside [-1, 1] already)."""
    if not io.managed or io.managed_per_vector:
        return io.managed
    return not ((io.nm_thres or 1.0) == 1.0 and input_range)
