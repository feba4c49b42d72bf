"""aihwkit's converters with other than one device pair per weight: N pairs, two pairs, custom pairs, one device.

Each reproduces the aihwkit 1.1.0 class of its name (defaults, checks and arithmetic):

* :class:`NPairConductanceConverter`: pairs of significance ``f_lst`` (lowest first); a weight fills the
  least significant pair first and spills into the next once that one is at g_max;
* :class:`DualPairConductanceConverter`: the same with exactly two pairs;
* :class:`CustomPairConductanceConverter`: each device's conductance interpolated from a table ``g_lst``
  over evenly spaced weights, pairs weighted by ``f_lst``;
* :class:`SingleDeviceConductanceConverter`: one device, ``W`` mapped affinely from [min W, max W] to
  [g_min, g_max].

Beyond aihwkit, each says how an array computes with its devices (:meth:`weight_combination`): the weight
times the array's scale ratio ``s = (g_max - g_min) / max|W|`` is ``sum_k c_k G_k + offset``, so the array
runs on its devices exactly as on a single pair's ``G+ - G-`` (which is ``c = (1, -1)``, offset 0).

Like :mod:`.converter`, the module imports no torch at load time (configurations load without it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Optional, Tuple

from ..errors import ConverterError
from .converter import ZERO_CLIP, abs_max_of

if TYPE_CHECKING:
    from torch import Tensor


def _checked_range(g_max: Optional[float], g_min: Optional[float], default_max: float,
                   default_min: float) -> Tuple[float, float]:
    """aihwkit's defaults and range checks, shared by every converter here."""
    g_max = default_max if g_max is None else g_max
    g_min = default_min if g_min is None else g_min
    if g_max < 0.0:
        raise ConverterError("g_max should be a positive value")
    if g_min < 0.0:
        raise ConverterError("g_min should be a positive value")
    if g_min >= g_max:
        raise ConverterError("g_min should be smaller than g_max")
    return float(g_max), float(g_min)


def _checked_factors(f_lst, what: str) -> List[float]:
    if not isinstance(f_lst, list):
        raise ConverterError(what)
    if not f_lst or not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in f_lst):
        raise ConverterError("f_lst must hold at least one number")
    if max(f_lst) < 0.0:
        raise ConverterError("f_lst parameter contains negative value")
    if min(f_lst) <= 0.0:  # xbar's addition: a factor of 0 or below divides by zero or flips a pair
        raise ConverterError("f_lst factors must be positive")
    return [float(f) for f in f_lst]


def _pair_names(pairs: int) -> Tuple[str, ...]:
    """Device buffer names: ``g_plus_<k>``, ``g_minus_<k>`` for pair k, lowest significance first."""
    return tuple(f"g_{side}_{k}" for k in range(pairs) for side in ("plus", "minus"))


def _signed(factors: List[float], scale: float) -> Tuple[float, ...]:
    """``(+f_0 scale, -f_0 scale, +f_1 scale, ...)``: the significance of each device of the pairs."""
    return tuple(sign * f * scale for f in factors for sign in (1.0, -1.0))


def _pair_sum(conductances: List[Tensor], factors: List[float]) -> Tensor:
    """``sum_k f_k (G+_k - G-_k)`` in uS, pairs in order."""
    if 2 * len(factors) != len(conductances):
        raise ConverterError("must have one value in f_lst for every pair of conductances")
    total = (conductances[0] - conductances[1]) * factors[0]
    for k in range(1, len(factors)):
        total = total + factors[k] * (conductances[2 * k] - conductances[2 * k + 1])
    return total


class _DevicePairs:
    """What the pair converters share: their text, and their devices ``g_plus_k`` / ``g_minus_k`` per factor."""

    f_lst: List[float]
    g_max: float
    g_min: float

    def __str__(self) -> str:
        return f"{type(self).__name__}(g_max={self.g_max:1.2f}, g_min={self.g_min:1.2f})"

    @property
    def device_names(self) -> Tuple[str, ...]:
        return _pair_names(len(self.f_lst))


class NPairConductanceConverter(_DevicePairs):
    """N device pairs per weight of significance ``f_lst`` (lowest first), aihwkit's ``NPairConductanceConverter``.

    Positive weights on each pair's G+, negative on G-, the other device at g_min; the largest
    |W| maps to ``sum(f) (g_max - g_min)`` uS, the lower pairs fill up before the next takes the rest.

    Args:
        f_lst: the pairs' significance factors, lowest first (positive).
        g_max: conductance in uS of a full device (default 25).
        g_min: conductance in uS of an empty device (default 0).
    """

    def __init__(self, f_lst: List[float], g_max: Optional[float] = None, g_min: Optional[float] = None):
        self.f_lst = _checked_factors(f_lst, "f_lst parameter must be a list of F factors")
        self.g_max, self.g_min = _checked_range(g_max, g_min, 25.0, 0.0)
        self.scale_ratio = None

    def settings_dict(self) -> dict:
        """The constructor's arguments, JSON-ready."""
        return {"f_lst": list(self.f_lst), "g_max": self.g_max, "g_min": self.g_min}

    def convert_to_conductances(self, weights: Tensor) -> Tuple[List[Tensor], Dict]:
        """Return ``([G+_0, G-_0, G+_1, ...], {"scale_ratio": s, "f_lst": f_lst})``, s in uS per weight unit."""
        weights = weights.detach()
        span = self.g_max - self.g_min
        scale_ratio = sum(f * span for f in self.f_lst) / abs_max_of(weights).clamp(min=ZERO_CLIP)
        weights_us = weights * scale_ratio
        filled = 0.0  # uS the lower pairs already carry
        conductances = []
        for f in self.f_lst:
            for magnitude in (weights_us.clamp(min=0.0), (-weights_us).clamp(min=0.0)):
                conductances.append(((magnitude - filled) / f + self.g_min).clamp(min=self.g_min, max=self.g_max))
            filled += f * span
        return conductances, {"scale_ratio": scale_ratio, "f_lst": self.f_lst}

    def convert_back_to_weights(self, conductances: List[Tensor], params: Dict) -> Tensor:
        """``sum_k f_k (G+_k - G-_k) / scale_ratio``."""
        if "f_lst" not in params:
            raise ConverterError("params does not contain f_lst")
        if len(conductances) % 2 != 0:
            raise ConverterError("unit cell must have an even number of conductances")
        if "scale_ratio" not in params:
            raise ConverterError("params does not contain scale_ratio")
        return _pair_sum([g.detach() for g in conductances], self.f_lst) / params["scale_ratio"]

    def weight_combination(self, params: Dict) -> Tuple[Tuple[float, ...], float, float]:
        """``(c, offset, s)`` with ``W s = sum_k c_k G_k + offset``, ``s = (g_max - g_min) / max|W|``."""
        total = sum(self.f_lst)
        return _signed(self.f_lst, 1.0 / total), 0.0, float(params["scale_ratio"]) / total


class DualPairConductanceConverter(NPairConductanceConverter):
    """Two device pairs per weight, aihwkit's ``DualPairConductanceConverter`` (:class:`NPairConductanceConverter`
    with ``f_lst`` of two factors)."""

    def __init__(self, f_lst: List[float], g_max: Optional[float] = None, g_min: Optional[float] = None):
        if not isinstance(f_lst, list) or len(f_lst) != 2:
            raise ConverterError("f_lst parameter does not contain two values")
        super().__init__(f_lst, g_max, g_min)


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """numpy's ``interp`` in torch (float64): piecewise linear through ``(xp, fp)``, ends held outside."""
    import torch

    index = torch.searchsorted(xp, x, right=True).clamp(1, xp.numel() - 1) - 1
    slope = (fp[index + 1] - fp[index]) / (xp[index + 1] - xp[index])
    y = slope * (x - xp[index]) + fp[index]
    return torch.where(x <= xp[0], fp[0], torch.where(x >= xp[-1], fp[-1], y))


class CustomPairConductanceConverter(_DevicePairs):
    """Device pairs programmed by table, aihwkit's ``CustomPairConductanceConverter``.

    ``g_lst[2k]`` and ``g_lst[2k + 1]`` are pair k's G+ and G- at evenly spaced weights from -max|W|
    to max|W|; a weight's conductances are interpolated between them (held at the ends). The pairs
    weigh ``f_lst``; the largest ``|sum_k f_k (G+_k - G-_k)|`` of the table stands for max|W|.

    Args:
        f_lst: one significance factor per pair.
        g_lst: 2 * len(f_lst) lists of conductances in uS, all of one length.
        g_max, g_min: the device range in uS (defaults 25 and 0; not used by the mapping, as in aihwkit).
        invertibility_test: refuse a table whose weights do not convert back (ArithmeticError, as aihwkit).
    """

    def __init__(self, f_lst: List[float], g_lst: List[List[float]], g_max: Optional[float] = None,
                 g_min: Optional[float] = None, invertibility_test: Optional[bool] = True):
        self.g_max, self.g_min = _checked_range(g_max, g_min, 25.0, 0.0)
        if not isinstance(g_lst, list):
            raise ConverterError("g_lst parameter must be a list")
        if not all(isinstance(g, list) for g in g_lst):
            raise ConverterError("g_lst must be list of lists")
        if len(g_lst) % 2 != 0:
            raise ConverterError("g_lst must have and even number of elements")
        if not isinstance(f_lst, list):
            raise ConverterError("f_lst parameter must be a list")
        if 2 * len(f_lst) != len(g_lst):
            raise ConverterError("must have one value in f_lst for every pair of values in g_lst")
        if not g_lst or len({len(g) for g in g_lst}) != 1 or len(g_lst[0]) < 2:
            raise ConverterError("g_lst lists must all have one length of at least 2")
        self.f_lst = [float(f) for f in f_lst]
        self.g_lst = [[float(g) for g in row] for row in g_lst]
        self.invertibility_test_enabled = bool(invertibility_test)
        self.scale_ratio = None
        if invertibility_test:
            self.invertibility_test()

    def invertibility_test(self) -> None:
        """Convert five weights in [-1, 1] and back; a table that does not return them is refused."""
        import torch

        weights = torch.linspace(-1, 1, 5)
        conductances, params = self.convert_to_conductances(weights)
        if not torch.allclose(weights, self.convert_back_to_weights(conductances, params), atol=0.0001):
            raise ArithmeticError("CustomPairConductanceConverter is not an invertible function")

    def settings_dict(self) -> dict:
        """The constructor's arguments, JSON-ready."""
        return {"f_lst": list(self.f_lst), "g_lst": [list(row) for row in self.g_lst], "g_max": self.g_max,
                "g_min": self.g_min, "invertibility_test": self.invertibility_test_enabled}

    def table_full_scale(self) -> float:
        """The table's largest ``|sum_k f_k (G+_k - G-_k)|`` in uS: what max|W| maps to."""
        pairs = list(zip(self.f_lst, self.g_lst[::2], self.g_lst[1::2]))
        return max(abs(sum(f * (gp[i] - gm[i]) for f, gp, gm in pairs)) for i in range(len(self.g_lst[0])))

    def convert_to_conductances(self, weights: Tensor) -> Tuple[List[Tensor], Dict]:
        """Return ``([G+_0, G-_0, ...], {"scale_ratio": s, "f_lst": f_lst})``, each interpolated from ``g_lst``."""
        import torch

        weights = weights.detach()
        full_scale = torch.tensor(self.table_full_scale(), dtype=weights.dtype)
        scale_ratio = full_scale / abs_max_of(weights).clamp(min=ZERO_CLIP)
        levels = (torch.linspace(-full_scale, full_scale, len(self.g_lst[0])) / scale_ratio).double()
        x = weights.double()
        conductances = [_interp(x, levels, torch.tensor(row, dtype=torch.float64)).to(weights.dtype)
                        for row in self.g_lst]
        return conductances, {"scale_ratio": scale_ratio, "f_lst": self.f_lst}

    def convert_back_to_weights(self, conductances: List[Tensor], params: Dict) -> Tensor:
        """``sum_k f_k (G+_k - G-_k) / scale_ratio``, ``f_lst`` taken from ``params``."""
        if "f_lst" not in params:
            raise ConverterError("params does not contain f_lst")
        if not isinstance(params["f_lst"], list):
            raise ConverterError("f_lst parameter must be a list of f factors")
        return _pair_sum([g.detach() for g in conductances], params["f_lst"]) / params["scale_ratio"]

    def weight_combination(self, params: Dict) -> Tuple[Tuple[float, ...], float, float]:
        """``(c, offset, s)`` with ``W s = sum_k c_k G_k + offset``, ``s = (g_max - g_min) / max|W|``."""
        span = self.g_max - self.g_min
        full_scale = self.table_full_scale()
        return _signed(self.f_lst, span / full_scale), 0.0, float(params["scale_ratio"]) * span / full_scale


class SingleDeviceConductanceConverter:
    """One device per weight, aihwkit's ``SingleDeviceConductanceConverter``: ``[min W, max W]`` maps
    linearly onto ``[g_min, g_max]`` (defaults 88.2 and 9 uS, a ReRAM's).

    aihwkit returns the conductance tensor itself; xbar returns a list of that one tensor, like every
    other converter, and :meth:`convert_back_to_weights` takes either. Weights that are all equal give
    no range to map (aihwkit divides by zero): refused.
    """

    def __init__(self, g_max: Optional[float] = None, g_min: Optional[float] = None):
        self.g_max, self.g_min = _checked_range(g_max, g_min, 88.199997, 9.0)
        self.scale_ratio = None

    def __str__(self) -> str:
        return f"{type(self).__name__}(g_max={self.g_max:1.2f}, g_min={self.g_min:1.2f})"

    device_names = ("g_device",)

    def settings_dict(self) -> dict:
        """The constructor's arguments, JSON-ready."""
        return {"g_max": self.g_max, "g_min": self.g_min}

    def convert_to_conductances(self, weights: Tensor) -> Tuple[List[Tensor], Dict]:
        """Return ``([G], {"scale_ratio": s, "min": min W})``, ``G = (W - min W) s + g_min``."""
        weights = weights.detach()
        w_min, w_max = weights.min(), weights.max()
        if not bool(w_max > w_min):
            raise ConverterError("SingleDeviceConductanceConverter needs weights that are not all equal "
                                 "(their range maps onto [g_min, g_max])")
        scale_ratio = (self.g_max - self.g_min) / (w_max - w_min)
        return [(weights - w_min) * scale_ratio + self.g_min], {"scale_ratio": scale_ratio, "min": w_min}

    def convert_back_to_weights(self, conductances, params: Dict) -> Tensor:
        """``min W + (G - g_min) / scale_ratio``."""
        if "scale_ratio" not in params:
            raise ConverterError("params do not contain scale_ratio")
        if "min" not in params:
            raise ConverterError("params do not contain min")
        (conductance,) = conductances if isinstance(conductances, (list, tuple)) else (conductances,)
        return params["min"] + (conductance.detach() - self.g_min) / params["scale_ratio"]

    def weight_combination(self, params: Dict) -> Tuple[Tuple[float, ...], float, float]:
        """``(c, offset, s)`` with ``W s = c G + offset``, ``s = (g_max - g_min) / max|W|``: the offset is the
        reference a chip subtracts (a column of devices at ``g_min - min W * scale_ratio``)."""
        ratio, w_min = float(params["scale_ratio"]), float(params["min"])
        w_max = w_min + (self.g_max - self.g_min) / ratio
        s = (self.g_max - self.g_min) / max(abs(w_min), abs(w_max), ZERO_CLIP)
        return (s / ratio,), (w_min - self.g_min / ratio) * s, s


MULTI_DEVICE_CONVERTERS = {cls.__name__: cls for cls in (NPairConductanceConverter, DualPairConductanceConverter,
                                                         CustomPairConductanceConverter,
                                                         SingleDeviceConductanceConverter)}
"""Class name -> converter class: the converters a configuration's ``converter.type`` names besides the pair."""
