"""Turn each converted crossbar array into one call of an ``xbar::`` custom op, for export.

``xbar::crossbar_linear`` and ``xbar::crossbar_conv`` are ``torch.library``
custom ops: ``torch.export`` keeps each call as one node, which an exporter can
translate into one node of its own. They run :func:`xbar.passes.crossbar.crossbar_linear`
/ :func:`~xbar.passes.crossbar.crossbar_conv` (one source of numerics); their scalar
arguments are the fields of :class:`~xbar.passes.crossbar.CrossbarSettings` in field
order, then a convolution's stride, padding, dilation and groups.

Rules of :class:`CrossbarToCustomOpsPass`, for each ``call_module`` of a
:class:`~xbar.passes.crossbar.Crossbar` module:

* the node becomes a ``call_function`` of the custom op in place, keeping its
  name (``fc1_crossbar``), position and users;
* G+, G- and the bias are read by ``get_attr`` of the module's buffers
  (``fc1_crossbar.g_plus``, ...), so they stay separate tensors named after the
  array; a module without bias first gets a zero ``bias`` buffer (an ONNX
  function body cannot test for an absent input), so run the pass on a copy;
* the modules stay (they own the buffers); a graph without Crossbar calls is
  left untouched.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from .crossbar import Crossbar, CrossbarSettings, adc_weight, crossbar_conv, crossbar_linear
from .infra import PostconditionError

CONV_FUNCTIONS = (F.conv1d, F.conv2d, F.conv3d)
TENSORS = ("g_plus", "g_minus", "bias")
"""The Crossbar buffers each custom op reads, in argument order after the activation."""


@lru_cache(maxsize=None)
def _settings(*fields) -> CrossbarSettings:
    """One settings object (and its cached constants) per distinct argument tuple."""
    return CrossbarSettings(*fields)


def _linear(x: Tensor, g_plus: Tensor, g_minus: Tensor, bias: Tensor, layer: str, input_range: float,
            scale_ratio: float, g_min: float, g_max: float, dac_steps: float, adc_steps: float,
            out_bound: float, tile_row: int, tile_col: int) -> Tensor:
    settings = _settings(layer, input_range, scale_ratio, g_min, g_max, dac_steps, adc_steps, out_bound,
                         tile_row, tile_col)
    return crossbar_linear(x, adc_weight(g_plus, g_minus, settings), bias, settings)


def _conv(x: Tensor, g_plus: Tensor, g_minus: Tensor, bias: Tensor, layer: str, input_range: float,
          scale_ratio: float, g_min: float, g_max: float, dac_steps: float, adc_steps: float,
          out_bound: float, tile_row: int, tile_col: int, stride: list[int], padding: list[int],
          dilation: list[int], groups: int) -> Tensor:
    settings = _settings(layer, input_range, scale_ratio, g_min, g_max, dac_steps, adc_steps, out_bound,
                         tile_row, tile_col)
    return crossbar_conv(x, adc_weight(g_plus, g_minus, settings), bias, settings, stride, padding, dilation,
                         groups)


def _linear_shape(x: Tensor, g_plus: Tensor, *settings) -> Tensor:
    return F.linear(x, g_plus)


def _conv_shape(x: Tensor, g_plus: Tensor, *others) -> Tensor:
    stride, padding, dilation, groups = others[-4:]
    return CONV_FUNCTIONS[g_plus.dim() - 3](x, g_plus, None, stride, padding, dilation, groups)


# Tracing (on fake tensors) needs only the output's shape: one linear or convolution gives it.
torch.library.custom_op("xbar::crossbar_linear", _linear, mutates_args=()).register_fake(_linear_shape)
torch.library.custom_op("xbar::crossbar_conv", _conv, mutates_args=()).register_fake(_conv_shape)

CROSSBAR_LINEAR = torch.ops.xbar.crossbar_linear.default
CROSSBAR_CONV = torch.ops.xbar.crossbar_conv.default


def _settings_args(settings: CrossbarSettings) -> tuple:
    """The settings as the custom ops' scalar arguments (field order)."""
    return tuple(settings.scalars().values())


def _crossbar_calls(graph_module: fx.GraphModule) -> list[fx.Node]:
    return [n for n in graph_module.graph.nodes
            if n.op == "call_module" and isinstance(graph_module.get_submodule(n.target), Crossbar)]


class CrossbarToCustomOpsPass(PassBase):
    """Replace Crossbar module calls by ``xbar::`` custom-op calls; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        sites = _crossbar_calls(graph_module)
        for site in sites:
            module = graph_module.get_submodule(site.target)
            if module.bias is None:
                module.bias = torch.zeros(module.g_plus.shape[0], dtype=module.g_plus.dtype)
            with graph.inserting_before(site):
                tensors = [graph.get_attr(f"{site.target}.{name}") for name in TENSORS]
            args = (site.args[0], *tensors, *_settings_args(module.settings))
            if module.geometry is None:
                target = CROSSBAR_LINEAR
            else:
                g = module.geometry
                target = CROSSBAR_CONV
                args += (list(g.stride), list(g.padding), list(g.dilation), int(g.groups))
            site.op, site.target, site.args = "call_function", target, args  # in place: keeps name and users
        return PassResult(graph_module, bool(sites))

    def ensures(self, graph_module: fx.GraphModule) -> None:
        left = [n.name for n in _crossbar_calls(graph_module)]
        if left:
            raise PostconditionError(f"{type(self).__name__}: Crossbar calls left after the rewrite: {left}")
