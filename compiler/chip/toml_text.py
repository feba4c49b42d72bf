"""A chip description as TOML text (the flat tables :meth:`~.description.Chip.to_dict` gives)."""

from __future__ import annotations

import json

from .description import FIELDS, Chip


def chip_toml(chip: Chip) -> str:
    """TOML that :func:`~.description.load_chip_file` reads back to ``chip``, each field after its meaning."""
    lines = [f"# xbar chip description: {chip.name}"]
    for name, value in chip.to_dict().items():
        lines += [f"# {FIELDS[name]}", f"{name} = {_value(value)}"]
    return "\n".join(lines) + "\n"


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)  # a JSON string is a TOML basic string
