"""What to do with each crossbar layer, decided before any graph edit.

The driver resolves a :class:`LayerPlan` per matched layer; the passes stamp it
on the nodes they create (``node.meta["xbar"]`` = :class:`NodeTag`) so later
passes find a layer's nodes by tag (its :class:`Role`), never by name.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

import torch
from torch import fx

from .arrays import Tile
from .constraint_parameters import WeightClipParameter, WeightRemapParameter, WeightRemapType
from .errors import ConfigError, PostconditionError
from .matching import CrossbarLayer
from .numerics.converter import SinglePairConductanceConverter
from .parameters import InputRangeParameter, IOParameters, MappingParameter, WeightModifierParameter

TAG = "xbar"


@dataclass(frozen=True)
class LayerPlan:
    """One crossbar layer and the hardware settings that apply to it.

    ``rule`` says which configuration rule chose these settings (for inspection);
    ``modifier`` is the weight noise of training forward passes; ``remap`` and ``clip``
    constrain the analog weights after each optimiser step.
    """

    layer: CrossbarLayer
    io: IOParameters
    input_range: InputRangeParameter
    converter: SinglePairConductanceConverter
    mapping: MappingParameter = field(default_factory=MappingParameter)
    rule: str = "global"
    modifier: WeightModifierParameter = field(default_factory=WeightModifierParameter)
    remap: WeightRemapParameter = field(default_factory=WeightRemapParameter)
    clip: WeightClipParameter = field(default_factory=WeightClipParameter)

    def __post_init__(self):
        if self.remap.type == WeightRemapType.CHANNELWISE_SYMMETRIC and not self.layer.kind.columnwise:
            raise ConfigError(f"{self.layer.name}: a {self.layer.kind.name} layer cannot be remapped per channel; "
                              "set remap.type = LAYERWISE_SYMMETRIC for it")
        if self.columnwise and not self.layer.kind.columnwise:
            raise ConfigError(f"{self.layer.name}: a {self.layer.kind.name} layer cannot have one scale ratio per "
                              "column; set mapping.weight_scaling_columnwise = false for it")
        if self.mapping.out_scaling_columnwise and not self.layer.kind.columnwise:
            raise ConfigError(f"{self.layer.name}: a {self.layer.kind.name} layer cannot learn one output scale per "
                              "column; set mapping.out_scaling_columnwise = false for it")
        if self.modifier.active and self.modifier.per_channel and not self.layer.kind.columnwise:
            raise ConfigError(f"{self.layer.name}: a {self.layer.kind.name} layer has no per-channel weight noise; "
                              "set modifier.type = ADD_NORMAL for it")

    @property
    def columnwise(self) -> bool:
        return self.mapping.weight_scaling_columnwise

    @property
    def stores_scales(self) -> bool:
        """Whether each array keeps aihwkit's stored mapping scales (a buffer) rather than re-deriving
        them from the weights at every forward (dynamic) or having none (omega 0 without remap or clip:
        alpha = 1; a clipped array keeps them to know whether its weights are still as last clipped)."""
        mapping = self.mapping
        return not mapping.weight_scaling_dynamic and (mapping.weight_scaling_omega > 0 or self.remap.active
                                                       or self.clip.active)

    @property
    def scale_rows(self) -> bool:
        """Whether the stored scales are one per output row: columnwise, or remapped (aihwkit's
        remapping tile keeps one per row) where the kind lays rows out as output columns."""
        return self.columnwise or (self.remap.active and self.layer.kind.columnwise)

    def __deepcopy__(self, memo) -> "LayerPlan":
        """Plans are never mutated, and they point into the graph they were made for
        (``layer.node``): a copied GraphModule shares them instead of copying that graph."""
        return self

    @property
    def prefix(self) -> str:
        """Node-name prefix: the layer name with dots as underscores, made a valid
        identifier the way FX does (``0`` -> ``_0``)."""
        prefix = re.sub(r"[^0-9a-zA-Z_]", "_", self.layer.name)
        return f"_{prefix}" if prefix[0].isdigit() else prefix


class Role(Enum):
    """What a node does for its crossbar layer; the value ends the node's name."""

    MVM = "mvm"
    ADD_BIAS = "add_bias"
    INPUT_RANGE = "input_range"
    INPUT_RANGE_VALUE = "input_range_value"
    RANGE_STATISTICS = "range_statistics"
    NORMALIZE = "normalize"
    DAC = "dac"
    ADC = "adc"
    RESCALE = "rescale"
    SLICE = "slice"
    COLUMN_SUM = "sum"
    CONCAT = "concat"
    CROSSBAR = "crossbar"
    WEIGHT_NOISE = "weight_noise"
    OUTPUT_NOISE = "output_noise"
    WEIGHT_SCALES = "weight_scales"
    OUT_SCALING = "out_scaling"
    RANGE_GRADIENT = "range_gradient"
    MANAGED_READS = "managed_reads"


class Scope(Enum):
    """Which part of a tiled layer a node belongs to: one array, the input side of
    one row of arrays (an input slice), or one column (an output block)."""

    ARRAY = "tile"
    ROW = "row"
    COLUMN = "col"


@dataclass(frozen=True)
class NodeTag:
    """Marks a node as part of a crossbar layer: ``role`` says what it does;
    ``tile`` is set for the nodes of a tiled layer that belong to one of its
    arrays, or (``scope``) to that array's row or column."""

    role: Role
    plan: LayerPlan
    tile: Optional[Tile] = None
    scope: Scope = Scope.ARRAY

    @property
    def name(self) -> str:
        """The node name this tag asks for: ``<layer>[_tile<r>_<c> | _row<r> | _col<c>]_<role>``."""
        if self.tile is None:
            where = ""
        elif self.scope is Scope.ROW:
            where = f"_row{self.tile.row}"
        elif self.scope is Scope.COLUMN:
            where = f"_col{self.tile.col}"
        else:
            where = self.tile.suffix
        return f"{self.plan.prefix}{where}_{self.role.value}"


def tag_of(node: fx.Node) -> Optional[NodeTag]:
    return node.meta.get(TAG)


def tagged(graph: fx.Graph, role: Role) -> list[fx.Node]:
    """Nodes of ``graph`` with the given role, in graph order."""
    return [n for n in graph.nodes if (t := tag_of(n)) is not None and t.role == role]


def add_node(graph: fx.Graph, op: str, target, args, kwargs=None, *, tag: NodeTag) -> fx.Node:
    """Create a node named after ``tag`` at the current insert point and tag it.

    FX adds a suffix when the name is taken (a shared layer's second call site);
    :func:`check_names` tells such a suffix apart from a clash with the model.
    """
    node = graph.create_node(op, target, tuple(args), kwargs or {}, name=tag.name)
    node.meta[TAG] = tag
    return node


def retag(tag: NodeTag, role: Role, scope: Optional[Scope] = None) -> NodeTag:
    """The same layer (and tile) in another role (and scope)."""
    return NodeTag(role, tag.plan, tag.tile, tag.scope if scope is None else scope)


INPUT_SIDE = (Role.DAC, Role.NORMALIZE, Role.INPUT_RANGE)


@dataclass
class InputChain:
    """The input side feeding a crossbar node: ``nodes`` by role (DAC, normalize,
    range value, clip, those present) and ``source``, the activation before them."""

    nodes: dict[Role, fx.Node]
    source: fx.Node


def input_chain(mvm: fx.Node) -> InputChain:
    """The input side of a crossbar node, walking back from its activation."""
    nodes = {}
    node = mvm.args[0]
    while isinstance(node, fx.Node) and (tag := tag_of(node)) is not None and tag.role in INPUT_SIDE:
        nodes[tag.role] = node
        if tag.role is Role.NORMALIZE:
            nodes[Role.INPUT_RANGE_VALUE] = node.args[1]
        node = node.args[0]
    return InputChain(nodes, node)


OUTPUT_SIDE = (Role.RANGE_GRADIENT, Role.ADC, Role.RESCALE, Role.OUT_SCALING)


def output_chain(mvm: fx.Node) -> list[fx.Node]:
    """The range-gradient, ADC, rescale and learned output-scale nodes that follow a crossbar node, in order."""
    chain, node = [], mvm
    while len(node.users) == 1:
        (user,) = node.users
        tag = tag_of(user)
        if tag is None or tag.role not in OUTPUT_SIDE:
            break
        chain.append(user)
        node = user
    return chain


def check_names(graph: fx.Graph, pass_name: str) -> None:
    """Raise :class:`PostconditionError` if a tagged node lost its name to a node of the model.

    A suffixed name is fine only when the unsuffixed one belongs to a tagged node
    of the same role (a shared layer's earlier call site).
    """
    owners = {n.name: tag_of(n) for n in graph.nodes}
    for node in graph.nodes:
        tag = tag_of(node)
        if tag is None or node.name == tag.name:
            continue
        owner = owners.get(tag.name)
        if owner is None or owner.role != tag.role or owner.plan.layer.name != tag.plan.layer.name:
            raise PostconditionError(f"{pass_name}: node {tag.name!r} was renamed to {node.name!r} "
                            "(the model already has a node of that name)")


WEIGHT_VIEWS = {torch.t, operator.getitem}


def _is_weight_read(node) -> bool:
    """A get_attr, or a transpose / slice of one."""
    if not isinstance(node, fx.Node):
        return False
    if node.op == "get_attr":
        return True
    return node.op == "call_function" and node.target in WEIGHT_VIEWS and _is_weight_read(node.args[0])


def erase_if_unused(graph: fx.Graph, node) -> None:
    """Erase a weight read (and the views in front of it) that nothing uses any more."""
    if _is_weight_read(node) and not node.users:
        source = node.args[0] if node.op == "call_function" else None
        graph.erase_node(node)
        erase_if_unused(graph, source)
