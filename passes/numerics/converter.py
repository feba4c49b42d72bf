"""The single-pair conductance converter: weights <-> (G+, G-) in microsiemens.

Reproduces aihwkit's ``SinglePairConductanceConverter``: one device pair per
cross-point, positive weights on G+, negative on G-, the other device at g_min,
and the largest absolute weight mapped to ``g_max - g_min`` above g_min.

Pure tensor arithmetic on the tensors it is given (detached, so no gradient is
recorded): the module imports no torch, and a configuration holding a converter
loads in the command line's torch-free paths (``xbar inspect`` of an ONNX file).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..errors import ConverterError

if TYPE_CHECKING:
    from torch import Tensor

ZERO_CLIP = 1e-7
"""Smallest abs-max weight divided by, so an all-zero weight never divides by zero."""


def abs_max_of(tensor: Tensor, dim: Optional[int] = None) -> Tensor:
    """``tensor.abs().amax(dim)`` without the ``abs()`` copy: from the smallest and the largest element
    (NaN propagates as in ``abs().max()``)."""
    low, high = tensor.aminmax() if dim is None else tensor.aminmax(dim=dim)
    return high.maximum(-low)


class SinglePairConductanceConverter:
    """Maps a weight tensor to a pair of conductance tensors and back.

    Args:
        g_max: conductance in uS that the largest absolute weight maps to (default 25).
        g_min: conductance in uS of the logical zero (default 0).
    """

    def __init__(self, g_max: Optional[float] = None, g_min: Optional[float] = None):
        self.g_max = 25.0 if g_max is None else g_max
        self.g_min = 0.0 if g_min is None else g_min
        self.scale_ratio = None
        if self.g_max < 0.0:
            raise ConverterError("g_max should be a positive value")
        if self.g_min < 0.0:
            raise ConverterError("g_min should be a positive value")
        if self.g_min > self.g_max:
            raise ConverterError("g_min should be smaller than g_max")

    def __str__(self) -> str:
        return f"{type(self).__name__}(g_max={self.g_max:1.2f}, g_min={self.g_min:1.2f})"

    def convert_to_conductances(self, weights: Tensor, columnwise: bool = False) -> Tuple[List[Tensor], Dict]:
        """Return ``([G+, G-], {"scale_ratio": s})`` with ``s = (g_max - g_min) / max|W|``.

        ``columnwise=True`` (an xbar extension, off by default) takes the abs max per
        output row of ``weights`` (dim 0), giving one scale ratio per output column
        of the array, shaped to broadcast against ``weights``.
        """
        weights = weights.detach()
        if columnwise:
            abs_max = abs_max_of(weights.flatten(1), dim=1).view(-1, *([1] * (weights.dim() - 1)))
        else:
            abs_max = abs_max_of(weights)
        scale_ratio = (self.g_max - self.g_min) / abs_max.clamp(min=ZERO_CLIP)
        scaled = weights * scale_ratio  # the one temporary: a large layer's conversion holds three of its size
        g_plus = scaled.clamp(min=0.0, max=self.g_max).add_(self.g_min)
        g_minus = scaled.neg_().clamp_(min=0.0, max=self.g_max).add_(self.g_min)
        return [g_plus, g_minus], {"scale_ratio": scale_ratio}

    def convert_back_to_weights(self, conductances: List[Tensor], params: Dict) -> Tensor:
        """Recover the weights: ``((G+ - g_min) - (G- - g_min)) / scale_ratio``."""
        if len(conductances) != 2:
            raise ConverterError("conductances must contain exactly two elements")
        if "scale_ratio" not in params:
            raise ConverterError("params do not contain scale_ratio")
        g_plus, g_minus = (g.detach() for g in conductances)
        return ((g_plus - self.g_min) - (g_minus - self.g_min)) / params["scale_ratio"]
