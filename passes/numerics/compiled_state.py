"""What a compiled graph reads that eager code derives on the fly: the one interface for it.

Eagerly, a module can look at its tensors' values and versions and re-derive
what it needs on every call. A ``torch.compile`` graph cannot: it reads Python
attributes as constants and derived tensors as they are. A module whose
compiled graph needs such state subclasses :class:`CompiledState`, and the
compiled path (``xbar.compiler.pipeline.compiled``) calls
:func:`sync_compiled_state` before every compiled call, so loading a state
dict, editing buffers in place or assigning new settings needs no hook.
"""

from __future__ import annotations

from torch import nn


class CompiledState:
    """A module with state a compiled graph reads as it is (see the module docstring)."""

    def sync_compiled_state(self) -> None:
        """Bring that state up to date with the module's tensors and settings, outside any graph."""
        raise NotImplementedError


def compiled_state_modules(model: nn.Module) -> list[CompiledState]:
    """Every :class:`CompiledState` module of ``model``, in module order."""
    return [module for module in model.modules() if isinstance(module, CompiledState)]


def sync_compiled_state(modules: list[CompiledState]) -> None:
    """Sync each of ``modules`` (from :func:`compiled_state_modules`)."""
    for module in modules:
        module.sync_compiled_state()
