"""The compiled path: ``torch.compile`` a prepared or converted model, or run it eagerly with one warning.

Both graphs trace whole (``fullgraph=True``): no graph breaks, one graph per
training mode. The dimensions the model was prepared with as dynamic (the
record's ``dynamic_shapes``; the batch dimension of every input when there is
no record) are marked dynamic, so a smaller last batch or another sequence
length runs the same graph instead of compiling a second one.
Inductor builds its CPU kernels with a C++ compiler; where none is found
(:func:`inductor_unavailable`), :func:`compiled` returns the model itself and
warns once, so ``compile=True`` never stops a run that eager mode can do.
"""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor, fx, nn

from ...passes.capture import copy_graph_module
from ...passes.errors import CompileUnavailableWarning
from ...passes.numerics.compiled_state import compiled_state_modules, sync_compiled_state
from ...passes.numerics.crossbar import crossbar_modules
from ...passes.shapes import dynamic_dims, requested_shapes
from .record import RECORD_KEY, CompileRecord

BACKEND = "inductor"
"""torch.compile's backend for the compiled path (tests swap in ``"aot_eager"``, which needs no C++ compiler)."""


def inductor_unavailable() -> Optional[str]:
    """Why inductor cannot build CPU kernels here (no working C++ compiler), or None when it can."""
    from torch._inductor import config
    from torch._inductor.cpp_builder import get_cpp_compiler

    try:
        get_cpp_compiler()
    except Exception:  # torch raises InvalidCxxCompiler, or the probe of the compiler fails
        names = [c for c in config.cpp.cxx if c] if isinstance(config.cpp.cxx, (tuple, list)) else [config.cpp.cxx]
        return f"no working C++ compiler ({', '.join(map(str, names))}; set CXX to one)"
    return None


def compiled(model: nn.Module, *, fullgraph: bool = True) -> Callable:
    """``torch.compile(model)`` with a dynamic batch dimension, or ``model`` itself (one
    :class:`CompileUnavailableWarning`) when inductor cannot build here.

    The result shares ``model``'s parameters and buffers and follows its
    ``train()`` / ``eval()`` mode. ``fullgraph=False`` lets Python code that
    cannot be traced (calibration observers) run between compiled graphs.
    """
    reason = inductor_unavailable() if BACKEND == "inductor" else None
    if reason is not None:
        warnings.warn(f"compile=True: torch.compile cannot build kernels here ({reason}); running eagerly",
                      CompileUnavailableWarning, stacklevel=3)
        return model
    stateful = compiled_state_modules(model)
    compiled_model = torch.compile(model, fullgraph=fullgraph, backend=BACKEND)

    record = getattr(getattr(model, "module", model), "meta", {}).get(RECORD_KEY)  # a DDP wrapper's module's
    spec = record.dynamic_shapes if isinstance(record, CompileRecord) else None

    def run(*inputs):
        sync_compiled_state(stateful)  # e.g. an initialised range compiles without its initialisation
        for x, dims in dynamic_dims(inputs, spec if spec is not None else requested_shapes(None, inputs).spec):
            for dim in dims:
                torch._dynamo.maybe_mark_dynamic(x, dim)
        return compiled_model(*inputs)

    return run


def maybe_compiled(model: nn.Module, compile: bool, process_group: Optional[object] = None, *,
                   fullgraph: bool = True) -> Callable:
    """:func:`compiled` when ``compile`` is set, else ``model`` as it is (eager, the default).

    The compiled path runs in one process: with a ``process_group`` (several
    ranks) the model runs eagerly, with one :class:`CompileUnavailableWarning`.
    """
    if compile and process_group is not None:
        warnings.warn("compile=True runs in one process only; across torch.distributed ranks the model runs "
                      "eagerly", CompileUnavailableWarning, stacklevel=3)
        return model
    return compiled(model, fullgraph=fullgraph) if compile else model


class ArrayReader:
    """One compiled copy of a converted model that runs any programmed or drifted copy of it.

    ``program`` and ``drift`` return new GraphModules, each of which
    ``torch.compile`` would compile anew; their graph is the converted one and
    only the arrays' tensors differ (conductances, bias, gains). :meth:`__call__`
    copies those into this reader's copy in place and runs its compiled graph,
    so a whole evaluation compiles once. ``template`` must be a model whose
    arrays have the largest form of each gain (a per-column gain takes a global
    one, not the other way round): a drifted model of the evaluation.
    """

    def __init__(self, template: fx.GraphModule):
        self.model = copy_graph_module(template).eval()
        self.arrays = crossbar_modules(self.model)
        self.run = compiled(self.model)
        self.eager = self.run is self.model

    def reader(self, model: fx.GraphModule) -> Callable[[Tensor], Tensor]:
        """A callable that runs ``model`` (as :func:`xbar.compiler.metrics.accuracy` takes it)."""
        if self.eager:
            return model.eval()
        theirs = crossbar_modules(model)
        for name, array in self.arrays.items():
            array.load_array(theirs[name])
        return self.run
