"""Config settings as people read them: ``forward.inp_res=254``, not ``254.0``.

Imports nothing heavy, so ``xbar presets`` can use it without loading torch.
"""

from __future__ import annotations

from typing import Any, Mapping


def value_text(value: Any) -> str:
    """A setting's value for display; a float that holds an integer prints as one."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_text(settings: Mapping[str, Any], separator: str = ", ") -> str:
    """``key=value`` pairs in order, joined by ``separator``."""
    return separator.join(f"{key}={value_text(value)}" for key, value in settings.items())
