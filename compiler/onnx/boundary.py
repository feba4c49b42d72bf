"""A model in another floating dtype (float64, bfloat16, float16) is exported as a float32 graph cast at its boundary.

The ``ai.xbar`` ops are float32 (G+ / G- are float32 initializers in microsiemens),
and ONNX Runtime's CPU kernels for bfloat16 and float16 convolutions and matmuls
are missing or partial, so the file computes in float32 throughout: each floating
input is cast to float32 as it enters and each floating output back to the model's
dtype as it leaves. The file keeps the model's input and output types; its values
are the float32 simulation's (the model's own differs from it by the rounding of
its dtype, and with DAC and ADC by one step where that rounding crosses a step).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import fx


def model_dtype(graph_module: fx.GraphModule) -> torch.dtype:
    """The dtype of the model's first floating tensor (float32 for a model without one)."""
    tensors = itertools.chain(graph_module.parameters(), graph_module.buffers())
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def cast_floating(value: Any, dtype: torch.dtype) -> Any:
    """``value`` in ``dtype`` if it is a floating tensor, else unchanged."""
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def cast_at_boundary(graph_module: fx.GraphModule) -> None:
    """Make the export's copy compute in float32 between casts at its inputs and outputs, in place
    (a float32 model is left as it is). Parameters and buffers become new float32 tensors; tensors
    the copy shares with the model are replaced, never changed."""
    dtype = model_dtype(graph_module)
    if dtype == torch.float32:
        return
    graph_module.float()
    graph = graph_module.graph
    for placeholder in [n for n in graph.nodes if n.op == "placeholder"]:
        with graph.inserting_after(placeholder):
            cast = graph.call_function(cast_floating, (placeholder, torch.float32))
        placeholder.replace_all_uses_with(cast, delete_user_cb=lambda user: user is not cast)
    output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_before(output):
        output.args = fx.node.map_arg(output.args, lambda value: graph.call_function(cast_floating, (value, dtype)))
    graph.lint()
    graph_module.recompile()
