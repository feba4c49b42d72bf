"""The range gradient's clipped-element sum over a convolution's patches: ``sum(min(s d, 0))``.

``d`` is the gradient at one patch element of the array's input (one output
position and one kernel tap): ``W[:, c, t] . dy[n, :, l]`` over the channel's
group, for the output position l that reads the pixel through tap t; ``s`` is the
sign of the pixel where it clips (0 elsewhere). ``d`` is not a function of the
per-pixel gradient (its sum over the pixel's patches: ``min`` does not commute with
that sum), so it is built for every patch element, one matmul the size of the
unfolded input (the work of the convolution's input gradient), and the signs are
a strided view of the padded pixels, not a copy. Gathering the clipped pixels'
elements instead does not pay: each still needs its group's O/G outputs, and the
decay keeps about ``1 - input_min_percentage`` of the elements clipped.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from .patches import PatchView

def clipped_gradient_sum(view: PatchView, dy: Tensor, signs: Tensor, weight: Tensor) -> Tensor:
    """``sum(min(s d, 0))`` over the patch elements of ``view``; see the module docstring."""
    if view.transposed:
        return _dense_transposed(view, dy, signs, weight)
    return _dense(view, dy, signs, weight)


def _dense(view: PatchView, dy: Tensor, signs: Tensor, weight: Tensor) -> Tensor:
    """The sum with ``d`` built for every patch element of a convolution: one matmul per group,
    [C/G x taps, O/G] @ [O/G, batch x positions], laid out as the signs' windows."""
    n, channels, taps, groups = signs.shape[0], signs.shape[1], math.prod(view.kernel), view.groups
    out, dims = dy.shape[2:], len(view.kernel)
    w = weight.reshape(groups, -1, channels // groups * taps).transpose(1, 2)
    columns = dy.reshape(n, groups, -1, math.prod(out)).permute(1, 2, 0, 3).reshape(groups, -1, n * math.prod(out))
    d = torch.bmm(w, columns).view(channels, *view.kernel, n, *out)
    windows = _windows(_pad(signs, view.padding, view.padding), out, view.kernel, view.stride, view.dilation)
    windows = windows.permute(1, *range(2 + dims, 2 + 2 * dims), 0, *range(2, 2 + dims))  # [C, *kernel, N, *out]
    return d.mul_(windows).clamp_(max=0.0).sum()


def _dense_transposed(view: PatchView, dy: Tensor, signs: Tensor, weight: Tensor) -> Tensor:
    """As :func:`_dense` for a transposed convolution: pixel i's element at tap t is read by output
    ``i*s + t*d - p``; taps whose output falls outside have no element (a zero ``dy`` there)."""
    n, channels, taps, groups = signs.shape[0], signs.shape[1], math.prod(view.kernel), view.groups
    spatial = signs.shape[2:]
    after = tuple([max(0, p - op) for p, op in zip(view.padding, view.output_padding)])
    windows = _windows(_pad(dy, view.padding, after), spatial, view.kernel, view.stride, view.dilation)
    outputs = windows.reshape(n, groups, dy.shape[1] // groups, math.prod(spatial), taps)
    w = weight.reshape(groups, channels // groups, -1, taps)
    d = torch.einsum("gcok,ngoik->ngcik", w, outputs)
    return d.reshape(n, channels, *spatial, taps).mul_(signs.unsqueeze(-1)).clamp_(max=0.0).sum()


def _pad(x: Tensor, before: tuple[int, ...], after: tuple[int, ...]) -> Tensor:
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
