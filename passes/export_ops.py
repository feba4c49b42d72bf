"""Turn each converted crossbar layer into one call of an ``xbar::`` custom op, for export.

``xbar::crossbar_linear`` and ``xbar::crossbar_conv`` are ``torch.library``
custom ops: ``torch.export`` keeps them as single nodes (an exporter can then
translate each into one node of its own), and their eager implementation is
:func:`passes.crossbar.crossbar_linear` / :func:`~passes.crossbar.crossbar_conv`,
so the numerics have one source. Their scalar arguments are the fields of
:class:`~passes.crossbar.CrossbarSettings`, in its field order.

Rules of :class:`CrossbarToCustomOpsPass`, for each ``call_module`` of a
:class:`~passes.crossbar.Crossbar` module:

* the call becomes a ``call_function`` of the custom op, keeping the node's
  name (``fc1_crossbar``) and its users;
* G+, G- and the bias are read by ``get_attr`` of the module's buffers
  (``fc1_crossbar.g_plus``, ...), so they stay separate tensors named after the
  layer; a layer without bias passes ``None``;
* the settings and the convolution geometry become scalar arguments;
* the modules stay (they own the buffers); a graph without Crossbar calls is
  left untouched.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, fx
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from .crossbar import Crossbar, CrossbarSettings, crossbar_conv, crossbar_linear
from .plan import PassError

NAMESPACE = "xbar"


@lru_cache(maxsize=None)
def _settings(*fields) -> CrossbarSettings:
    """One settings object (and its cached constants) per distinct argument tuple."""
    return CrossbarSettings(*fields)


def _linear(x: Tensor, g_plus: Tensor, g_minus: Tensor, bias: Tensor, layer: str,
                       input_range: float, scale_ratio: float, g_min: float, g_max: float,
                       dac_steps: float, adc_steps: float, out_bound: float) -> Tensor:
    """:func:`passes.crossbar.crossbar_linear` as one opaque op."""
    settings = _settings(layer, input_range, scale_ratio, g_min, g_max, dac_steps, adc_steps, out_bound)
    return crossbar_linear(x, g_plus, g_minus, bias, settings)


def _conv(x: Tensor, g_plus: Tensor, g_minus: Tensor, bias: Tensor, layer: str,
                     input_range: float, scale_ratio: float, g_min: float, g_max: float,
                     dac_steps: float, adc_steps: float, out_bound: float,
                     stride: list[int], padding: list[int], dilation: list[int], groups: int) -> Tensor:
    """:func:`passes.crossbar.crossbar_conv` as one opaque op."""
    settings = _settings(layer, input_range, scale_ratio, g_min, g_max, dac_steps, adc_steps, out_bound)
    return crossbar_conv(x, g_plus, g_minus, bias, settings, stride, padding, dilation, groups)


crossbar_linear_op = torch.library.custom_op(f"{NAMESPACE}::crossbar_linear", _linear, mutates_args=())
crossbar_conv_op = torch.library.custom_op(f"{NAMESPACE}::crossbar_conv", _conv, mutates_args=())
# The implementations only compute with torch ops, so they also run on fake tensors (shape propagation).
crossbar_linear_op.register_fake(_linear)
crossbar_conv_op.register_fake(_conv)
CROSSBAR_LINEAR = torch.ops.xbar.crossbar_linear.default
CROSSBAR_CONV = torch.ops.xbar.crossbar_conv.default


def _settings_args(settings: CrossbarSettings) -> tuple:
    s = settings
    return (s.layer, float(s.input_range), float(s.scale_ratio), float(s.g_min), float(s.g_max),
            float(s.dac_steps), float(s.adc_steps), float(s.out_bound))


class CrossbarToCustomOpsPass(PassBase):
    """Replace Crossbar module calls by ``xbar::`` custom-op calls; see the module docstring."""

    def call(self, graph_module: fx.GraphModule) -> PassResult:
        graph = graph_module.graph
        sites = [n for n in graph.nodes if n.op == "call_module"
                 and isinstance(graph_module.get_submodule(n.target), Crossbar)]
        for site in sites:
            module = graph_module.get_submodule(site.target)
            if module.bias is None:
                module.bias = torch.zeros(module.g_plus.shape[0], dtype=module.g_plus.dtype)
            with graph.inserting_before(site):
                tensors = [graph.get_attr(f"{site.target}.{attr}") for attr in ("g_plus", "g_minus", "bias")]
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
        left = [n.name for n in graph_module.graph.nodes if n.op == "call_module"
                and isinstance(graph_module.get_submodule(n.target), Crossbar)]
        if left:
            raise PassError(f"{type(self).__name__}: Crossbar calls left after the rewrite: {left}")
