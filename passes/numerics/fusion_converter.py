"""The Fusion chip's single-device conductance converter: weights <-> one conductance per weight, in uS.

Reproduces aihwkit's ``FusionConductanceConverter``: each output row of a ``[out, in]`` weight is scaled so
that its largest absolute weight maps to ``g_max``, and each weight is programmed as one device holding its
magnitude (the weight's sign, and the idle device at its reset conductance, stay off the chip). Reading back,
each row's measured conductances, signed as the exported weights were, are fitted to those weights by
least squares with an intercept, and the weights are the conductances times the fitted slope (the
intercept is dropped, as aihwkit drops it).

Works on numpy arrays (the programming files' type), so the torch-free command line runs it.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from ..errors import ConverterError

ZERO_CLIP = 1e-10
"""Smallest row abs-max divided by (aihwkit's), so an all-zero row never divides by zero."""


class FusionConductanceConverter:
    """Maps a ``[out, in]`` weight to one conductance per weight (per-row scaling) and back (per-row fit).

    Args:
        g_max: conductance in uS that each row's largest absolute weight maps to; the Fusion chip takes
            10 to 40 (default 40, aihwkit's).
    """

    def __init__(self, g_max: float = 40):
        if not 10 <= g_max <= 40:
            raise ConverterError(f"the Fusion chip's g_max is between 10 and 40 uS, got {g_max}")
        self.g_max = g_max

    def __str__(self) -> str:
        return f"{type(self).__name__}(g_max={self.g_max:1.2f})"

    def convert_to_conductances(self, weights: np.ndarray) -> Tuple[List[np.ndarray], Dict]:
        """Return ``([G], {"original_weights": weights})``, ``G = |W| g_max / max_row |W|`` clipped to
        ``[0, g_max]``; the weights are kept for the read-back's fit."""
        abs_max = np.abs(weights).max(axis=1)
        # g_max times the reciprocal, not g_max divided: aihwkit's ``g_max / tensor`` rounds that way
        ratio = np.reciprocal(np.maximum(abs_max, np.asarray(ZERO_CLIP, abs_max.dtype))) * self.g_max
        scaled = weights * ratio[:, None]
        return [np.clip(np.abs(scaled), 0.0, self.g_max)], {"original_weights": weights}

    def convert_back_to_weights(self, conductances: List[np.ndarray], params: Dict) -> np.ndarray:
        """The weights that read-back ``conductances`` (one ``[out, in]`` array) stand for: per row, the
        conductances signed like ``params["original_weights"]`` times the slope of the least-squares line
        (with intercept) from them to those weights; 0 for a row whose signed conductances are all equal."""
        if len(conductances) != 1:
            raise ConverterError("conductances must contain exactly one element")
        if "original_weights" not in params:
            raise ConverterError("params do not contain original_weights")
        original = params["original_weights"]
        signed = conductances[0] * np.sign(original)
        return signed * row_slopes(signed, original)[:, None].astype(signed.dtype)


def row_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row, the least-squares slope of ``y`` on ``x`` with an intercept (float64); 0 where ``x`` is
    constant, as the minimum-norm solution gives."""
    x = x.astype(np.float64) - x.mean(axis=1, keepdims=True, dtype=np.float64)
    y = y.astype(np.float64) - y.mean(axis=1, keepdims=True, dtype=np.float64)
    spread = (x * x).sum(axis=1)
    safe = np.where(spread > 0, spread, 1.0)
    return np.where(spread > 0, (x * y).sum(axis=1) / safe, 0.0)
