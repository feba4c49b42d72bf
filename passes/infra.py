"""Running passes: the runner, and the errors a pass raises when its conditions fail.

A pass follows ``torch.fx.passes.infra``'s convention: a ``PassBase`` whose
``requires`` checks its preconditions, ``call`` edits the graph in place and
returns a ``PassResult``, and ``ensures`` checks its postconditions.
:func:`run_passes` runs them in a straight line and lints the graph after each.
"""

from __future__ import annotations

from typing import Sequence

from torch import fx
from torch.fx.passes.infra.pass_base import PassBase

from .errors import PassError, XbarError


def run_passes(graph_module: fx.GraphModule, passes: Sequence[PassBase]) -> fx.GraphModule:
    """Run ``passes`` in order; after each, lint the graph and recompile.

    xbar's own errors pass through as they are (a :class:`~xbar.passes.errors.UserError`
    stays the user's to fix); anything else becomes a :class:`PassError` naming the pass.
    """
    for graph_pass in passes:
        try:
            graph_module = graph_pass(graph_module).graph_module
            graph_module.graph.lint()
        except XbarError:
            raise
        except Exception as exc:
            raise PassError(f"{type(graph_pass).__name__} failed: {exc}") from exc
        graph_module.recompile()
    return graph_module
