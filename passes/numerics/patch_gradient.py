"""The range gradient's clipped-element sum over a convolution's patches: ``sum(min(s d, 0))``.

``d`` is the gradient at one patch element of the array's input (one output
position and one kernel tap): ``W[:, c, t] . dy[n, :, l]`` over the channel's
group, for the output position l that reads the pixel through tap t; ``s`` is the
sign of the pixel where it clips (0 elsewhere). ``d`` is not a function of the
per-pixel gradient (its sum over the pixel's patches: ``min`` does not commute with
that sum), so it is built for every patch element: one matmul per group, the size
of the unfolded input and the work of the convolution's input gradient.

Eagerly it is built a few samples at a time (:data:`CHUNK_ELEMENTS`), so that
the passes over it stay in cache. The signs enter as a strided view of the padded pixels (the unfolded signs, not
copied). Taking only the clipped pixels' elements (few: the decay keeps about
``1 - input_min_percentage`` of them clipped) was measured no faster on CPU: the
index arithmetic costs as much as the two passes over ``d`` it saves.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .patches import PatchView


CHUNK_ELEMENTS = 1 << 18
"""Eagerly, ``d`` is built for as many samples at a time as fit this many elements (1 MiB of float32):
the passes over it then stay in cache."""


def clipped_gradient_sum(view: PatchView, dy: Tensor, signs: Tensor, weight: Tensor) -> Tensor:
    """``sum(min(s d, 0))`` over the patch elements of ``view``; see the module docstring."""
    if view.transposed:
        d = _transposed_gradients(view, dy, signs, weight)  # [N, C, pixels, taps]
        return d.mul_(signs.flatten(2).unsqueeze(-1)).clamp_(max=0.0).sum()
    if torch.compiler.is_compiling():  # one chunk: a loop over a dynamic batch would not trace
        return _sum_over_windows(view, _gradients(view, dy, signs.shape[1], weight), signs, dy.shape[2:])
    if not signs.any():  # nothing clipped (an input layer whose range spans its data): no term
        return signs.new_zeros(())
    per_sample = signs.shape[1] * math.prod(view.kernel) * math.prod(dy.shape[2:])
    chunk = max(1, CHUNK_ELEMENTS // per_sample)
    return sum(_sum_over_windows(view, _gradients(view, dy_part, signs.shape[1], weight), signs_part, dy.shape[2:])
               for dy_part, signs_part in zip(dy.split(chunk), signs.split(chunk)))


def _gradients(view: PatchView, dy: Tensor, channels: int, weight: Tensor) -> Tensor:
    """``d`` of every patch element of a convolution, [C, taps, N, positions]: per group
    [C/G x taps, O/G] @ [O/G, N x positions]."""
    n, groups, positions = dy.shape[0], view.groups, math.prod(dy.shape[2:])
    w = weight.reshape(groups, -1, channels // groups * math.prod(view.kernel)).transpose(1, 2)
    columns = dy.reshape(n, groups, -1, positions).permute(1, 2, 0, 3).reshape(groups, -1, n * positions)
    return torch.bmm(w, columns).view(channels, -1, n, positions)


def _sum_over_windows(view: PatchView, d: Tensor, signs: Tensor, out: tuple[int, ...]) -> Tensor:
    """The sum over all elements of ``d`` times the signs' windows (zero where no pixel clips)."""
    dims = len(out)
    windows = _windows(pad_spatial(signs, view.padding, view.padding), out, view.kernel, view.stride, view.dilation)
    windows = windows.permute(1, *range(2 + dims, 2 + 2 * dims), 0, *range(2, 2 + dims))  # [C, *kernel, N, *out]
    return d.view(windows.shape).mul_(windows).clamp_(max=0.0).sum()


def _transposed_gradients(view: PatchView, dy: Tensor, signs: Tensor, weight: Tensor) -> Tensor:
    """``d`` of every element of a transposed convolution's patches that holds a pixel, [N, C, pixels, taps]:
    pixel i's element at tap t is read by output ``i*s + t*d - p``; a tap whose output falls outside
    reads the zero padding of ``dy`` (that element is a zero of the stride-dilated input: no pixel)."""
    n, channels, taps, groups = signs.shape[0], signs.shape[1], math.prod(view.kernel), view.groups
    spatial = signs.shape[2:]
    after = tuple([max(0, p - op) for p, op in zip(view.padding, view.output_padding)])
    windows = _windows(pad_spatial(dy, view.padding, after), spatial, view.kernel, view.stride, view.dilation)
    outputs = windows.reshape(n, groups, dy.shape[1] // groups, math.prod(spatial), taps)
    w = weight.reshape(groups, channels // groups, -1, taps)
    return torch.einsum("gcok,ngoik->ngcik", w, outputs).reshape(n, channels, math.prod(spatial), taps)


def pad_spatial(x: Tensor, before: tuple[int, ...], after: tuple[int, ...]) -> Tensor:
    """``x`` zero-padded on its spatial dims (dim 2 on)."""
    pads = [p for b, a in zip(reversed(before), reversed(after)) for p in (b, a)]
    return F.pad(x, pads) if any(pads) else x


def _windows(x: Tensor, positions, kernel, stride, dilation) -> Tensor:
    """The view [batch, channels, *positions, *kernel] of ``x`` with element
    ``x[..., l * stride + t * dilation]`` at (l, t) per spatial dim: the unfolded tensor, not copied."""
    x = x.contiguous()
    spatial_strides = x.stride()[2:]
    strides = (*x.stride()[:2], *[s * st for s, st in zip(spatial_strides, stride)],
               *[s * d for s, d in zip(spatial_strides, dilation)])
    return x.as_strided((*x.shape[:2], *positions, *kernel), strides)
