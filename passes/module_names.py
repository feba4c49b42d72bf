"""How a user may spell a module type: shared by the layer selection and the configuration's layer rules.

Plain strings, no torch: the configuration loads in the command line's torch-free paths.
"""

from __future__ import annotations


def names_module_type(name: str, module_type: str) -> bool:
    """Whether ``name`` spells ``module_type``: in full, by its class name (``Linear``),
    or, for PyTorch's own modules, as ``nn.Linear`` / ``torch.nn.Linear``."""
    short = module_type.rsplit(".", 1)[-1]
    if name in (module_type, short):
        return True
    return module_type.startswith("torch.nn.") and name in (f"nn.{short}", f"torch.nn.{short}")
