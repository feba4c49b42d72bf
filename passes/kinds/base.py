"""What every layer kind defines, so that nothing else needs to know one kind from another.

A :class:`LayerKind` is the one place that knows a kind of crossbar layer:

* what it matches: module types (``modules``), ``call_function`` targets
  (``targets``) and where such a call keeps its activation, weight, bias and
  geometry (:meth:`~LayerKind.match_module`, :meth:`~LayerKind.match_call`), or
  why a call it recognises stays digital (:class:`Refused`);
* its weight as crossbar matrices (:meth:`~LayerKind.layout`), the block of it an
  array holds (:meth:`~LayerKind.block_index`) and the dim of its activation and
  output that indexes channels (``channel_dim``);
* its canonical op, the prepared graph's ``<layer>_mvm`` node
  (:meth:`~LayerKind.function`, :meth:`~LayerKind.arguments`), which the converted
  layer also runs on its conductances (:meth:`~LayerKind.mvm`);
* its export: the custom op ``xbar::crossbar_<name>`` takes the fields of its
  ``geometry_type`` after the settings; the ONNX op ``ai.xbar::<onnx_op>`` carries
  them as ``onnx_attributes`` (:meth:`~LayerKind.onnx_values`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torch import Tensor, fx, nn

from ..arrays import Tile, WeightLayout
from ..numerics.patches import PatchView


@dataclass(frozen=True)
class Operands:
    """Where a matched call keeps its operands: the activation's position in
    ``node.args``, the weight and bias (qualified tensor names), the geometry, and
    whether the graph stores the weight transposed ([in, out], matmul forms)."""

    activation_index: int
    weight: str
    bias: Optional[str]
    geometry: Any = None
    weight_transposed: bool = False


@dataclass(frozen=True)
class Refused:
    """Why a kind keeps a call it recognises digital (a short phrase, shown to users)."""

    reason: str


Match = Union[Operands, Refused, None]
"""What a kind makes of a call: its operands, why it stays digital, or None (not this kind's call)."""

COMPUTED_BIAS = Refused("its bias is computed, not a constant")


class LayerKind:
    """One kind of crossbar layer; see the module docstring. Subclasses set the class
    attributes and implement the methods that raise here."""

    name: str
    """``linear``, ``conv``, ...: the custom op is ``xbar::crossbar_<name>``."""
    onnx_op: str
    """The ONNX op type in the ``ai.xbar`` domain."""
    modules: tuple[type, ...] = ()
    targets: frozenset = frozenset()
    channel_dim: int = 1
    geometry_type: Optional[type] = None
    """A frozen dataclass of ints and int tuples, or None when the kind has no geometry."""
    onnx_attributes: Mapping[str, tuple[type, str]] = {}
    """ONNX attribute name -> (``int`` or ``tuple[int, ...]``, meaning), from the geometry."""
    columnwise: bool = True
    """Whether each output column can get its own scale ratio (``mapping.weight_scaling_columnwise``)."""

    def match_module(self, node: fx.Node, module: nn.Module) -> Match:
        """The operands of a ``call_module`` of one of ``modules``, or why it stays digital."""
        raise NotImplementedError

    def match_call(self, gm: fx.GraphModule, node: fx.Node) -> Match:
        """The operands of a ``call_function`` of one of ``targets``, or why it stays digital."""
        raise NotImplementedError

    def layout(self, weight_shape: Sequence[int], geometry) -> WeightLayout:
        """The weight (as the canonical op reads it) seen as crossbar matrices."""
        raise NotImplementedError

    def block_index(self, tile: Tile) -> tuple:
        """The index that takes a tile's block out of the weight."""
        raise NotImplementedError

    def function(self, weight_rank: int) -> Callable:
        """The canonical op: ``function(x, weight, *arguments(geometry))``."""
        raise NotImplementedError

    def arguments(self, geometry) -> tuple:
        """The canonical op's arguments after the activation and the weight."""
        return ()

    def describe(self, weight_rank: int) -> str:
        """A display name for a layer with a weight of this rank (``conv2d``)."""
        return self.name

    def onnx_values(self, geometry) -> dict:
        """The geometry as values of ``onnx_attributes``."""
        return {}

    def output_channels(self, weight_shape: Sequence[int], geometry) -> int:
        """The number of output channels of a layer with this weight."""
        layout = self.layout(weight_shape, geometry)
        return layout.groups * layout.group_outputs

    def with_groups(self, geometry, groups: int):
        """The geometry of one array that packs ``groups`` of the layer's groups."""
        return geometry if geometry is None else dataclasses.replace(geometry, groups=groups)

    def mvm(self, x: Tensor, weight: Tensor, geometry) -> Tensor:
        """The canonical op on ``x``."""
        return self.function(weight.dim())(x, weight, *self.arguments(geometry))

    def patches(self, kernel: Sequence[int], geometry) -> Optional[PatchView]:
        """How one array of this kind sees its input, patch by patch (``kernel``: the weight's
        spatial shape); None when each input value is one element of the array's input."""
        return None

    def output_like(self, x: Tensor, weight: Tensor, geometry) -> Tensor:
        """A tensor shaped like :meth:`mvm`'s result, for tracing on fake tensors."""
        return self.mvm(x, weight, geometry)

    # Kinds are stateless: every instance of a class is the same kind, so copies
    # (a deep-copied GraphModule's modules) still find their custom op.
    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __hash__(self) -> int:
        return hash(type(self))

    def __deepcopy__(self, memo) -> "LayerKind":
        return self

    def __repr__(self) -> str:
        return f"<layer kind {self.name}>"


def module_operands(node: fx.Node, module: nn.Module, geometry=None) -> Operands:
    """A layer module's own ``weight`` and ``bias`` (when it has one)."""
    bias = f"{node.target}.bias" if getattr(module, "bias", None) is not None else None
    return Operands(0, f"{node.target}.weight", bias, geometry)
