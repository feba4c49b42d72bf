"""``xbar presets``: the named hardware presets, what each sets and where its numbers come from."""

from __future__ import annotations

import argparse

from rich.markup import escape
from rich.table import Table

from ...config.presets import DEFAULT_PRESET, PRESETS
from ...config.settings_text import settings_text
from ..console import say, stdout_console


def run(args: argparse.Namespace) -> int:
    table = Table(title="hardware presets (xbar compile --preset NAME)", title_justify="left", show_lines=True)
    table.add_column("name", no_wrap=True)
    table.add_column("settings", no_wrap=True)
    table.add_column("description and source", overflow="fold")
    for preset in PRESETS.values():
        settings = settings_text(preset.overrides, "\n") or "(HardwareConfig defaults)"
        table.add_row(escape(preset.name), escape(settings),
                      escape(f"{preset.description}\nsource: {preset.source}"))
    out = stdout_console()
    say(out, table)
    say(out, f"without --preset, xbar compile uses {DEFAULT_PRESET}; a --config file applies on top of the preset")
    return 0
