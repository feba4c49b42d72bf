"""Turn each converted crossbar array into one call of an ``xbar::`` custom op, for export.

Each layer kind has one ``torch.library`` custom op, ``xbar::crossbar_<kind>``:
``torch.export`` keeps each call as one node, which an exporter can translate into
one node of its own. Its schema is generated, not written: the activation, the
:data:`TENSORS`, the :meth:`CrossbarSettings.hardware_fields` in field order (the
per-column tuples as ``float[]``), then the fields of the kind's ``geometry_type``
(int tuples as ``int[]``). It runs
:func:`~xbar.passes.numerics.crossbar.run_crossbar` (one source of numerics); its fake
(shape) function is the kind's :meth:`~xbar.passes.kinds.base.LayerKind.output_like`.

Rules of :class:`CrossbarToCustomOpsPass`, for each ``call_module`` of a
:class:`~xbar.passes.numerics.crossbar.Crossbar` module:

* the node becomes a ``call_function`` of its kind's custom op in place, keeping
  its name (``fc1_crossbar``), position and users;
* G+, G- and the bias are read by ``get_attr`` of the module's buffers
  (``fc1_crossbar.g_plus``, ...), so they stay separate tensors named after the
  array; a module without bias first gets a zero ``bias`` buffer (an ONNX
  function body cannot test for an absent input), so run the pass on a copy;
* a :class:`~xbar.passes.numerics.crossbar.MultiDeviceCrossbar` first gets ``g_plus``, its devices'
  ``sum_k c_k G_k + offset``, and ``g_minus``, zeros (the exporter builds that sum from the devices);
* the modules stay (they own the buffers); a graph without Crossbar calls is
  left untouched.
"""

from __future__ import annotations

import dataclasses
import typing
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor, fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import PostconditionError
from ..kinds import KINDS
from ..kinds.base import LayerKind
from ..numerics.crossbar import Crossbar, MultiDeviceCrossbar, adc_weight, device_sum, run_crossbar
from ..numerics.ir_drop import array_operands
from ..numerics.settings import CrossbarSettings

NAMESPACE = "xbar"
TENSORS = ("g_plus", "g_minus", "bias")
"""The Crossbar buffers each custom op reads, in argument order after the activation."""
SCHEMA_TYPES = {str: "str", float: "float", int: "int", tuple[int, ...]: "int[]", tuple[float, ...]: "float[]"}
"""Python field type -> torch schema type of a custom op argument."""


def geometry_fields(kind: LayerKind) -> dict[str, type]:
    """Name -> type of the kind's geometry fields, in order (none for a kind without geometry)."""
    if kind.geometry_type is None:
        return {}
    types = typing.get_type_hints(kind.geometry_type)
    return {f.name: types[f.name] for f in dataclasses.fields(kind.geometry_type)}


def op_parameters(kind: LayerKind) -> dict[str, type]:
    """Name -> type of the custom op's arguments after the activation and :data:`TENSORS`."""
    return CrossbarSettings.hardware_fields() | geometry_fields(kind)


def op_arguments(settings: CrossbarSettings, geometry: Any) -> tuple:
    """A custom op's arguments after the tensors: the settings' fields, then the geometry (tuples as lists)."""
    values = tuple(settings.hardware().values())
    if geometry is not None:
        values += dataclasses.astuple(geometry)
    return tuple(list(v) if isinstance(v, tuple) else v for v in values)


def _tuples(values) -> tuple:
    """The arguments with the lists a custom op receives turned back into tuples."""
    return tuple(tuple(v) if isinstance(v, list) else v for v in values)


@lru_cache(maxsize=None)
def _settings(*scalars) -> CrossbarSettings:
    """One settings object (and its cached constants) per distinct argument tuple."""
    return CrossbarSettings(*scalars)


def decode_arguments(kind: LayerKind, values: tuple) -> tuple[CrossbarSettings, Any]:
    """The settings and geometry that :func:`op_arguments` encoded."""
    count = len(CrossbarSettings.hardware_fields())
    geometry = None
    if kind.geometry_type is not None:
        geometry = kind.geometry_type(*_tuples(values[count:]))
    return _settings(*_tuples(values[:count])), geometry


def _define(kind: LayerKind) -> torch._ops.OpOverload:
    """Define ``xbar::crossbar_<kind>`` with its kernel and fake function."""
    name = f"{NAMESPACE}::crossbar_{kind.name}"
    arguments = ", ".join(f"{SCHEMA_TYPES[t]} {n}" for n, t in op_parameters(kind).items())
    torch.library.define(name, f"(Tensor x, {', '.join(f'Tensor {t}' for t in TENSORS)}, {arguments}) -> Tensor")

    @torch.library.impl(name, "CompositeExplicitAutograd")
    def kernel(x: Tensor, g_plus: Tensor, g_minus: Tensor, bias: Tensor, *values) -> Tensor:
        settings, geometry = decode_arguments(kind, values)
        if settings.ir_drop_active:
            weight, offset = array_operands(g_plus, g_minus, settings)
            return run_crossbar(kind, x, weight, bias, settings, geometry, ir_drop_offset=offset)
        return run_crossbar(kind, x, adc_weight(g_plus, g_minus, settings), bias, settings, geometry)

    @torch.library.register_fake(name)
    def fake(x: Tensor, g_plus: Tensor, g_minus: Tensor, bias: Tensor, *values) -> Tensor:
        return kind.output_like(x, g_plus, decode_arguments(kind, values)[1])

    return getattr(getattr(torch.ops, NAMESPACE), f"crossbar_{kind.name}").default


CUSTOM_OPS: dict[LayerKind, torch._ops.OpOverload] = {kind: _define(kind) for kind in KINDS}
"""Layer kind -> its custom op."""


def _crossbar_calls(graph_module: fx.GraphModule) -> list[fx.Node]:
    return [n for n in graph_module.graph.nodes
            if n.op == "call_module" and isinstance(graph_module.get_submodule(n.target), Crossbar)]


@torch.no_grad()
def _give_pair(module: MultiDeviceCrossbar) -> None:
    """``g_plus`` = the devices' weighted sum in uS, ``g_minus`` = zeros: the pair whose ``G+ - G-`` is it."""
    if "g_plus" in module._buffers:
        return
    total = device_sum(module.conductances(), module.significances, module.offset)
    module.register_buffer("g_plus", total)
    module.register_buffer("g_minus", torch.zeros_like(total))


class CrossbarToCustomOpsPass(PassBase):
    """Replace Crossbar module calls by ``xbar::`` custom-op calls; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        sites = _crossbar_calls(graph_module)
        for site in sites:
            module = graph_module.get_submodule(site.target)
            if isinstance(module, MultiDeviceCrossbar):
                _give_pair(module)
            if module.bias is None:
                channels = module.kind.output_channels(module.g_plus.shape, module.geometry)
                module.bias = torch.zeros(channels, dtype=module.g_plus.dtype)
            with graph.inserting_before(site):
                tensors = [graph.get_attr(f"{site.target}.{name}") for name in TENSORS]
            args = (site.args[0], *tensors, *op_arguments(module.settings, module.geometry))
            # in place: keeps the name and the users
            site.op, site.target, site.args = "call_function", CUSTOM_OPS[module.kind], args
        return PassResult(graph_module, bool(sites))

    def ensures(self, graph_module: fx.GraphModule) -> None:
        left = [n.name for n in _crossbar_calls(graph_module)]
        if left:
            raise PostconditionError(f"{type(self).__name__}: Crossbar calls left after the rewrite: {left}")
