"""What to do with each crossbar layer, decided before any graph edit.

The driver resolves a :class:`LayerPlan` per matched layer; the passes stamp it
on the nodes they create (``node.meta["xbar"]`` = :class:`NodeTag`) so later
passes find a layer's nodes by tag, never by name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Optional

from torch import fx

from .converter import SinglePairConductanceConverter
from .matching import CrossbarLayer
from .parameters import InputRangeParameter, IOParameters

TAG = "xbar"


class PassError(RuntimeError):
    """A pass broke its own postcondition; the message names the pass."""


@dataclass(frozen=True)
class LayerPlan:
    """One crossbar layer and the hardware settings that apply to it.

    ``rule`` says which configuration rule chose these settings (for inspection).
    """

    layer: CrossbarLayer
    io: IOParameters
    input_range: InputRangeParameter
    converter: SinglePairConductanceConverter
    columnwise: bool = False
    rule: str = "global"

    @property
    def prefix(self) -> str:
        """Node-name prefix: the layer name with dots as underscores, made a valid
        identifier the way FX does (``0`` -> ``_0``)."""
        prefix = re.sub(r"[^0-9a-zA-Z_]", "_", self.layer.name)
        return f"_{prefix}" if prefix[0].isdigit() else prefix


@dataclass(frozen=True)
class NodeTag:
    """Marks a node as part of a crossbar layer: ``key`` is the layer's crossbar
    node name (unique per call site), ``role`` what the node does."""

    key: str
    role: str
    plan: LayerPlan


def tag_of(node: fx.Node) -> Optional[NodeTag]:
    return node.meta.get(TAG)


def tagged(graph: fx.Graph, role: str) -> Iterator[fx.Node]:
    """Nodes of ``graph`` with the given role, in graph order."""
    return (n for n in list(graph.nodes) if (t := tag_of(n)) is not None and t.role == role)


def layer_nodes(graph: fx.Graph, key: str) -> dict[str, fx.Node]:
    """Role -> node for one crossbar layer call site."""
    return {t.role: n for n in graph.nodes if (t := tag_of(n)) is not None and t.key == key}


def add_node(graph: fx.Graph, op: str, target, args, kwargs=None, *, role: str,
             plan: LayerPlan, key: Optional[str] = None) -> fx.Node:
    """Create a node named ``<prefix>_<role>`` at the current insert point and tag it.

    ``key`` defaults to the new node's own name (for the crossbar node itself).
    FX adds a suffix when the name is taken (a shared layer's second call site);
    :func:`check_names` tells such a suffix apart from a silent rename.
    """
    node = graph.create_node(op, target, tuple(args), kwargs or {}, name=f"{plan.prefix}_{role}")
    node.meta[TAG] = NodeTag(key or node.name, role, plan)
    return node


def check_names(graph: fx.Graph, pass_name: str) -> None:
    """Raise :class:`PassError` if FX renamed a layer's first inserted node.

    A layer's first call site owns the names ``<prefix>_<role>``; FX suffixes the
    names of later call sites of a shared layer, which is expected.
    """
    first_sites: dict[str, bool] = {}
    for node in graph.nodes:
        tag = tag_of(node)
        if tag is None:
            continue
        expected_key = f"{tag.plan.prefix}_mvm"
        first_sites.setdefault(tag.plan.prefix, False)
        if tag.key == expected_key:
            first_sites[tag.plan.prefix] = True
            if node.name != f"{tag.plan.prefix}_{tag.role}":
                raise PassError(f"{pass_name}: node {tag.plan.prefix}_{tag.role!s} was renamed to "
                                f"{node.name!r} (the model already has a node of that name)")
    for prefix, seen in first_sites.items():
        if not seen:
            raise PassError(f"{pass_name}: node {prefix}_mvm was renamed "
                            "(the model already has a node of that name)")


def erase_if_unused(graph: fx.Graph, node) -> None:
    """Erase a tensor read (and a transpose in front of it) that nothing uses any more."""
    if isinstance(node, fx.Node) and not node.users and node.op in ("get_attr", "call_function"):
        source = node.args[0] if node.op == "call_function" else None
        graph.erase_node(node)
        erase_if_unused(graph, source)
