"""A convolution's input as its array sees it, patch by patch, without unfolding it.

A convolution's array multiplies one patch of its input at a time: its input
channels times the kernel taps at one output position, padding zeros included.
For a transposed convolution the array is its equivalent convolution on the
stride-dilated input, whose inserted zeros are patch elements too. A pixel falls
in as many patches as there are (output position, tap) pairs that read it, its
multiplicity m; every other patch element is a zero. Statistics over the patch
elements are therefore weighted statistics of the pixels:

* their mean and spread: ``sum(m x)``, ``sum(m (x - mean)**2)`` and the count of zeros;
* the number of clipped elements: ``sum(m |sign of clipped x|)`` (a zero never clips).

The range gradient's sum of ``min(d, 0)`` over clipped elements needs ``d`` per
patch element, the gradient at the array's input for one output position and tap
(``W^T dy`` there). The per-pixel gradient is its sum over the patches, and ``min``
does not commute with that sum, so :meth:`PatchView.clipped_gradient_sum` builds
``d`` (:mod:`xbar.passes.numerics.patch_gradient`: a matmul the size of the
unfolded input, a few samples at a time); the clipped pixels' signs are a
strided view of the (padded) pixels, not a copy.

Noise management scales each patch by its own max (:mod:`.management`): that max
is a max-pool of the zero-padded pixels' max over channels (of a transposed
convolution, of the stride-dilated ones; :meth:`PatchView.patch_max`); the DAC
then codes each patch element with its patch's scale, which needs the patches
themselves (:meth:`PatchView.unfold`, read by :meth:`PatchView.patch_mvm`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .patch_gradient import clipped_gradient_sum, pad_spatial


@dataclass(frozen=True)
class PatchView:
    """The patches of one array of a convolution (``transposed``: of a transposed one): its
    kernel and geometry, ``groups`` the groups the array holds."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    transposed: bool = False
    output_padding: tuple[int, ...] = ()

    def output_size(self, size: int, dim: int) -> int:
        """The number of output positions along spatial ``dim`` of an input of ``size``."""
        k, s, p, d = self.kernel[dim], self.stride[dim], self.padding[dim], self.dilation[dim]
        if self.transposed:
            return (size - 1) * s - 2 * p + d * (k - 1) + self.output_padding[dim] + 1
        return (size + 2 * p - d * (k - 1) - 1) // s + 1

    def _counts(self, size: int, dim: int) -> list[int]:
        """The multiplicity of each position along ``dim``: the (output position, tap) pairs that read it."""
        k, s, p, d = self.kernel[dim], self.stride[dim], self.padding[dim], self.dilation[dim]
        out = self.output_size(size, dim)
        if self.transposed:  # pixel i feeds output i*s + t*d - p through tap t
            return [sum([0 <= i * s + t * d - p < out for t in range(k)]) for i in range(size)]
        counts = [0] * size
        for position in range(out):  # output position l reads pixel l*s + t*d - p through tap t
            for t in range(k):
                if 0 <= position * s + t * d - p < size:
                    counts[position * s + t * d - p] += 1
        return counts

    def multiplicity(self, x: Tensor) -> tuple[Tensor, int]:
        """Per pixel of ``x`` ([batch, channels, *spatial]) its multiplicity (shaped [*spatial], x's dtype),
        and the number of patch elements in all (batch x channels x output positions x taps)."""
        spatial = x.shape[2:]
        m = None
        for dim, size in enumerate(spatial):
            counts = torch.tensor(self._counts(size, dim), dtype=x.dtype, device=x.device)
            m = counts if m is None else m.unsqueeze(-1) * counts
        positions = math.prod([self.output_size(size, dim) for dim, size in enumerate(spatial)])
        return m, x.shape[0] * x.shape[1] * positions * math.prod(self.kernel)

    def moments(self, x: Tensor) -> tuple[int, Tensor, Tensor]:
        """``(count, mean, sum of squared deviations)`` of the patch elements of ``x``."""
        m, count = self.multiplicity(x)
        mean = torch.sum(x * m) / count
        zeros = count - x.shape[0] * x.shape[1] * m.sum()
        squares = torch.sum((x - mean).square_().mul_(m)) + zeros * mean.square()
        return count, mean, squares

    def clipped_count(self, signs: Tensor) -> tuple[Tensor, int]:
        """The number of clipped patch elements (``signs`` nonzero where a pixel clips) and of all patch elements."""
        m, count = self.multiplicity(signs)
        return torch.sum(torch.linalg.vector_norm(signs, ord=1, dim=(0, 1)) * m), count

    def clipped_gradient_sum(self, dy: Tensor, signs: Tensor, weight: Tensor) -> Tensor:
        """``sum(min(s d, 0))`` over patch elements, ``s`` the sign of a clipped element (``signs`` of
        its pixel), ``d`` the gradient at the array's input there, from ``dy`` (at its output) and ``weight``
        (the array's block, as its op reads it). See :mod:`xbar.passes.numerics.patch_gradient`."""
        return clipped_gradient_sum(self, dy, signs, weight)

    def _zero_padded(self, x: Tensor) -> Tensor:
        """The input the array's convolution slides its kernel over, with stride 1 for a transposed one: ``x``
        zero-padded, or for a transposed convolution ``x`` with ``stride - 1`` zeros between pixels, padded
        (cropped where negative) by ``dilation * (kernel - 1) - padding``, plus ``output_padding`` at the end."""
        if not self.transposed:
            return pad_spatial(x, self.padding, self.padding)
        spread = x.new_zeros(*x.shape[:2], *[(size - 1) * s + 1 for size, s in zip(x.shape[2:], self.stride)])
        spread[(..., *(slice(None, None, s) for s in self.stride))] = x
        before = tuple(d * (k - 1) - p for k, p, d in zip(self.kernel, self.padding, self.dilation))
        return pad_spatial(spread, before, tuple(b + extra for b, extra in zip(before, self.output_padding)))

    def patch_max(self, x: Tensor, absolute: bool) -> Tensor:
        """The max over each patch of the elements (``absolute``: of their magnitudes), padding and inserted
        zeros included, shaped [batch, 1, *output positions]: a max-pool of :meth:`_zero_padded`'s max over
        channels, one spatial dim at a time (a window's max is separable; strided views, no copy; the kernel's
        orientation does not matter to a max)."""
        m = self._zero_padded((x.abs() if absolute else x).amax(dim=1, keepdim=True))
        stride = [1] * len(self.kernel) if self.transposed else self.stride
        for dim, (k, s, d) in enumerate(zip(self.kernel, stride, self.dilation)):
            m = m.unfold(2 + dim, d * (k - 1) + 1, s)[..., ::d].amax(dim=-1)
        return m

    def unfold(self, x: Tensor) -> Tensor:
        """The patches of ``x``: [batch, channels x taps, *output positions], channel-major as the array's rows
        (the weight's, for a transposed convolution in its own tap order). A convolution's are strided views
        of the padded pixels, copied once into that layout; a transposed one's a transposed convolution of each
        channel with one one-hot kernel per tap (exact: each output sums one pixel and zeros)."""
        n = len(self.kernel)
        if self.transposed:
            taps = torch.eye(math.prod(self.kernel), dtype=x.dtype, device=x.device).reshape(1, -1, *self.kernel)
            spread = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1](
                x.reshape(-1, 1, *x.shape[2:]), taps, None, self.stride, self.padding, self.output_padding, 1,
                self.dilation)
            return spread.reshape(x.shape[0], -1, *spread.shape[2:])
        u = self._zero_padded(x)
        for dim, (k, s, d) in enumerate(zip(self.kernel, self.stride, self.dilation)):
            u = u.unfold(2 + dim, d * (k - 1) + 1, s)  # [batch, channels, *positions, *window spans]
        u = u[(..., *(slice(None, None, d) for d in self.dilation))]
        u = u.permute(0, 1, *range(2 + n, 2 + 2 * n), *range(2, 2 + n))
        return u.reshape(x.shape[0], -1, *u.shape[2 + n:])

    def patch_mvm(self, patches: Tensor, weight: Tensor) -> Tensor:
        """The array's op on :meth:`unfold`'s patches: a 1x1 convolution (per group) with the weight's rows
        flattened (a transposed convolution's [in, out / groups, *kernel] weight first made [out, in / groups,
        *kernel], group by group)."""
        n = len(self.kernel)
        if self.transposed:
            weight = weight.unflatten(0, (self.groups, -1)).transpose(1, 2).flatten(0, 1)
        flat = weight.reshape(weight.shape[0], -1, *([1] * n))
        return (F.conv1d, F.conv2d, F.conv3d)[n - 1](patches, flat, groups=self.groups)
